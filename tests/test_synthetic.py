"""Synthetic clip generator: determinism by seed, real motion, manifest readable by the loader."""
import json

import numpy as np
import pytest

from tdd_video.cli.synthetic import main
from tdd_video.data.synthetic import (
    CLIP_KINDS,
    MOTION_FULL_SCALE,
    SyntheticConfig,
    available_photos,
    render_clip,
    write_dataset,
)
from tdd_video.errors import ConfigError

CFG = SyntheticConfig(num_frames=6, height=24, width=32, supersample=2)


def test_same_seed_same_frames_different_seed_differs():
    a, meta_a = render_clip(CFG, seed=3, index=5)
    b, meta_b = render_clip(CFG, seed=3, index=5)
    c, _ = render_clip(CFG, seed=4, index=5)
    d, _ = render_clip(CFG, seed=3, index=6)
    assert a.dtype == np.uint8 and a.shape == (6, 24, 32, 3)
    assert np.array_equal(a, b) and meta_a == meta_b
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_clips_move_and_motion_bucket_follows_motion():
    metas, diffs = [], []
    for i in range(12):
        frames, meta = render_clip(CFG, seed=0, index=i)
        metas.append(meta)
        diffs.append(np.abs(frames[1:].astype(int) - frames[:-1].astype(int)).mean())
        assert meta["kind"] in CLIP_KINDS and meta["fps"] in CFG.fps_choices
        assert 0 <= meta["motion_bucket_id"] <= 255
        expected = round(255 * min(meta["motion"] / MOTION_FULL_SCALE, 1.0))
        assert abs(meta["motion_bucket_id"] - expected) <= 1
    assert np.mean(diffs) > 0.5, "frames should change over time"
    buckets = [m["motion_bucket_id"] for m in metas]
    assert len(set(buckets)) > 3, f"motion buckets should vary with the clip's real motion: {buckets}"


def test_shapes_only_without_photos():
    cfg = SyntheticConfig(num_frames=4, height=16, width=16, kind_weights=(1.0, 0.0, 0.0), supersample=1)
    kinds = {render_clip(cfg, 0, i)[1]["kind"] for i in range(6)}
    assert kinds == {"shapes"}


@pytest.mark.skipif(not available_photos(), reason="scikit-image sample photos not installed")
def test_photo_pans_use_bundled_photos():
    cfg = SyntheticConfig(num_frames=4, height=16, width=16, kind_weights=(0.0, 1.0, 0.0), supersample=1)
    frames, meta = render_clip(cfg, 1, 0)
    assert meta["kind"] == "photo_pan" and meta["photo"] in available_photos()
    assert frames.std() > 5


def test_bad_config_names_key():
    with pytest.raises(ConfigError, match="synthetic.height"):
        SyntheticConfig(height=4)
    with pytest.raises(ConfigError, match="synthetic.fps_choices"):
        SyntheticConfig(fps_choices=())


def test_write_dataset_mp4_manifest_and_resume(tmp_path):
    from tdd_video.data.video_io import read_video_frames, video_fps
    cfg = SyntheticConfig(num_frames=5, height=16, width=16, supersample=1)
    manifest = write_dataset(tmp_path / "ds", 3, seed=7, cfg=cfg, progress=False)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 3 and {"path", "fps", "motion_bucket_id", "caption"} <= set(rows[0])
    first = tmp_path / "ds" / rows[0]["path"]
    frames = read_video_frames(first)
    assert frames.shape == (5, 16, 16, 3)
    assert abs(video_fps(first) - rows[0]["fps"]) < 1e-6
    ref, _ = render_clip(cfg, 7, 0)
    # H.264 crf 0 with 4:2:0 chroma: close to the rendered frames, not bit-exact
    assert np.abs(frames.astype(int) - ref.astype(int)).mean() < 12
    mtime = first.stat().st_mtime_ns
    write_dataset(tmp_path / "ds", 3, seed=7, cfg=cfg, progress=False)     # resume: nothing re-rendered
    assert first.stat().st_mtime_ns == mtime
    assert manifest.read_text().splitlines() == [json.dumps(r) for r in rows]


def test_cli(tmp_path, capsys):
    main(["--out", str(tmp_path / "cli"), "--num", "2", "--seed", "1", "--frames", "3", "--size", "16", "24"])
    rows = (tmp_path / "cli" / "manifest.jsonl").read_text().splitlines()
    assert len(rows) == 2 and "wrote 2 clips" in capsys.readouterr().out
