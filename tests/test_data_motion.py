"""Motion buckets from the frames (docs/math.md §13): the flow estimate on clips with a known motion made
here, its calibration to 0..255, and the option end to end — loader batches, latent cache, tdd-check-data."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from tdd_video.cli.cache import main_video as cache_main
from tdd_video.cli.check_data import main as check_main
from tdd_video.data import dataset as dataset_module
from tdd_video.data.cache import build_cache
from tdd_video.data.cached import LatentCacheDataset
from tdd_video.data.config import VideoDataConfig
from tdd_video.data.dataset import build_video_dataset, build_video_loader
from tdd_video.data.motion import (
    LEVELS,
    MotionCalibration,
    default_calibration_path,
    estimate_motion,
    pair_motion,
)
from tdd_video.data.synthetic import SyntheticConfig, write_dataset
from tdd_video.data.testmedia import make_video
from tdd_video.errors import ConfigError


def texture(seed: int = 0, size=(800, 1280)) -> np.ndarray:
    """Smooth random colour texture, uint8 [H, W, 3] (bicubic upsampling of 16x coarser noise)."""
    base = np.random.default_rng(seed).integers(0, 256, (size[0] // 16, size[1] // 16, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((size[1], size[0]), Image.BICUBIC))


def pan(speed: float, num_frames: int = 14, height: int = 320, width: int = 576, seed: int = 0) -> np.ndarray:
    """A camera pan over one texture: per frame the view moves by `speed` frame widths right and `speed`/2
    down, whatever the frame size (the content is the same at every size). uint8 [F, H, W, 3]."""
    tex = Image.fromarray(texture(seed))
    box_w = 576.0
    box_h = box_w * height / width
    out = []
    for f in range(num_frames):
        x0, y0 = 40 + speed * box_w * f, 40 + 0.5 * speed * box_w * f
        out.append(np.asarray(tex.resize((width, height), Image.BILINEAR, box=(x0, y0, x0 + box_w, y0 + box_h))))
    return np.stack(out)


def true_motion(speed: float, height: int, width: int, fps: float) -> float:
    """Displacement of `pan` in frame diagonals per second."""
    return speed * width * math.hypot(1.0, 0.5) / math.hypot(height, width) * fps


# ------------------------------------------------------------------------------------ estimator
def test_estimate_is_zero_when_still_and_monotone_in_speed():
    assert estimate_motion(pan(0.0), 7) < 1e-6
    speeds = [0.001, 0.003, 0.006, 0.012, 0.025, 0.05]
    est = [estimate_motion(pan(v), 7) for v in speeds]
    assert all(b > a for a, b in zip(est, est[1:])), est
    for v, e in zip(speeds, est):     # close to the true displacement (LK: ~+-30 %)
        assert 0.7 < e / true_motion(v, 320, 576, 7) < 1.4, (v, e)


def test_estimate_does_not_depend_on_frame_size():
    for v in (0.004, 0.02):
        ref = estimate_motion(pan(v, 8, 320, 576), 7)
        for h, w in ((32, 56), (64, 112), (576, 1024)):
            assert estimate_motion(pan(v, 8, h, w), 7) == pytest.approx(ref, rel=0.1), (v, h, w)
    square = estimate_motion(pan(0.01, 8, 32, 32), 7)                 # 8 frames 32x32, the toy size
    assert square == pytest.approx(true_motion(0.01, 32, 32, 7), rel=0.4)


def test_estimate_is_per_second_deterministic_and_robust_to_a_cut():
    clip = pan(0.01, 10)
    a = estimate_motion(clip, 7)
    assert estimate_motion(clip, 7) == a                                     # deterministic, bit for bit
    assert estimate_motion(clip, 14) == pytest.approx(2 * a)                 # per second of video
    floats = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 127.5 - 1  # the [-1, 1] pixel layout
    assert estimate_motion(floats, 7) == pytest.approx(a, rel=0.02)
    cut = clip.copy()
    cut[5:] = pan(0.01, 10, seed=1)[5:]                                      # a scene cut between frames 4 and 5
    assert pair_motion(cut).max() > 3 * pair_motion(clip).max()
    assert estimate_motion(cut, 7) == pytest.approx(a, rel=0.1)              # median over the frame pairs
    assert estimate_motion(clip[:1], 7) == 0.0
    with pytest.raises(ValueError, match="fps"):
        estimate_motion(clip, 0)


# ---------------------------------------------------------------------------------- calibration
def test_dataset_calibration_is_the_rank_rule():
    values = np.random.default_rng(0).lognormal(-2, 1, 21)
    cal = MotionCalibration.from_values(values)
    order = np.argsort(values)
    for rank, i in enumerate(order):                         # n = 21: exactly round(255 * rank / (n - 1))
        assert cal.bucket(values[i]) == math.floor(255 * rank / 20 + 0.5)
    many = np.random.default_rng(1).gamma(2.0, 0.1, 500)
    cal = MotionCalibration.from_values(many)
    assert cal.levels == LEVELS and cal.num_clips == 500
    for q in LEVELS:                                          # the dataset's percentiles -> 255 * q / 100
        assert cal.bucket(np.percentile(many, q)) == math.floor(255 * q / 100 + 0.5)
    buckets = [cal.bucket(x) for x in np.sort(many)]
    assert buckets == sorted(buckets) and buckets[0] == 0 and buckets[-1] == 255
    assert cal.bucket(-1.0) == 0 and cal.bucket(1e6) == 255
    assert abs(np.median(buckets) - 127.5) <= 1
    hist = np.histogram(buckets, bins=4, range=(0, 256))[0]   # spread evenly over 0..255
    assert hist.min() > 100
    assert MotionCalibration.from_values([0.2] * 5).bucket(0.2) == 128      # ties: the average rank
    with pytest.raises(ValueError, match="zero clips"):
        MotionCalibration.from_values([None, None])


def test_fixed_calibrations_percentiles_and_file(tmp_path):
    cal = MotionCalibration.from_percentiles(0.1, 0.3, 0.9)
    assert [cal.bucket(x) for x in (0.1, 0.3, 0.9)] == [13, 128, 242]    # 12.75, 127.5, 242.25
    assert cal.bucket(0.2) == 70                                        # 12.75 + 0.1 * 114.75 / 0.2
    assert cal.bucket(0.0) == 0 and cal.bucket(0.05) == 0 and cal.bucket(5.0) == 255
    assert cal.bucket(0.95) == 252                                      # 242.25 + 0.05 * 114.75 / 0.6
    path = cal.save(tmp_path / "cal.json")
    assert MotionCalibration.load(path) == cal
    d = json.loads(path.read_text())
    d["estimator"] = "something-else"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="estimator"):
        MotionCalibration.load(path)


@pytest.mark.parametrize("override, key", [
    ({"motion_bucket": "flow"}, "data.motion_bucket"),
    ({"motion_percentiles": [0.1, 0.2, 0.3]}, "data.motion_percentiles"),             # needs estimate
    ({"motion_bucket": "estimate", "motion_percentiles": [0.3, 0.2, 0.4]}, "data.motion_percentiles"),
    ({"motion_bucket": "estimate", "motion_percentiles": [0.1, 0.2]}, "data.motion_percentiles"),
    ({"motion_bucket": "estimate", "motion_percentiles": [0.1, 0.2, 0.3], "motion_calibration": "c.json"},
     "data.motion_percentiles"),
    ({"motion_bucket": "estimate", "motion_calibration_clips": -1}, "data.motion_calibration_clips"),
])
def test_config_rejects_bad_motion_settings(override, key):
    with pytest.raises(ConfigError) as e:
        VideoDataConfig.from_dict({"path": "x", **override}).validate()
    assert e.value.key == key
    cfg = VideoDataConfig.from_dict({"path": "x", "motion_bucket": "estimate", "motion_calibration": "nope.json"})
    with pytest.raises(ConfigError, match="motion_calibration"):
        cfg.validate().check_paths()


# ------------------------------------------------------------------------------- data pipeline
SPEEDS = (0, 1, 2, 3, 4, 6)     # px per frame (right, and half of it down) in 48x80 source videos


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    """Six mp4 files panning at known speeds, and a manifest giving all but one a motion_bucket_id of 7."""
    root = tmp_path_factory.mktemp("motion")
    tex = texture(2, (400, 640))
    rows = ["path,motion_bucket_id"]
    for k in SPEEDS:
        frames = np.stack([tex[20 + k * f // 2:20 + k * f // 2 + 48, 10 + k * f:10 + k * f + 80] for f in range(24)])
        make_video(root / "clips" / f"speed{k}.mp4", frames=frames, fps=12)
        rows.append(f"clips/speed{k}.mp4,{'' if k == 3 else 7}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def _cfg(root, **kw):
    d = dict(path=str(root / "train.csv"), num_frames=6, target_fps=12, height=32, width=48, batch_size=len(SPEEDS),
             num_workers=0, train=False, drop_last=False)
    d.update(kw)
    return VideoDataConfig.from_dict(d).validate()


def _by_speed(batch) -> dict:
    return {int(p.rsplit("speed", 1)[1][:-4]): n for n, p in enumerate(batch["path"])}


def test_loader_manifest_mode_keeps_manifest_value_or_default(moving):
    batch = next(iter(build_video_loader(_cfg(moving), seed=0)))
    at = _by_speed(batch)
    assert [int(batch["motion_bucket_id"][at[k]]) for k in SPEEDS] == [7, 7, 7, 127, 7, 7]
    assert "motion" not in batch
    assert not default_calibration_path(moving / "train.csv").exists()


def test_loader_estimate_mode_yields_calibrated_buckets(moving, monkeypatch):
    cfg = _cfg(moving, motion_bucket="estimate")
    batch = next(iter(build_video_loader(cfg, seed=0)))
    at = _by_speed(batch)
    raw = [float(batch["motion"][at[k]]) for k in SPEEDS]
    buckets = [int(batch["motion_bucket_id"][at[k]]) for k in SPEEDS]
    assert raw[0] < 1e-3 and all(b > a for a, b in zip(raw, raw[1:])), raw
    assert buckets == [0, 51, 102, 153, 204, 255]           # 6 clips, rank rule: round(255 * rank / 5)
    stored = default_calibration_path(moving / "train.csv")
    assert stored.name == "train.motion_calibration.json" and stored.is_file()
    cal = MotionCalibration.load(stored)
    assert cal.num_clips == len(SPEEDS) and [cal.bucket(x) for x in raw] == buckets
    # computed once: a second loader reuses the stored calibration
    monkeypatch.setattr(dataset_module, "compute_calibration", lambda *a, **k: pytest.fail("recomputed"))
    again = next(iter(build_video_loader(cfg, seed=0)))
    assert torch.equal(again["motion_bucket_id"], batch["motion_bucket_id"])
    # inside loader worker processes, training sampling (random start / crop): same calibrated rule
    train = next(iter(build_video_loader(_cfg(moving, motion_bucket="estimate", train=True, num_workers=2,
                                              batch_size=2), seed=1)))
    assert [int(b) for b in train["motion_bucket_id"]] == [cal.bucket(float(x)) for x in train["motion"]]
    # a fixed calibration replaces the dataset's own
    fixed = next(iter(build_video_loader(_cfg(moving, motion_bucket="estimate",
                                              motion_percentiles=[0.1, 0.3, 0.9]), seed=0)))
    ref = MotionCalibration.from_percentiles(0.1, 0.3, 0.9)
    assert [int(b) for b in fixed["motion_bucket_id"]] == [ref.bucket(float(x)) for x in fixed["motion"]]
    path = ref.save(moving / "fixed.json")
    from_file = next(iter(build_video_loader(_cfg(moving, motion_bucket="estimate", motion_calibration=str(path)))))
    assert torch.equal(from_file["motion_bucket_id"], fixed["motion_bucket_id"])


def test_synthetic_toy_data_manifest_and_estimate(tmp_path):
    manifest = write_dataset(tmp_path / "toy", num=8, seed=0, progress=False,
                             cfg=SyntheticConfig(num_frames=8, height=32, width=32, supersample=1))
    rows = {r["path"]: r for r in map(json.loads, manifest.read_text().splitlines())}
    d = dict(path=str(manifest), num_frames=8, target_fps=None, stride=1, height=32, width=32, batch_size=8,
             num_workers=0, train=False, drop_last=False)
    batch = next(iter(build_video_loader(d, seed=0)))                     # manifest mode: the generator's buckets
    truth = [rows["/".join(p.split("/")[-2:])]["motion_bucket_id"] for p in batch["path"]]
    assert [int(b) for b in batch["motion_bucket_id"]] == truth
    est = next(iter(build_video_loader(dict(d, motion_bucket="estimate"), seed=0)))
    got = sorted(int(b) for b in est["motion_bucket_id"])      # n = 8: the rank rule up to one 5 % knot step
    assert got[0] == 0 and got[-1] == 255
    assert all(abs(g - 255 * r / 7) <= 12.75 for r, g in enumerate(got)), got
    order = np.argsort(est["motion"].numpy(), kind="stable")
    assert list(est["motion_bucket_id"][order]) == sorted(est["motion_bucket_id"].tolist())
    true_motion_of = [rows[k]["motion"] * rows[k]["fps"] for k in ("/".join(p.split("/")[-2:]) for p in est["path"])]
    rank = np.corrcoef(np.argsort(np.argsort(true_motion_of)), np.argsort(np.argsort(est["motion"].numpy())))[0, 1]
    assert rank > 0.5, rank                                                # estimate follows the true motion


def test_cache_stores_raw_motion_and_bucket(moving, tmp_path):
    from tdd_video.data.cache import video_encoder
    from tdd_video.families.svd import SVDFamily

    family = SVDFamily.tiny(seed=0)
    cfg = _cfg(moving, motion_bucket="estimate", batch_size=2, drop_last=True)
    index = json.loads(build_cache(video_encoder(family), cfg, tmp_path / "est", dtype="fp32", shard_size=4,
                                   progress=False).read_text())
    cal = MotionCalibration.from_dict(index["motion"]["calibration"])
    assert index["motion"]["mode"] == "estimate" and cal.num_clips == len(SPEEDS)
    samples = [s for n in index["shards"] for s in json.loads((tmp_path / "est" / f"{n}.json").read_text())["samples"]]
    assert len(samples) == len(SPEEDS)
    assert sorted(s["motion_bucket_id"] for s in samples) == [0, 51, 102, 153, 204, 255]
    assert all(s["motion_bucket_id"] == cal.bucket(s["motion"]) for s in samples)
    cached = LatentCacheDataset(tmp_path / "est")
    assert cached.motion_mode == "estimate" and cached[0]["motion"] == samples[0]["motion"]
    batch = next(iter(build_video_loader(dict(cfg.to_dict(), use_cache=True, cache_dir=str(tmp_path / "est")))))
    assert {int(b) for b in batch["motion_bucket_id"]} <= {0, 51, 102, 153, 204, 255} and "motion" in batch
    with pytest.raises(ConfigError, match="another motion calibration"):
        build_video_loader(dict(cfg.to_dict(), use_cache=True, cache_dir=str(tmp_path / "est"),
                                motion_percentiles=[0.1, 0.3, 0.9]))
    # manifest mode: the manifest buckets, the raw motion still stored; refused by an estimate-mode run
    build_cache(video_encoder(family), _cfg(moving), tmp_path / "man", dtype="fp32", progress=False)
    man = LatentCacheDataset(tmp_path / "man")
    assert man.motion_mode == "manifest" and "motion" not in man[0]
    assert sorted(s["motion_bucket_id"] for s in man.samples) == [7, 7, 7, 7, 7, 127]
    assert all(s["motion"] >= 0 for s in man.samples)
    with pytest.raises(ConfigError, match="rebuild it"):
        build_video_loader(dict(cfg.to_dict(), use_cache=True, cache_dir=str(tmp_path / "man")))


def test_cache_cli_motion_flags(moving, tmp_path, capsys):
    rc = cache_main(["--model", "tiny", "--data", str(moving / "train.csv"), "--out", str(tmp_path / "cli"),
                     "--num-frames", "4", "--height", "32", "--width", "48", "--motion-bucket", "estimate",
                     "--motion-percentiles", "0.1", "0.3", "0.9"])
    assert rc == 0 and "estimated from the frames" in capsys.readouterr().out
    ds = LatentCacheDataset(tmp_path / "cli")
    assert ds.calibration == MotionCalibration.from_percentiles(0.1, 0.3, 0.9)


def test_check_data_reports_motion_and_writes_the_calibration(moving, capsys, monkeypatch):
    args = ["--data", str(moving / "train.csv"), "--num-frames", "6", "--target-fps", "12", "--height", "32",
            "--width", "48"]
    assert check_main(args + ["--json"]) == 0
    assert "motion" not in json.loads(capsys.readouterr().out)          # only when asked
    assert check_main(args + ["--motion", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["motion"]
    assert report["num_clips"] == len(SPEEDS) and report["calibration_kind"] == "dataset"
    assert set(report["percentiles"]) == {"0", "5", "25", "50", "75", "95", "100"}
    assert report["percentiles"]["0"] < 1e-3 < report["percentiles"]["100"]
    assert sum(report["bucket_histogram"].values()) == len(SPEEDS)
    assert report["bucket_histogram"]["0"] == 1 and report["bucket_histogram"]["240"] == 1
    assert check_main(args + ["--motion", "--json", "--num-workers", "2"]) == 0      # decoded in 2 processes
    assert json.loads(capsys.readouterr().out)["motion"]["clips"] == report["clips"]
    stored = default_calibration_path(moving / "train.csv")
    stored.unlink(missing_ok=True)
    assert check_main(args + ["--motion", "--write-calibration"]) == 0
    text = capsys.readouterr().out
    assert "motion_bucket_id histogram" in text and "raw: p0" in text and "motion calibration written" in text
    # training finds the stored calibration and does not measure the data again
    monkeypatch.setattr(dataset_module, "compute_calibration", lambda *a, **k: pytest.fail("recomputed"))
    ds = build_video_dataset(_cfg(moving, motion_bucket="estimate"))
    assert ds.calibration == MotionCalibration.load(stored)
    assert check_main(args + ["--motion", "--motion-percentiles", "0.1", "0.3", "0.9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["motion"]["calibration_kind"] == "percentiles"
