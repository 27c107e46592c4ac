"""Latent cache with the real tiny SVD family: round trip == on-the-fly encoding, resume, dtype,
the trainer's cache switch; and the --check-data CLI summary."""
import json

import numpy as np
import pytest
import torch

from tdd_video.cli.cache import main_video as cache_main
from tdd_video.cli.check_data import main as check_main
from tdd_video.data.cache import build_cache, video_encoder
from tdd_video.data.cached import LatentCacheDataset
from tdd_video.data.config import VideoDataConfig
from tdd_video.data.dataset import build_video_dataset, build_video_loader
from tdd_video.data.testmedia import make_broken_files, make_video, random_frames
from tdd_video.families.svd import SVDFamily


@pytest.fixture(scope="module")
def family():
    return SVDFamily.tiny(seed=0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("cachevids")
    make_video(root / "a.mp4", frames=random_frames(30, 48, 80, seed=1), fps=24)
    make_video(root / "b.mp4", frames=random_frames(30, 80, 48, seed=2), fps=30)
    make_video(root / "c.webm", frames=random_frames(24, 48, 48, seed=3), fps=12)
    (root / "broken.mp4").write_bytes(b"\0" * 100)
    (root / "a.txt").write_text("clip a")
    return root


def _cfg(videos, **kw):
    d = dict(path=str(videos), num_frames=4, target_fps=8, buckets=[[32, 48], [48, 32]], num_workers=0,
             max_failure_fraction=0.5)
    d.update(kw)
    return VideoDataConfig.from_dict(d).validate()


def test_round_trip_equals_on_the_fly(family, videos, tmp_path):
    cfg = _cfg(videos)
    index = json.loads(build_cache(video_encoder(family), cfg, tmp_path / "c32", dtype="fp32", shard_size=2, seed=3,
                                   progress=False).read_text())
    assert index["num_samples"] == 3 and index["num_failed"] == 1 and len(index["shards"]) == 2
    cached = LatentCacheDataset(tmp_path / "c32")
    raw = build_video_dataset(cfg.__class__(**{**cfg.to_dict(), "train": False}), seed=3)
    for j, s in enumerate(cached.samples):
        i = s["record"]
        item = raw.load(i, np.random.default_rng([3, 0, i, 0]))
        lat = family.encode_latents({"pixel_values": item["pixel_values"][None]},
                                    generator=torch.Generator().manual_seed(3 * 1_000_003 + i))[0]
        emb = family.encode_image_embedding(item["pixel_values"][None, 0])[0]
        c = cached[j]
        assert torch.equal(c["latents"], lat) and torch.equal(c["image_emb"], emb)
        assert torch.equal(c["first_frame"], item["pixel_values"][0])   # lossless uint8 pixels
        assert (c["fps_id"], c["motion_bucket_id"], c["path"]) == (item["fps_id"], 127, item["path"])
        assert c["latents"].shape[0] == 4


def test_several_augmented_clips_per_video(family, videos, tmp_path):
    """clips_per_video = 3: the centre clip (identical to the 1-clip cache) + 2 random train-mode clips
    (other start / crop / flip) per readable video; the broken video is skipped once."""
    cfg = _cfg(videos, flip=True)
    one = LatentCacheDataset(build_cache(video_encoder(family), cfg, tmp_path / "one", dtype="fp32", seed=3,
                                         progress=False).parent)
    index = json.loads(build_cache(video_encoder(family), cfg, tmp_path / "three", dtype="fp32", shard_size=2, seed=3,
                                   progress=False, clips_per_video=3).read_text())
    assert index["num_samples"] == 9 and index["num_failed"] == 1 and index["clips_per_video"] == 3
    three = LatentCacheDataset(tmp_path / "three")
    for j, s in enumerate(one.samples):
        k = next(n for n, t in enumerate(three.samples) if t["record"] == s["record"] and t["clip"] == 0)
        assert torch.equal(one[j]["latents"], three[k]["latents"])
    by_video = {}
    for n, t in enumerate(three.samples):
        by_video.setdefault(t["record"], []).append(three[n]["first_frame"])
    for frames in by_video.values():     # the augmented clips are not copies of the centre clip
        assert len(frames) == 3 and not torch.equal(frames[0], frames[1]) and not torch.equal(frames[1], frames[2])
    with pytest.raises(ValueError, match="clips-per-video"):
        build_cache(video_encoder(family), cfg, tmp_path / "bad", clips_per_video=0, progress=False)


def test_cache_loader_batches_drive_the_family_like_raw(family, videos, tmp_path):
    cfg = _cfg(videos, buckets=None, height=32, width=32, train=False, batch_size=3)
    build_cache(video_encoder(family), cfg, tmp_path / "c", dtype="fp32", shard_size=8, progress=False)
    raw = next(iter(build_video_loader(cfg, seed=0)))
    cache = next(iter(build_video_loader(VideoDataConfig(**{**cfg.to_dict(), "use_cache": True,
                                                            "cache_dir": str(tmp_path / "c")}), seed=0)))
    assert set(cache) >= {"latents", "first_frame", "image_emb", "fps_id", "motion_bucket_id"}
    assert cache["path"] == raw["path"]
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    c_raw = family.encode_conditioning(raw, generator=g1, train=True)
    c_cache = family.encode_conditioning(cache, generator=g2, train=True)   # fresh σ_aug per sample
    for k, v in c_raw.tensors().items():
        assert torch.allclose(v, c_cache.tensors()[k], atol=1e-5), k


def test_resume_skips_finished_shards_and_fp16(family, videos, tmp_path):
    cfg = _cfg(videos)
    out = tmp_path / "c16"
    build_cache(video_encoder(family), cfg, out, dtype="fp16", shard_size=1, progress=False)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.safetensors")}
    (out / "shard_00001.json").unlink()       # as if interrupted while writing shard 1
    (out / "index.json").unlink()
    build_cache(video_encoder(family), cfg, out, dtype="fp16", shard_size=1, progress=False)
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("shard_*.safetensors")}
    changed = {n for n in first if first[n] != again[n]}
    assert changed == {"shard_00001.safetensors"}
    ds = LatentCacheDataset(out)
    from safetensors import safe_open
    with safe_open(str(out / "shard_00000.safetensors"), "pt") as f:
        assert f.get_tensor("0.latents").dtype == torch.float16
        assert f.get_tensor("0.first_frame").dtype == torch.uint8
    assert ds[0]["latents"].dtype == torch.float32
    with pytest.raises(ValueError, match="other settings"):
        build_cache(video_encoder(family), cfg, out, dtype="bf16", shard_size=1, progress=False)


def test_cache_cli_help_and_run(videos, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cache_main(["--help"])
    assert "--shard-size" in capsys.readouterr().out
    rc = cache_main(["--model", "tiny", "--data", str(videos), "--out", str(tmp_path / "cli"), "--num-frames", "4",
                     "--height", "32", "--width", "32", "--dtype", "bf16"])
    assert rc == 0 and "wrote 3 clips" in capsys.readouterr().out


def test_check_data_summary(tmp_path, capsys):
    folder = tmp_path / "chk"
    make_video(folder / "ok24.mp4", num_frames=40, fps=24)
    make_video(folder / "ok30.mp4", num_frames=40, fps=30)
    make_video(folder / "short.mp4", num_frames=5, fps=24)
    make_broken_files(folder, folder / "ok24.mp4")
    (tmp_path / "m.csv").write_text("path\nchk/ok24.mp4\nchk/ok30.mp4\nchk/short.mp4\nchk/zero.mp4\n"
                                    "chk/audio_only.mp4\nchk/gone.mp4\n")
    rc = check_main(["--data", str(tmp_path / "m.csv"), "--num-frames", "8", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1 and report["total"] == 6 and report["usable"] == 2
    assert len(report["missing"]) == 1 and "gone.mp4 (line 7)" in report["missing"][0]
    reasons = dict(report["unreadable"])
    assert "zero-byte" in reasons[str(folder / "zero.mp4")]
    assert "no video stream" in reasons[str(folder / "audio_only.mp4")]
    assert [r[0] for r in report["too_short"]] == [str(folder / "short.mp4")]
    # 24/3 = 8 fps, 30/4 = 7.5 -> 8 fps
    assert report["fps_histogram"] == {"24.0": 2, "30.0": 1} and report["fps_id_histogram"] == {"7": 2}
    rc = check_main(["--data", str(folder), "--num-frames", "8"])
    text = capsys.readouterr().out
    assert "unreadable: 4" in text and "source fps histogram" in text


def test_teacher_sample_cache(videos, tmp_path, capsys):
    """--teacher-samples N: the cached latents are the teacher's N-step Euler + CFG samples conditioned on each
    clip's first frame / fps / motion (equal to driving the sampler directly), recorded in cache_meta.json."""
    from tdd_video.families import load_family
    from tdd_video.sampling.teacher_data import teacher_sample_encoder
    common = ["--model", "tiny", "--data", str(videos), "--num-frames", "4", "--height", "32", "--width", "32",
              "--dtype", "fp32"]
    assert cache_main([*common, "--out", str(tmp_path / "vae")]) == 0
    for name, batch in (("teach", "3"), ("teach1", "1")):
        args = ["--out", str(tmp_path / name), "--teacher-samples", "3", "--encode-batch", batch]
        assert cache_main([*common, *args]) == 0
    one = LatentCacheDataset(tmp_path / "teach1")
    meta = json.loads((tmp_path / "teach" / "cache_meta.json").read_text())
    assert meta["latent_source"] == "teacher_euler3_cfg1-3"
    vae, teach = LatentCacheDataset(tmp_path / "vae"), LatentCacheDataset(tmp_path / "teach")
    a, b = vae[0], teach[0]
    assert a["latents"].shape == b["latents"].shape and not torch.allclose(a["latents"], b["latents"])
    assert torch.equal(a["first_frame"], b["first_frame"]) and a["fps_id"] == b["fps_id"]
    fam = load_family("svd", "tiny")
    encode = teacher_sample_encoder(fam, 3, (1.0, 3.0))
    gen = torch.Generator().manual_seed(0 * 1_000_003 + teach.samples[0]["record"])
    pix = (a["first_frame"][None, None].float().expand(1, 4, 3, 32, 32))      # only the first frame is used
    lat, _ = encode(pix, [gen], [{"fps_id": a["fps_id"], "motion_bucket_id": a["motion_bucket_id"]}])
    assert torch.allclose(lat[0], b["latents"], atol=1e-5)
    for k in range(len(teach)):                          # the batching does not change the samples
        assert torch.allclose(teach[k]["latents"], one[k]["latents"], atol=1e-5)
