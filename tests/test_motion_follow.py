"""bench/motion_follow.py on the toy zoo teacher + its shipped TDD student: 1 image, 1 seed, 2 buckets, few steps."""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from tdd_video import zoo

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(zoo.DEFAULT_SVD not in zoo.available() or zoo.default_student_lora() is None,
                                 reason="toy-svd zoo teacher or its TDD student missing")]
BUCKETS = [0, 255]
SPECS = ["teacher@2", "tdd@1"]


@pytest.fixture(scope="module")
def mf():
    spec = importlib.util.spec_from_file_location("motion_follow", ROOT / "bench" / "motion_follow.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def runs(mf):
    from tdd_video.eval.quality import QualityConfig
    from tdd_video.families import load_family
    family = load_family("svd", str(zoo.resolve_model(zoo.DEFAULT_SVD)))
    cfg = QualityConfig(contenders=SPECS, num_images=1, seeds=[0], batch=4,
                        tdd_lora=str(zoo.default_student_lora()), progress=False)
    return [mf.render_motion(family, cfg, BUCKETS, SPECS) for _ in range(2)]


def test_spearman(mf):
    assert mf.spearman([0, 1, 2, 3], [0.1, 0.5, 0.4, 9.0]) == pytest.approx(0.8)
    assert mf.spearman([0, 1, 2], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert mf.spearman([0, 1, 2], [1.0, 1.0, 2.0]) == pytest.approx(math.sqrt(3) / 2)     # tie -> average rank
    assert math.isnan(mf.spearman([0, 1, 2], [1.0, 1.0, 1.0]))


def test_render_structure_determinism_and_bucket_reaches_model(runs):
    first, second = runs
    assert set(first) == set(SPECS)
    for label in SPECS:
        assert set(first[label]) == {"frame_change", "flow"}
        for m, vals in first[label].items():
            assert vals.shape == (len(BUCKETS), 1)
            assert np.isfinite(vals).all() and (vals > 0).all(), (label, m, vals)
            np.testing.assert_array_equal(vals, second[label][m])        # same seed -> bit-identical numbers
            assert vals[0, 0] != vals[1, 0], (label, m)                  # the bucket changes the video
        assert first[label]["frame_change"].max() < 1.0                  # pixels in [0, 1]


def test_summarize(mf, runs):
    rows = mf.summarize(runs[0], BUCKETS, SPECS[0])
    buckets = [r for r in rows if r["kind"] == "bucket"]
    trends = [r for r in rows if r["kind"] == "trend"]
    assert [(r["contender"], r["bucket"]) for r in buckets] == [(c, b) for c in SPECS for b in BUCKETS]
    assert [(r["contender"], r["measure"]) for r in trends] == [(c, m) for c in SPECS for m in mf.MEASURES]
    for r in buckets:
        assert r["pairs"] == 1 and r["flow"] == runs[0][r["contender"]]["flow"][BUCKETS.index(r["bucket"]), 0]
        assert ("flow_ratio_to_teacher" in r) == (r["contender"] == SPECS[1])
    student = next(r for r in buckets if r["contender"] == SPECS[1] and r["bucket"] == 0)
    assert student["flow_ratio_to_teacher"] == pytest.approx(runs[0][SPECS[1]]["flow"][0, 0]
                                                             / runs[0][SPECS[0]]["flow"][0, 0])
    for r in trends:                       # two buckets: the rank correlation is ±1, the slope's sign agrees with it
        assert abs(r["spearman_per_pair"]) == 1.0 and r["spearman_of_means"] == r["spearman_per_pair"]
        assert math.copysign(1.0, r["slope_per_255"]) == r["spearman_per_pair"]


def test_cli_prints_one_json_line_per_row(mf, capsys, tmp_path):
    png = tmp_path / "mf.png"
    assert mf.main(["--num-images", "1", "--seeds", "0", "--buckets", *map(str, BUCKETS), "--teacher", SPECS[0],
                    "--student", SPECS[1], "--batch", "4", "--quiet", "--png", str(png)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [x["bench"] for x in lines] == ["motion_follow"] * 8 + ["motion_follow_files"]
    assert lines[0]["meta"]["fps"] == 7 and lines[0]["meta"]["tdd_lora"].endswith(".safetensors")
    assert png.is_file() and png.stat().st_size > 1000
