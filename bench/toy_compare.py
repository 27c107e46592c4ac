#!/usr/bin/env python
"""The toy result of issue 6: distill the zoo teacher with TDD and with AnimateLCM at the same budget,
then compare both against the teacher on held-out images and seeds. One JSON line per result.

  OMP_NUM_THREADS=2 python bench/toy_compare.py                       # zoo teacher 'toy-svd'
  python bench/toy_compare.py --model runs/my_teacher --out runs/toy_compare --set train.max_steps=60

Both recipes are the shipped zoo-student configs (configs/toy/tdd_svd_zoo.yaml,
animatelcm_svd_zoo.yaml: the teacher's own clips, LoRA rank 8, the same train.max_steps ×
data.batch_size; `--recipes tiny` uses the *_svd_tiny.yaml pair on synthetic 64 px clips) with
model.path = the teacher; wall time of each training run is measured here. The comparison uses \
infer/compare.py's logic with held-out seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def emit(**kw) -> None:
    from tdd_video.eval.metrics import json_safe
    print(json.dumps(json_safe(kw)), flush=True)


def train_one(recipe: str, model: str, out: Path, overrides: list[str]) -> tuple[str, dict]:
    from tdd_video.engine.config import load_config
    from tdd_video.engine.trainer import train
    cfg = load_config(ROOT / recipe, [f"model.path={model}", f"run.output_dir={out}", "train.progress=false",
                                      "validation.every=0", *overrides])
    start = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - start
    lora = result["export"].get("lora")
    emit(bench="toy_train", method=cfg.method_name, steps=cfg.train.max_steps, batch=cfg.data.batch_size,
         grad_accum=cfg.train.grad_accum, wall_s=round(wall, 1), loss_first=result["losses"][0],
         loss_last=result["losses"][-1], lora=lora)
    return lora, result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy-svd", help="teacher: zoo name or diffusers folder")
    p.add_argument("--out", default="runs/toy_compare")
    p.add_argument("--recipes", choices=("zoo", "tiny"), default="zoo", help="which recipe pair to train")
    p.add_argument("--seeds", nargs="+", type=int, default=[100, 101])
    p.add_argument("--num-images", type=int, default=3)
    p.add_argument("--contenders", nargs="+", default=["teacher@25", "tdd@4", "tdd@4+refine", "tdd@8",
                                                       "animatelcm@4", "animatelcm@8"])
    p.add_argument("--set", dest="overrides", nargs="*", default=[],
                   help="extra dotted overrides for BOTH recipes (e.g. --set train.max_steps=60)")
    args = p.parse_args(argv)
    from tdd_video.eval.compare import CompareConfig, resolve_model_name, run_compare
    model = resolve_model_name(args.model)
    if args.model == "toy-svd" and model == "toy-svd":
        from tdd_video import zoo
        model = str(zoo.resolve_model("toy-svd"))
    out = Path(args.out)
    suffix = "zoo" if args.recipes == "zoo" else "tiny"
    tdd_lora, _ = train_one(f"configs/toy/tdd_svd_{suffix}.yaml", model, out / "tdd", args.overrides)
    alcm_lora, _ = train_one(f"configs/toy/animatelcm_svd_{suffix}.yaml", model, out / "animatelcm", args.overrides)
    cfg = CompareConfig(contenders=args.contenders, model=model, tdd_lora=tdd_lora, animatelcm_lora=alcm_lora,
                        seeds=args.seeds, num_default_images=args.num_images, out=str(out / "compare"),
                        progress=False)
    result = run_compare(cfg)
    for row in result.rows:
        emit(bench="toy_compare", **row)
    emit(bench="toy_compare_files", **result.files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
