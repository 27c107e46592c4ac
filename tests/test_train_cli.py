"""End to end: `train/distill_svd.py` on the tiny SVD with synthetic clips (the no-argument default
recipe, shortened): LoRA on the shared base, checkpoint, validation render, diffusers-format LoRA."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_toy_recipe_end_to_end(tmp_path, capsys):
    pytest.importorskip("tdd_video.lora")
    sys.path.insert(0, str(ROOT / "train"))
    import distill_svd
    run = tmp_path / "run"
    rc = distill_svd.main([f"run.output_dir={run}", "train.max_steps=2", "train.checkpoint_every=1",
                           "train.progress=false", "validation.every=2", "validation.steps=[2]",
                           "data.num_frames=4", "export.fused_unet=true"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "done: 2 steps on plain x1" in out
    assert (run / "config.yaml").is_file() and (run / "tiny_model" / "model_index.json").is_file()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    assert list((run / "validation" / "step_000002").glob("k2_seed0_img0.gif"))
    lora_file = run / "export" / "lora" / "pytorch_lora_weights.safetensors"
    from tdd_video.lora import read_lora
    state, diffusers_meta, ours = read_lora(lora_file)
    assert state and ours["rank"] == 8 and ours["alpha"] == 8 and ours["method"] == "tdd"
    assert (run / "export" / "unet" / "config.json").is_file()
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert (run / "tensorboard").is_dir()
