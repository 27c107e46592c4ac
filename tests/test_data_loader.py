"""Real files made with ffmpeg at test time: exact frames in every container, decord -> PyAV
fallback, fps_id from the container, aspect handling, robustness and failure stop, loader resume."""
import logging

import numpy as np
import pytest
import torch

from tdd_video.data import readers
from tdd_video.data.dataset import DataFailureError, build_video_dataset, build_video_loader
from tdd_video.data.readers import ReaderPool, open_reader
from tdd_video.data.sampler import SampleKey
from tdd_video.data.testmedia import frame_index_of, make_broken_files, make_video
from tdd_video.data.video_io import read_video_frames

CONTAINERS = [".mp4", ".avi", ".webm", ".gif"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    files = {s: make_video(root / "codecs" / f"clip{s}", num_frames=50, fps=10 if s == ".gif" else 24)
             for s in CONTAINERS}
    vids = root / "vids"
    make_video(vids / "land30.mp4", num_frames=45, height=48, width=96, fps=30)
    make_video(vids / "port24.mp4", num_frames=45, height=96, width=48, fps=24)
    make_video(vids / "square12.webm", num_frames=40, height=64, width=64, fps=12)
    make_video(vids / "land8.mp4", num_frames=40, height=48, width=80, fps=8)
    return {"files": files, "vids": vids, "root": root}


@pytest.mark.parametrize("suffix", CONTAINERS)
@pytest.mark.parametrize("backend", ["auto", "pyav", "decord"])
def test_exact_frame_indices_every_container(media, suffix, backend):
    path = media["files"][suffix]
    if backend == "decord" and suffix == ".gif":
        with pytest.raises(readers.VideoReadError, match="decord"):
            open_reader(path, "decord")
        return
    reader = open_reader(path, backend)
    assert reader.num_frames == 50
    assert reader.fps == pytest.approx(10 if suffix == ".gif" else 24)
    idx = [0, 7, 8, 21, 33, 49]
    frames = reader.get_frames(idx).astype(int)
    reference = read_video_frames(path).astype(int)  # sequential decode of every frame
    assert len(reference) == 50
    nearest = [int(np.abs(reference - f).mean(axis=(1, 2, 3)).argmin()) for f in frames]
    assert nearest == idx
    assert np.abs(frames - reference[idx]).mean() < 1.0
    assert (reader.backend == "pyav") == (backend == "pyav" or suffix == ".gif")


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_exact_indices_with_seeks_and_bframes(tmp_path, backend):
    path = make_video(tmp_path / "gop.mp4", num_frames=54, fps=25, ffmpeg_params=["-g", "8", "-bf", "2"])
    reference = read_video_frames(path).astype(int)
    reader = open_reader(path, backend)
    for idx in ([17, 18, 26, 34], [45, 53], [3, 9, 50], [8], [16, 24, 32, 40, 48]):
        frames = reader.get_frames(idx).astype(int)
        nearest = [int(np.abs(reference - f).mean(axis=(1, 2, 3)).argmin()) for f in frames]
        assert nearest == idx


def test_decord_failure_and_absence_fall_back_to_pyav(media, monkeypatch):
    path = media["files"][".mp4"]

    def broken(self, indices):
        raise readers.VideoReadError(f"{self.path}: decord failed to decode frames (simulated)")

    monkeypatch.setattr(readers.DecordReader, "get_frames", broken)
    pool = ReaderPool("auto")
    frames = pool.read(path, [3, 4, 40])
    assert [frame_index_of(f) for f in frames] == [3, 4, 40] and pool.get(path).backend == "pyav"
    with pytest.raises(readers.VideoReadError, match="simulated"):
        ReaderPool("decord").read(path, [3])
    monkeypatch.setattr(readers, "_decord", None)
    assert open_reader(path, "auto").backend == "pyav"


def test_reader_pool_reuses_and_evicts(media):
    pool = ReaderPool("auto", size=2)
    a, b, c = (media["files"][s] for s in (".mp4", ".avi", ".webm"))
    for p in (a, a, b, a, b):
        pool.read(p, [1])
    assert pool.opened == 2
    pool.read(c, [1])
    pool.read(b, [1])
    pool.read(a, [1])  # a was least recently used -> evicted -> reopened
    assert pool.opened == 4


def _cfg(media, **kw):
    base = dict(path=str(media["vids"]), num_frames=6, target_fps=8, height=32, width=48, batch_size=2,
                num_workers=0, failure_check_after=1000)
    base.update(kw)
    return base


def test_items_fps_id_from_container_and_exact_frames(media):
    ds = build_video_dataset(_cfg(media, train=False, eval_start="zero"))
    by_name = {r.path.name: i for i, r in enumerate(ds.records)}
    expected = {"land30.mp4": (4, 7), "port24.mp4": (3, 7), "square12.webm": (2, 5), "land8.mp4": (1, 7)}
    for name, (stride, fps_id) in expected.items():
        item = ds[SampleKey(by_name[name], 0)]
        assert item["fps_id"] == fps_id and item["frame_indices"].tolist() == [stride * k for k in range(6)]
        assert item["pixel_values"].shape == (6, 3, 32, 48) and item["motion_bucket_id"] == 127
        assert item["pixel_values"].min() >= -1 and item["pixel_values"].max() <= 1


def test_portrait_and_landscape_buckets(media):
    cfg = _cfg(media, buckets=[[32, 64], [64, 32], [48, 48]], batch_size=1, train=True, flip=True)
    ds = build_video_dataset(cfg)
    sizes = {r.path.name: ds.sizes[b] for r, b in zip(ds.records, ds.bucket_of)}
    assert sizes == {"land30.mp4": (32, 64), "port24.mp4": (64, 32), "square12.webm": (48, 48),
                     "land8.mp4": (32, 64)}
    loader = build_video_loader(cfg, seed=0)
    for batch in loader:
        (h, w) = sizes[batch["path"][0].rsplit("/", 1)[-1]]
        assert batch["pixel_values"].shape[-2:] == (h, w)
        # the bottom-right quarter is flat grey: a padded (black-bar) frame would show -1 there
        assert batch["pixel_values"].min() > -0.95


def test_corrupt_files_skipped_counted_logged_once(media, tmp_path, caplog):
    folder = tmp_path / "mixed"
    for i in range(4):
        make_video(folder / f"good{i}.mp4", num_frames=30, fps=24)
    make_broken_files(folder, folder / "good0.mp4")
    make_video(folder / "short.mp4", num_frames=3, fps=24)
    cfg = dict(path=str(folder), num_frames=4, target_fps=8, height=32, width=32, batch_size=2,
               num_workers=0, max_failure_fraction=0.95, short_policy="skip")
    ds = build_video_dataset(cfg, seed=1)
    with caplog.at_level(logging.WARNING, logger="tdd_video.data"):
        for epoch in range(3):
            for i in range(len(ds)):
                item = ds[SampleKey(i, epoch)]
                assert item["path"].rsplit("/", 1)[-1].startswith("good")
    kinds = ds.stats.failures
    assert kinds["unreadable"] >= 4 * 3 and kinds["too_short"] >= 3
    assert set(ds.stats.examples) >= {str(folder / n) for n in
                                      ("zero.mp4", "truncated.mp4", "garbage.mp4", "audio_only.mp4")}
    for name in ("zero.mp4", "truncated.mp4", "garbage.mp4", "audio_only.mp4", "short.mp4"):
        assert caplog.text.count(str(folder / name) + ":") == 1   # logged once per path


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_sums_skips_over_worker_processes(media, tmp_path, workers):
    """Each worker process counts its own skips; the loader's data_stats() sums them (the trainer logs it)."""
    folder = tmp_path / "mixed"
    for i in range(3):
        make_video(folder / f"good{i}.mp4", num_frames=30, fps=24)
    make_broken_files(folder, folder / "good0.mp4")
    cfg = dict(path=str(folder), num_frames=4, target_fps=8, height=32, width=32, batch_size=1,
               num_workers=workers, max_failure_fraction=0.95)
    loader = build_video_loader(cfg, seed=0)
    batches = [b for b in loader]                      # one epoch over good + broken files
    assert all("_data_stats" not in b for b in batches)
    stats = loader.data_stats()
    n_broken = len([p for p in folder.iterdir() if not p.name.startswith("good")])
    assert stats["attempts"] == len(batches) + stats["skipped"]
    assert stats["skipped"] >= n_broken and stats["skipped_unreadable"] == stats["skipped"]


def test_failure_fraction_stops_with_clear_error(tmp_path):
    folder = tmp_path / "mostly_bad"
    make_video(folder / "good.mp4", num_frames=30)
    for i in range(4):
        (folder / f"bad{i}.mp4").write_bytes(b"not a video" * 10)
    cfg = dict(path=str(folder), num_frames=4, target_fps=8, height=32, width=32, batch_size=1,
               num_workers=0, max_failure_fraction=0.3, failure_check_after=4)
    loader = build_video_loader(cfg, seed=0)
    with pytest.raises(DataFailureError, match=r"max_failure_fraction = 30%.*unreadable"):
        for _ in loader:
            pass


def test_loader_two_workers_resume_is_exact(media):
    cfg = _cfg(media, batch_size=1, num_workers=2, flip=True)
    ref_loader = build_video_loader(cfg, seed=5)
    ref = [b for _ in range(2) for b in ref_loader]
    part = build_video_loader(cfg, seed=5)
    it = iter(part)
    got = [next(it), next(it), next(it)]
    state = part.state_dict()
    resumed = build_video_loader(cfg, seed=5)
    resumed.load_state_dict(state)
    got += [b for _ in range(2) for b in resumed][: len(ref) - 3]
    assert len(got) == len(ref) == 8
    for a, b in zip(got, ref):
        assert a["path"] == b["path"] and torch.equal(a["pixel_values"], b["pixel_values"])
        assert torch.equal(a["frame_indices"], b["frame_indices"])
    assert ref[0]["path"] != ref[4]["path"] or not torch.equal(ref[0]["frame_indices"], ref[4]["frame_indices"])


def test_two_ranks_disjoint_on_real_files(media):
    seen = []
    for rank in range(2):
        loader = build_video_loader(_cfg(media, batch_size=1, num_workers=2), rank=rank, world_size=2, seed=2)
        seen.append([p for b in loader for p in b["path"]])
    assert len(seen[0]) == len(seen[1]) == 2 and not set(seen[0]) & set(seen[1])


def test_manifest_fps_motion_bucket_and_window_on_real_files(media, tmp_path):
    rel = (media["vids"] / "land30.mp4").relative_to(media["root"])
    manifest = media["root"] / "m.jsonl"
    manifest.write_text(
        f'{{"path": "{rel}", "caption": "c1", "fps": 60, "motion_bucket_id": 42}}\n'
        f'{{"path": "{rel}", "start": 0.5, "end": 1.2}}\n')
    ds = build_video_dataset(_cfg(media, path=str(manifest), train=False, eval_start="zero", num_frames=4))
    a, b = ds[SampleKey(0, 0)], ds[SampleKey(1, 0)]
    # row 1: manifest says 60 fps -> stride round(60/8)=8 (45 frames hold 4 frames at stride 8) -> 7.5 fps
    assert a["frame_indices"].tolist() == [0, 8, 16, 24] and a["fps_id"] == 7
    assert (a["motion_bucket_id"], a["caption"]) == (42, "c1")
    # row 2: container fps 30, window [15, 36) -> stride 4, first frame 15
    assert b["frame_indices"].tolist() == [15, 19, 23, 27] and b["motion_bucket_id"] == 127
