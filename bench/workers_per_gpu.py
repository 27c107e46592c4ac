#!/usr/bin/env python
"""How many data-loader workers per GPU the real SVD recipe needs, from counted FLOPs and measured decode rates.

  python bench/workers_per_gpu.py                       # reads docs/bench/data_real.jsonl (bench_data.py --real)
  python bench/workers_per_gpu.py --mfu 0.3 --headroom 3

1. FLOPs of one forward of the real-size SVD-xt UNet (diffusers' UNetSpatioTemporalConditionModel, default
   config) at 320×576 px (40×72 latents), batch 1, for 14 and 25 frames: counted with torch's FlopCounterMode
   under FakeTensorMode (no weights are allocated, nothing runs; 2 FLOPs per multiply-add of matmuls/convs).
2. A TDD step costs ≈ 6 forward-equivalents per clip: the student's forward + backward (≈ 3), the teacher's
   batched CFG pair (2) and the target at s (1); docs/math.md §9.
3. Step time per clip on a GPU = 6 · FLOPs / (peak bf16 dense TFLOP/s · MFU); the loader must deliver
   `headroom` × the clips the GPU consumes. Workers = ceil(headroom · clips/s needed / clips per worker-CPU-second),
   the latter measured by `bench/bench_data.py --real` (1080p H.264 → 320×576, decode-time downscaling on).
Prints one JSON line per (frames, GPU, reader).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

GPUS = {"A100": 312.0, "H100": 989.0}         # dense bf16 peak, TFLOP/s (vendor data sheets)
FORWARDS_PER_STEP = 6


def unet_tflops(frames: int, height: int = 320, width: int = 576) -> float:
    """Counted TFLOPs of one real-size SVD-xt UNet forward (batch 1), without allocating the weights."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode
    with FakeTensorMode():
        unet = UNetSpatioTemporalConditionModel()
        x = torch.randn(1, frames, 8, height // 8, width // 8)
        with FlopCounterMode(display=False) as counter:
            unet(x, torch.tensor([1.0]), torch.randn(1, 1, 1024), added_time_ids=torch.randn(1, 3))
    return counter.get_total_flops() / 1e12


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="docs/bench/data_real.jsonl", help="JSON lines of bench_data.py --real")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed on the GPU (default 0.4)")
    p.add_argument("--headroom", type=float, default=2.0, help="loader speed / consumption to provide (default 2)")
    args = p.parse_args(argv)
    rates = {}
    for line in Path(args.rates).read_text().splitlines():
        r = json.loads(line)
        if r.get("bench") == "data_real_clips_per_s" and r.get("decode_resize") and r.get("workers") == 1:
            rates[(r["frames"], r["backend"])] = r["clips_per_worker_cpu_s"]
    for frames in sorted({f for f, _ in rates}):
        tflop = unet_tflops(frames)
        for gpu, peak in GPUS.items():
            step_s = FORWARDS_PER_STEP * tflop / (peak * args.mfu)
            for backend in ("pyav", "decord"):
                per_worker = rates.get((frames, backend))
                if per_worker is None:
                    continue
                need = 1.0 / step_s
                print(json.dumps({"bench": "workers_per_gpu", "frames": frames, "size": "320x576",
                                  "unet_tflop_per_forward": round(tflop, 2), "forwards_per_step": FORWARDS_PER_STEP,
                                  "gpu": gpu, "mfu": args.mfu, "step_s_per_clip": round(step_s, 3),
                                  "clips_per_s_needed": round(need, 2), "reader": backend,
                                  "clips_per_worker_cpu_s": per_worker, "headroom": args.headroom,
                                  "workers": math.ceil(args.headroom * need / per_worker)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
