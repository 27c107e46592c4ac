"""Distill and ship the toy SDXL teacher's TDD student: ``tdd_video/zoo/toy-sdxl/students/tdd/``.

    python -m tools.zoo.sdxl_student [dotted overrides for configs/toy/tdd_sdxl_tiny.yaml ...]

1. runs ``train/distill_sdxl.py --config configs/toy/tdd_sdxl_tiny.yaml`` (the project's own TDD recipe,
   resumable with ``run.resume=auto``) on the zoo teacher ``toy-sdxl``;
2. copies the exported LoRA (diffusers format, alpha kept) to the zoo;
3. renders a reference (fixed prompt, seed, 4 steps) and records its latent statistics in
   ``reference.json`` (tests/test_sdxl_zoo.py re-renders and compares), and writes ``STUDENT_CARD.md``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "toy" / "tdd_sdxl_tiny.yaml"
REFERENCE = {"prompt": "a red circle above a blue square", "seed": 0, "steps": 4, "eta": 0.3, "guidance": 1.0}


@torch.no_grad()
def reference_render(teacher: str, lora: str) -> dict:
    """Latent statistics of the reference render (REFERENCE settings) through tdd_video.apps.txt2img."""
    import tempfile

    from tdd_video.apps.txt2img import Txt2ImgSettings, render_txt2img
    with tempfile.TemporaryDirectory() as tmp:
        r = render_txt2img(Txt2ImgSettings(prompts=[REFERENCE["prompt"]], model=teacher, lora=lora,
                                           steps=REFERENCE["steps"], eta=REFERENCE["eta"],
                                           guidance=REFERENCE["guidance"], seed=REFERENCE["seed"],
                                           out=str(Path(tmp) / "ref.png"), progress=False))
    lat = r.latents.double()
    return {**REFERENCE, "latent_mean": float(lat.mean()), "latent_abs_mean": float(lat.abs().mean()),
            "latent_first": [round(float(v), 6) for v in lat.flatten()[:8]]}


def main(argv=None) -> int:
    from tdd_video.cli.distill import main as distill
    from tdd_video.engine.config import load_config
    from tdd_video.errors import ConfigError
    from tdd_video.zoo import resolve_model
    p = argparse.ArgumentParser(description="Distil the toy-sdxl teacher's TDD student with "
                                            "configs/toy/tdd_sdxl_tiny.yaml and ship it to the zoo.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("overrides", nargs="*", help="dotted overrides of the recipe, e.g. train.max_steps=1000")
    overrides = p.parse_args(argv).overrides
    try:
        cfg = load_config(RECIPE, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    rc = distill(["--config", str(RECIPE), *overrides])
    if rc != 0:
        return rc
    run = Path(cfg.run.output_dir)
    teacher = resolve_model(cfg.model.path)
    dest = Path(teacher) / "students" / "tdd"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run / "export" / "lora" / "pytorch_lora_weights.safetensors",
                 dest / "pytorch_lora_weights.safetensors")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    ref = reference_render(str(teacher), str(dest / "pytorch_lora_weights.safetensors"))
    (dest / "reference.json").write_text(json.dumps(ref, indent=1))
    cmd = "python -m tools.zoo.sdxl_student " + " ".join(overrides)
    (dest / "STUDENT_CARD.md").write_text(f"""# TDD student of {cfg.model.path} (LoRA, diffusers format)

`pytorch_lora_weights.safetensors`: LoRA rank {cfg.trainable.lora_rank}, alpha {cfg.trainable.lora_alpha}
(stored in the file's metadata), preset `{cfg.trainable.lora_preset}`, distilled with the project's TDD recipe
`configs/toy/tdd_sdxl_tiny.yaml` through `train/distill_sdxl.py` ({cfg.train.max_steps} steps, batch
{cfg.data.batch_size}, lr {cfg.train.lr}, N = {cfg.method.num_grid}, K {cfg.method.k_min}–{cfg.method.k_max},
η_max {cfg.method.eta_max}, p_uncond {cfg.method.p_uncond} with ∅ = zero embeddings, teacher w
{cfg.method.guidance_max_range} in Imagen form). Built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in
{(time.time() - t0) / 60:.1f} min on CPU; logged loss {losses[0]:.4g} (first step) → {losses[-1]:.4g} (last step).

Rebuild: `{cmd.strip()}` (writes {cfg.run.output_dir}/, then copies the export here).
Use: `python infer/txt2img.py --steps 4` (the default), or in stock diffusers:
`StableDiffusionXLPipeline.from_pretrained(<toy-sdxl>).load_lora_weights("{dest.relative_to(ROOT)}")` with
`TDDScheduler.from_config(pipe.scheduler.config)`, 4 steps, guidance_scale 1.
Reference render (tests/test_sdxl_zoo.py): {json.dumps(REFERENCE)}.
""")
    print(f"student shipped to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
