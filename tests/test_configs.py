"""Every shipped recipe and DeepSpeed JSON validates; bad values are named with their allowed range."""
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tdd_video.engine.config import load_config, parse_overrides
from tdd_video.engine.distributed import deepspeed_config
from tdd_video.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("**/*.yaml"))
TRAIN_RECIPES = [p for p in RECIPES if "accelerate" not in p.parts
                 and not p.name.startswith("pretrain_")]   # pretrain_*: toy-zoo build configs, not recipes
DS_JSONS = sorted((ROOT / "configs" / "deepspeed").glob("*.json"))


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_recipe_validates_and_says_how_to_run(path):
    header = "\n".join(line for line in path.read_text().splitlines()[:40] if line.startswith("#"))
    assert "train/" in header and ("python" in header or "deepspeed" in header), \
        "the header comment must say how to run the recipe"
    cfg = load_config(path)
    if cfg.method_name == "tdd":
        assert cfg.method.k_min <= cfg.method.k_max <= cfg.method.num_grid


def test_defaults_alone_validate():
    assert load_config(None, ["data.path=synthetic"]).train.max_steps >= 1


def test_real_recipe_matches_the_issue():
    cfg = load_config(ROOT / "configs/svd/tdd_svd_xt_1_1.yaml")
    assert cfg.model.path == "stabilityai/stable-video-diffusion-img2vid-xt-1-1"
    assert (cfg.trainable.kind, cfg.trainable.lora_rank) == ("lora", 64)
    m = cfg.method
    assert (m.num_grid, m.k_min, m.k_max, m.eta_max, m.p_uncond) == (250, 4, 8, 0.3, 0.2)
    assert cfg.data.num_frames in (14, 25) and (320, 576) in cfg.data.sizes()
    assert "576,1024" in (ROOT / "configs/svd/tdd_svd_xt_1_1.yaml").read_text()   # the second stage


@pytest.mark.parametrize("path", DS_JSONS, ids=lambda p: p.name)
def test_deepspeed_jsons(path):
    cfg = load_config(ROOT / "configs/toy/tdd_svd_tiny.yaml", ["train.mixed_precision=bf16", "train.grad_accum=2"])
    ds = deepspeed_config(str(path), cfg.train)
    assert ds["zero_optimization"]["stage"] in (2, 3)
    assert ds["bf16"]["enabled"] and ds["gradient_accumulation_steps"] == 2
    assert ds["optimizer"]["params"]["torch_adam"] is True
    json.dumps(ds)


@pytest.mark.parametrize("override,key,words", [
    (["method.k_min=9"], "method.k_max", "k_min"),
    (["method.eta_max=1.0"], "method.eta_max", "[0.0, 1.0)"),
    (["method.num_grid=6"], "method.num_grid", "k_max"),
    (["train.lr=-1"], "train.lr", "(0.0, 1.0]"),
    (["train.lrr=1"], "train.lrr", "unknown key"),
    (["train.max_steps=1.5"], "train.max_steps", "integer"),
    (["trainable.kind=half"], "trainable.kind", "'lora'"),
    (["method.name=lcm"], "method.name", "'tdd'"),
    (["data.num_frames=0"], "data.num_frames", "range"),
    (["data.height=65"], "data.height", "multiple of 8"),
    (["train.mixed_precision=fp16"], "train.mixed_precision", "CPU"),
    (["train.backend=deepspeed", "train.deepspeed_config=null"], "train.deepspeed_config", "JSON"),
    (["model.family=sd15"], "model.family", "'svd'"),
])
def test_bad_values_are_named(override, key, words):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs/toy/tdd_svd_tiny.yaml", override)
    assert e.value.key == key and words in str(e.value)


def test_overrides_and_bad_override_syntax(tmp_path):
    assert parse_overrides(["train.lr=1e-5", "method.guidance_max_range=[2, 4]"]) == \
        {"train": {"lr": 1e-5}, "method": {"guidance_max_range": [2, 4]}}
    cfg = load_config(ROOT / "configs/toy/tdd_svd_tiny.yaml", ["train.lr=2e-5", "method.k_max=6"])
    assert cfg.train.lr == 2e-5 and cfg.method.k_max == 6
    for bad in (["lr=1"], ["train.lr"], ["nosection.x=1"]):
        with pytest.raises(ConfigError):
            parse_overrides(bad)
    (tmp_path / "x.yaml").write_text("bogus: {}\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(tmp_path / "x.yaml")


def test_a_recipe_can_start_from_a_base_recipe(tmp_path):
    """`base: other.yaml` (relative to the recipe's folder) is read first and the recipe's keys are merged over it,
    key by key inside a section; bases chain; a loop or a missing base is a ConfigError on key 'base'."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text("data: {path: synthetic}\ntrain: {lr: 1.0e-4, max_steps: 7}\n"
                                     "method: {k_min: 2, k_max: 4}\n")
    (tmp_path / "sub" / "b.yaml").write_text("base: ../a.yaml\ntrain: {max_steps: 9}\n")
    (tmp_path / "c.yaml").write_text("base: sub/b.yaml\nmethod: {k_max: 6}\n")
    cfg = load_config(tmp_path / "c.yaml", ["train.lr=3e-4"])
    assert (cfg.train.lr, cfg.train.max_steps, cfg.method.k_min, cfg.method.k_max) == (3e-4, 9, 2, 6)
    (tmp_path / "loop.yaml").write_text("base: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops back") as e:
        load_config(tmp_path / "loop.yaml")
    assert e.value.key == "base"
    (tmp_path / "gone.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml") as e:
        load_config(tmp_path / "gone.yaml")
    assert e.value.key == "base"


def test_cli_dry_run_prints_resolved_config(capsys):
    from tdd_video.cli import distill
    tiny = ROOT / "configs/toy/tdd_svd_tiny.yaml"
    assert distill.main(["--dry-run", "method.k_max=7"], default_config=tiny) == 0
    out = capsys.readouterr().out
    assert "k_max: 7" in out and "name: tdd" in out and "path: synthetic" in out
    assert distill.main(["--dry-run", "method.eta_max=2"], default_config=tiny) == 2
    err = capsys.readouterr().err
    assert "method.eta_max" in err and "allowed range" in err


def test_cli_help_runs_as_a_script():
    out = subprocess.run([sys.executable, str(ROOT / "train/distill_svd.py"), "--help"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0 and "deepspeed" in out.stdout and "--dry-run" in out.stdout


def test_data_section_is_typed_and_checked_before_anything_is_built(tmp_path):
    bad = {"data.num_frames=abc": "data.num_frames", "data.flip=maybe": "data.flip", "data.path=[1,2]": "data.path",
           "data.buckets=[[32,x]]": r"data.buckets\[0\]\[1\]"}
    for override, key in bad.items():
        with pytest.raises(ConfigError, match=key):
            load_config(ROOT / "configs/toy/tdd_svd_tiny.yaml", [override])
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a recipe is a mapping"):
        load_config(tmp_path / "list.yaml")
    from tdd_video.engine.config import check_runnable
    with pytest.raises(ConfigError, match="data.path.*required"):
        check_runnable(load_config(tmp_path / "empty.yaml"))
    with pytest.raises(ConfigError, match="data.path.*not found"):
        check_runnable(load_config(ROOT / "configs/toy/tdd_svd_tiny.yaml", ["data.path=/nope/videos"]))
    with pytest.raises(ConfigError, match="data.cache_dir"):
        check_runnable(load_config(ROOT / "configs/toy/tdd_svd_tiny.yaml",
                                   ["data.use_cache=true", f"data.cache_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="model.path.*not found"):
        check_runnable(load_config(ROOT / "configs/toy/tdd_svd_tiny.yaml", ["model.path=not/a/real/thing"]))


def test_cli_errors_are_one_line_fast_and_name_flags(tmp_path):
    """A bad flag, config file or value: one `error:` line within 2 s, exit status 2, no traceback."""
    import time
    (tmp_path / "empty.yaml").write_text("")
    cases = [(["--config", str(tmp_path / "nope.yaml")], "error: --config: file not found"),
             (["--config", str(ROOT / "configs/toy/tdd_svd_tiny.yaml"), "data.num_frames=abc"],
              "error: config key 'data.num_frames'"),
             (["--config", str(tmp_path / "empty.yaml")], "error: config key 'data.path': required"),
             (["--config", str(ROOT / "configs/toy/tdd_svd_tiny.yaml"), "train.lr=2"], "train.lr")]
    for args, expect in cases:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, str(ROOT / "train/distill_svd.py"), *args], capture_output=True,
                             text=True, timeout=60, cwd=ROOT)
        took = time.perf_counter() - t0
        assert out.returncode == 2 and expect in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and took < 2.0, (out.stderr, took)


def test_cli_exit_codes_for_preemption_and_nonfinite(monkeypatch, capsys):
    from tdd_video.cli import distill
    from tdd_video.engine import trainer
    from tdd_video.engine.preempt import Preempted
    tiny = ROOT / "configs/toy/tdd_svd_tiny.yaml"

    def preempted(cfg):
        raise Preempted(7, "SIGTERM", "runs/x/checkpoints/step_000007")
    monkeypatch.setattr(trainer, "train", preempted)
    assert distill.main([], default_config=tiny) == 75
    assert "resume auto" in capsys.readouterr().err

    def nonfinite(cfg):
        raise trainer.NonFiniteLoss(3, "10 optimizer steps in a row had a non-finite loss")
    monkeypatch.setattr(trainer, "train", nonfinite)
    assert distill.main([], default_config=tiny) == 3


def test_student_recipes_share_one_budget_and_match_the_shipped_students():
    """The zoo's TDD and AnimateLCM students share capacity and the budget of their first two stages (3000 + 1500
    steps each; TDD's later stages, the teacher as the target, have no AnimateLCM counterpart: docs/quality.md §6), and
    the shipped LoRA files carry the rank / alpha / step count of the recipe that says it built them."""
    from safetensors import safe_open
    tdd = load_config(ROOT / "configs/toy/tdd_svd_student.yaml")
    tdd8 = load_config(ROOT / "configs/toy/tdd_svd_student_8step.yaml")
    tdd4 = load_config(ROOT / "configs/toy/tdd_svd_student_4step.yaml")
    tdd3 = load_config(ROOT / "configs/toy/tdd_svd_student_4step_stage3.yaml")
    tdd8s4 = load_config(ROOT / "configs/toy/tdd_svd_student_8step_stage4.yaml")
    tdd2 = load_config(ROOT / "configs/toy/tdd_svd_student_2step.yaml")
    tdd2s2 = load_config(ROOT / "configs/toy/tdd_svd_student_2step_stage2.yaml")
    adv = load_config(ROOT / "configs/toy/tdd_svd_student_adv.yaml")
    alcm = load_config(ROOT / "configs/toy/animatelcm_svd_student.yaml")
    alcm2 = load_config(ROOT / "configs/toy/animatelcm_svd_student_stage2.yaml")
    assert (tdd.method_name, alcm.method_name, alcm2.method_name) == ("tdd", "animatelcm", "animatelcm")
    keys = ("max_steps", "grad_accum", "lr", "lr_schedule", "batch_size", "path", "kind", "lora_rank", "lora_alpha",
            "lora_preset", "target_ema")
    # (recipe, the recipe it must match, keys it sets on its own: TDD's later stages have their own targets, stage 4
    # and the 1-2 step stage their own lengths and lr, the adversarial stage its own length; checked below)
    pairs = ((tdd, alcm, ()), (tdd, tdd8, ()), (tdd4, alcm2, ("target_ema",)),
             (tdd3, tdd4, ("target_ema", "max_steps")), (tdd8s4, tdd3, ("max_steps", "lr")),
             (tdd2, tdd3, ("max_steps", "lr")), (tdd2s2, tdd2, ()), (adv, tdd2, ("max_steps",)))
    for a, b, own in pairs:
        for sec in ("train", "data", "trainable", "method"):
            for key in (k for k in keys if k not in own):
                if hasattr(getattr(a, sec), key) and hasattr(getattr(b, sec), key):
                    assert getattr(getattr(a, sec), key) == getattr(getattr(b, sec), key), (sec, key)
    assert tdd.method.target_ema == alcm.method.target_ema == alcm2.method.target_ema == 0.95
    assert (tdd4.method.target_ema, tdd4.method.target_hops) == (1.0, 4)   # docs/quality.md §6
    assert (tdd8.method.k_min, tdd8.method.k_max, tdd8.method.eta_max) == (16, 16, 0.0)
    assert (tdd4.method.k_min, tdd4.method.k_max, tdd4.method.eta_max) == (4, 4, 0.0)
    assert (tdd3.method.k_min, tdd3.method.k_max, tdd3.method.eta_max) == (4, 4, 0.0)
    assert (tdd3.method.teacher_target, tdd3.method.teacher_substeps, tdd3.method.target_ema) == (True, 6, 0.0)
    assert (tdd8s4.method.k_min, tdd8s4.method.k_max, tdd8s4.method.teacher_target) == (4, 8, True)
    assert (tdd2.method.k_min, tdd2.method.k_max, tdd2.method.teacher_substeps, tdd2.method.adv.weight) == (1, 2, 8, 0)
    assert (adv.method.k_min, adv.method.k_max, adv.method.teacher_target, adv.method.adv.weight) == (1, 2, True, 0.5)
    assert tdd2.train.lr == adv.train.lr == tdd3.train.lr / 2 and tdd2.export.ema == adv.export.ema == 0.995
    assert Path(tdd3.trainable.init_lora).parent == Path(tdd4.run.output_dir)          # stage 3 starts from stage 2
    # the shipped 1-3 step student: the 1-2 step stage continued from its own export, everything else equal
    assert Path(tdd2s2.trainable.init_lora) == Path(tdd2.run.output_dir) / "export" / "lora"
    assert tdd2s2.run.output_dir != tdd2.run.output_dir and tdd2s2.method == tdd2.method
    for later in (tdd8s4, tdd2, adv):                                 # stage 4 and the 1-2 step stages from stage 3
        assert Path(later.trainable.init_lora) == Path(tdd3.run.output_dir) / "export" / "lora"
    # stage 2 starts from stage 1 (the K = 16 run) / the AnimateLCM stage-1 run's export
    assert Path(tdd4.trainable.init_lora) == Path(tdd8.run.output_dir) / "export" / "lora"
    assert Path(alcm2.trainable.init_lora) == Path(alcm.run.output_dir) / "export" / "lora"
    assert tdd8.train.max_steps + tdd4.train.max_steps == alcm.train.max_steps + alcm2.train.max_steps
    students = ROOT / "tdd_video/zoo/toy-svd/students"
    for cfg, folder in ((tdd3, "tdd-4step"), (tdd8s4, "tdd-8step"), (tdd2s2, "tdd-2step"), (adv, "adv-2step"),
                        (alcm2, "animatelcm-4step")):
        path = students / folder / "pytorch_lora_weights.safetensors"
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["tdd_video"])
        assert (meta["method"], meta["rank"], meta["alpha"], meta["step"]) == \
            (cfg.method_name, cfg.trainable.lora_rank, cfg.trainable.lora_alpha, cfg.train.max_steps), folder


def test_data_tools_name_their_flags_fast(tmp_path):
    """tdd-check-data / tdd-cache-video / tdd-cache-images: a bad value names the flag that set it, one line,
    exit 2, and the caches refuse a missing --data before torch or a model is loaded."""
    from tdd_video.cli.cache import DTYPE_NAMES, main_images, main_video
    from tdd_video.cli.check_data import main as check_main
    from tdd_video.data.cache import DTYPES
    assert DTYPE_NAMES == list(DTYPES)          # the flag's choices, spelled without importing torch
    cases = [(check_main, ["--data", str(tmp_path), "--num-frames", "0"], "--num-frames: got 0"),
             (main_video, ["--model", "tiny", "--data", str(tmp_path), "--out", str(tmp_path / "c"),
                           "--num-frames", "0"], "--num-frames: got 0"),
             (main_video, ["--model", "tiny", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "c")],
              "--data: not found"),
             (main_images, ["--model", "tiny", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "c")],
              "--data: not found")]
    for fn, argv, expect in cases:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = fn(argv)
        text = err.getvalue().strip()
        assert rc == 2 and text.startswith(f"error: {expect}") and len(text.splitlines()) == 1, text
    probe = "import sys, tdd_video.cli.cache, tdd_video.cli.check_data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
