#!/usr/bin/env python
"""Quality of the toy zoo: teacher 25 steps + CFG vs teacher 4 steps vs the TDD student 4 steps.

  OMP_NUM_THREADS=2 python bench/bench_zoo_quality.py                      # zoo 'toy-svd' + its shipped TDD student
  python bench/bench_zoo_quality.py --model runs/my_teacher --tdd-lora runs/x/lora.safetensors --seeds 0 1 2

Same images (the bundled sample image + first frames of held-out synthetic clips), same seeds and
the same initial noise for every method (tdd_video.eval.compare). Reference = teacher@25 with
frame-wise CFG 1 → 3 (the SVD pipeline's default). Printed, one JSON line per method: mean latent
MSE and pixel PSNR / SSIM to the reference, UNet passes, wall time; then one line naming the files
(frame strip PNG per (image, seed) with one row per method, grid video, tables). Without a TDD
student, only the two teacher rows are measured and a line says so.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def emit(**kw) -> None:
    from tdd_video.eval.metrics import json_safe
    print(json.dumps(json_safe(kw)), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy-svd", help="zoo name or diffusers folder of the teacher")
    p.add_argument("--tdd-lora", default=None, help="TDD student LoRA (default: the zoo's <teacher>/students/tdd*/)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--num-images", type=int, default=4, help="sample image + N-1 held-out synthetic first frames")
    p.add_argument("--teacher-steps", type=int, default=25)
    p.add_argument("--student-steps", type=int, default=4)
    p.add_argument("--tdd-guidance", type=float, default=1.0, help="TDD sampler guidance (student)")
    p.add_argument("--tdd-eta", type=float, default=0.3)
    p.add_argument("--out", default="runs/bench_zoo_quality")
    args = p.parse_args(argv)

    from tdd_video.eval.compare import CompareConfig, run_compare, zoo_students
    from tdd_video.zoo import resolve_model
    model = str(resolve_model(args.model))
    lora = args.tdd_lora or zoo_students(model).get("tdd")
    contenders = [f"teacher@{args.teacher_steps}", f"teacher@{args.student_steps}"]
    if lora:
        contenders.append(f"tdd@{args.student_steps}")
    else:
        emit(bench="zoo_quality", note=f"no TDD student found for {model} (pass --tdd-lora); teacher rows only")
    cfg = CompareConfig(contenders=contenders, model=model, tdd_lora=lora, seeds=list(args.seeds),
                        num_default_images=args.num_images, out=args.out, tdd_guidance=args.tdd_guidance,
                        tdd_eta=args.tdd_eta, progress=False)
    result = run_compare(cfg)
    for row in result.rows:
        emit(bench="zoo_quality", model=model, reference=result.reference, images=args.num_images,
             seeds=list(args.seeds), **{k: row[k] for k in ("contender", "latent_mse", "psnr_db", "ssim",
                                                              "temporal_ratio", "unet_passes", "wall_s")})
    emit(bench="zoo_quality_files", lora=lora, **result.files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
