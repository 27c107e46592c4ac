"""Staged spatial → temporal training (AnimateLCM's released recipe, issue 6): stage 2's student starts
from stage 1's exported UNet (`trainable.init_unet`) while its frozen teacher stays the original base."""
import pytest
import torch

from tdd_video.engine.config import config_from_dict, load_config
from tdd_video.engine.trainables import SPATIAL_RE, TEMPORAL_RE, Trainables
from tdd_video.engine.trainer import train
from tdd_video.errors import ConfigError


def _cfg(tmp_path, name, kind, init_unet=None, steps=2):
    return config_from_dict({
        "run": {"output_dir": str(tmp_path / name), "seed": 0},
        "model": {"family": "svd", "path": str(tmp_path / "base")},
        "trainable": {"kind": kind, "init_unet": init_unet},
        "method": {"name": "animatelcm"},
        "train": {"max_steps": steps, "lr": 1e-2, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 1,
                  "tensorboard": False, "progress": False, "backend": "plain"},
        "data": {"path": "synthetic", "num_frames": 4, "height": 64, "width": 64, "batch_size": 1},
    })


def _unet_state(folder):
    from diffusers import UNetSpatioTemporalConditionModel
    return UNetSpatioTemporalConditionModel.from_pretrained(folder).state_dict()


def test_stage2_student_starts_from_stage1_and_teacher_stays_the_base(tmp_path):
    from tdd_video.families import tiny
    tiny.save_tiny_svd(tmp_path / "base", seed=0)
    base = _unet_state(tmp_path / "base" / "unet")

    train(_cfg(tmp_path, "stage1", "spatial"))
    stage1 = _unet_state(tmp_path / "stage1" / "export" / "unet")
    changed1 = {k for k in base if not torch.equal(base[k], stage1[k])}
    assert changed1 and all(SPATIAL_RE.search(k) for k in changed1)       # stage 1 trained spatial weights only

    # Stage 2 built as the engine builds it: the teacher is the base, the student is stage 1.
    from tdd_video.families import load_family
    fam = load_family("svd", str(tmp_path / "base"))
    nets = Trainables(fam, "temporal", init_unet=str(tmp_path / "stage1" / "export" / "unet"))
    student = fam.unet.state_dict()
    with nets.teacher() as teacher:
        teacher_sd = teacher.state_dict()
    assert all(torch.equal(student[k], stage1[k]) for k in stage1)
    assert all(torch.equal(teacher_sd[k], base[k]) for k in base)
    assert all(TEMPORAL_RE.search(n) for n, _ in nets.named_parameters())

    train(_cfg(tmp_path, "stage2", "temporal", init_unet=str(tmp_path / "stage1" / "export" / "unet")))
    stage2 = _unet_state(tmp_path / "stage2" / "export" / "unet")
    changed2 = {k for k in stage1 if not torch.equal(stage1[k], stage2[k])}
    assert changed2 and all(TEMPORAL_RE.search(k) for k in changed2)     # stage 2 moved temporal weights only
    assert all(torch.equal(stage2[k], stage1[k]) for k in changed1)       # and kept stage 1's spatial ones


def test_init_unet_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="trainable.init_unet"):     # LoRA shares the base with the teacher
        config_from_dict({"trainable": {"kind": "lora", "init_unet": "x.safetensors"}})
    from tdd_video.engine import build

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the missing init_unet was reported")
    monkeypatch.setattr(build, "build_family", no_model)
    cfg = _cfg(tmp_path, "missing", "temporal", init_unet=str(tmp_path / "nope" / "export" / "unet"))
    with pytest.raises(ConfigError, match="trainable.init_unet.*run the earlier stage first"):
        train(cfg)


def test_shipped_stage2_recipe_names_stage1_export():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    s1 = load_config(root / "configs/svd/animatelcm_svd_xt_1_1.yaml")
    s2 = load_config(root / "configs/svd/animatelcm_svd_xt_1_1_stage2_temporal.yaml")
    assert (s1.trainable.kind, s2.trainable.kind) == ("spatial", "temporal")
    assert s2.trainable.init_unet == f"{s1.run.output_dir}/export/unet"
    assert s2.model.path == s1.model.path and s2.method == s1.method and s2.data == s1.data
