"""End to end: `train/distill_svd.py` on the tiny SVD with synthetic clips (the no-argument default
recipe, shortened): LoRA on the shared base, real video loader, checkpoint + exact resume,
validation render, diffusers-format LoRA and fused UNet export."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["train.progress=false", "data.num_frames=4", "train.checkpoint_every=1", "validation.steps=[2]"]


def _losses(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def test_toy_recipe_end_to_end_with_exact_resume(tmp_path, capsys):
    pytest.importorskip("tdd_video.lora")
    from tdd_video.cli import distill
    tiny = ROOT / "configs/toy/tdd_svd_tiny.yaml"
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert distill.main(default_config=tiny, argv=[f"run.output_dir={ref}", "train.max_steps=2", "validation.every=0",
                             "export.lora=false", *COMMON]) == 0
    assert distill.main(default_config=tiny, argv=[f"run.output_dir={run}", "train.max_steps=1", "validation.every=0",
                             "export.lora=false", *COMMON]) == 0
    rc = distill.main(default_config=tiny, argv=[f"run.output_dir={run}", "train.max_steps=2", "validation.every=2",
                           "export.fused_unet=true", "--resume", "auto", *COMMON])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "done: 1 steps on plain x1" in out
    assert _losses(run) == _losses(ref)          # resumed run = uninterrupted run, bit for bit
    assert (run / "config.yaml").is_file()
    assert "path: toy-svd" in (run / "config.yaml").read_text()     # the default distils the zoo teacher
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    assert list((run / "validation" / "step_000002").glob("k2_seed0_img0.gif"))
    from tdd_video.lora import read_lora
    state, _, ours = read_lora(run / "export" / "lora" / "pytorch_lora_weights.safetensors")
    assert state and ours["rank"] == 8 and ours["alpha"] == 8 and ours["method"] == "tdd"
    assert (run / "export" / "unet" / "config.json").is_file()
    assert (run / "tensorboard").is_dir()
