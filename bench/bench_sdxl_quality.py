#!/usr/bin/env python
"""Toy SDXL quality: TDD student (4 steps) vs the teacher at 4 and 25 steps, same noise, same captions.

    python bench/bench_sdxl_quality.py                      # toy-sdxl + its shipped TDD student
    python bench/bench_sdxl_quality.py --model DIR --lora L.safetensors --num 96 --seeds 0 1 --grid out.png

One JSON line per method: latent MSE and pixel PSNR (dB, [-1, 1] range → peak-to-peak 2) to the teacher's
25-step output from the SAME starting noise and caption (mean over images ± standard error; the PSNR also as
the paired per-image difference to teacher@4), and prompt adherence scored exactly by the rules
that drew the toy data (tdd_video.data.synthetic_images.adherence: colour, shape, layout = both halves right,
all). The teacher runs DDIM (the TDD sampler with η = 0 on the base with the LoRA disabled — the solver the
student was distilled from) with CFG w (Imagen form, default 4.5 as in distillation); the student runs
the TDD sampler with its default γ-sampling η and g = 1 (one UNet pass per step). Threads: --threads (1).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy-sdxl")
    p.add_argument("--lora", default=None, help="default: the zoo student of --model")
    p.add_argument("--lora-scale", type=float, default=1.0, help="strength of the student LoRA (default 1)")
    p.add_argument("--num", type=int, default=96, help="captions (the first N of all 96)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--teacher-guidance", type=float, default=4.5)
    p.add_argument("--student-eta", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--grid", default=None, help="write a PNG grid: rows = methods, first 8 captions")
    a = p.parse_args(argv)
    import numpy as np
    import torch

    from tdd_video import lora as lora_lib
    from tdd_video.apps.txt2img import load_txt2img_family, resolve_txt2img_model, to_uint8
    from tdd_video.data.synthetic_images import all_scenes, mean_adherence
    from tdd_video.errors import ConfigError
    from tdd_video.sampling.sample import SamplingStats, sample
    torch.set_num_threads(a.threads)
    model, lora, notes = resolve_txt2img_model(a.model, a.lora)
    if lora is None:
        print(json.dumps({"error": "no student LoRA", "notes": notes}))
        return 2
    try:
        family = load_txt2img_family(model, lora, lora_scale=a.lora_scale)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    caps = [s.caption for s in all_scenes()][: a.num]
    size = int(family.unet.config.sample_size) * family.vae_scale_factor
    n = len(caps)
    sizes = torch.tensor([[size, size]] * n)
    cond = family.encode_conditioning({"caption": caps, "original_size": sizes, "target_size": sizes,
                                       "crop_coords": torch.zeros(n, 2)}, train=False)
    methods = {  # name: (use student, steps, guidance, eta)
        "teacher@25": (False, 25, a.teacher_guidance, 0.0),
        "teacher@4": (False, 4, a.teacher_guidance, 0.0),
        "teacher@8": (False, 8, a.teacher_guidance, 0.0),
        "tdd@4": (True, 4, 1.0, a.student_eta),
        "tdd@4_eta0": (True, 4, 1.0, 0.0),
        "tdd@8": (True, 8, 1.0, a.student_eta),
        "tdd@8_eta0": (True, 8, 1.0, 0.0),
        "tdd@4_g1.5": (True, 4, 1.5, a.student_eta),
    }
    results: dict[str, dict] = {name: {"lat": [], "img": []} for name in methods}
    for seed in a.seeds:
        noise = torch.randn(family.latent_shape(n, size, size), generator=torch.Generator().manual_seed(seed))
        for name, (student, steps, g, eta) in methods.items():
            stats, t0 = SamplingStats(), time.perf_counter()
            ctx = lora_lib.adapters_disabled(family.unet) if not student else torch.no_grad()
            with ctx:
                lat = sample(family, cond, steps=steps, eta=eta, guidance=g, latents=noise, progress=False,
                             generator=torch.Generator().manual_seed(seed + 1), stats=stats)
            img = family.decode_latents(lat).clamp(-1, 1)
            r = results[name]
            r["lat"].append(lat)
            r["img"].append(img)
            r["passes"] = stats.unet_passes
            r["seconds"] = r.get("seconds", 0.0) + time.perf_counter() - t0
    ref_lat = torch.cat(results["teacher@25"]["lat"])
    ref_img = torch.cat(results["teacher@25"]["img"])
    def se(x):                                   # standard error of the mean over images
        return round(float(x.std() / len(x) ** 0.5), 5) if len(x) > 1 else None
    imgs = {name: torch.cat(r["img"]) for name, r in results.items()}
    per_image = {name: 10 * torch.log10(4.0 / ((img - ref_img) ** 2).flatten(1).mean(1).clamp_min(1e-12))
                 for name, img in imgs.items()}
    for name, r in results.items():
        lat, img = torch.cat(r["lat"]), imgs[name]
        lat_mse = ((lat - ref_lat) ** 2).flatten(1).mean(1)
        psnr = per_image[name]
        diff = psnr - per_image["teacher@4"]        # paired: same caption and noise
        adh = mean_adherence(to_uint8(img), caps * len(a.seeds))
        ref = name == "teacher@25"
        print(json.dumps({"bench": "sdxl_quality", "model": str(a.model), "method": name, "images": int(img.shape[0]),
                          "unet_passes_per_batch": r["passes"],
                          "latent_mse_to_teacher25": round(float(lat_mse.mean()), 5),
                          "latent_mse_se": se(lat_mse),
                          "pixel_psnr_to_teacher25_db": None if ref else round(float(psnr.mean()), 2),
                          "pixel_psnr_se": None if ref else se(psnr),
                          "psnr_minus_teacher4_db": None if ref else round(float(diff.mean()), 3),
                          "psnr_minus_teacher4_se": None if ref else se(diff),
                          "adherence": {k: round(v, 3) for k, v in adh.items()}, "lora_scale": a.lora_scale,
                          "seconds": round(r["seconds"], 2)}))
    if a.grid:
        from PIL import Image

        from tdd_video.apps.txt2img import image_grid
        rows = [to_uint8(torch.cat(results[k]["img"])[:8]) for k in methods]
        Image.fromarray(image_grid(np.concatenate(rows), 8)).resize((8 * 96, len(rows) * 96),
                                                                    Image.NEAREST).save(a.grid)
        print(json.dumps({"grid": a.grid, "rows": list(methods), "captions": caps[:8]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
