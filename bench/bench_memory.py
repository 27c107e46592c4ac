#!/usr/bin/env python
"""Peak memory of one TDD training step at REAL SVD scale on CPU: shared-base LoRA vs three copies.

The real-size SVD-xt UNet (diffusers' UNetSpatioTemporalConditionModel defaults = the SVD/SVD-xt
UNet config: 1.525 B params) is built with random bf16 weights (constructed on the meta device and
materialised directly in bf16, so construction never holds an fp32 copy). One TDD step (teacher
2B CFG forward + target forward + student forward/backward + AdamW step) runs at 64×64 px (8×8
latents), 4 frames, batch 1, through SVDFamily.denoise and the TDD method — the code training runs.

Layouts, each in its own subprocess (peak RSS = getrusage ru_maxrss of that process):
* shared: ONE base with a rank-64 LoRA "student" (tdd_video.engine.trainables, docs/math.md §9):
          teacher = adapters disabled, target = the student under no_grad.
* three_copy: teacher + target + student as separate UNets (the AnimateLCM layout), the same
          rank-64 LoRA trained on the student copy and a frozen target copy with its own adapter.

  python bench/bench_memory.py                 # both layouts, prints one JSON line each + the ratio
  python bench/bench_memory.py --layout shared # one layout in this process
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def real_svd_unet(dtype):
    """SVD-xt UNet architecture (diffusers defaults; sample_size 96, 25 frames) with random weights in `dtype`."""
    import torch
    from diffusers import UNetSpatioTemporalConditionModel
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            unet = UNetSpatioTemporalConditionModel(sample_size=96, num_frames=25)
    finally:
        torch.set_default_dtype(prev)
    unet = unet.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).mul_(fan_in ** -0.5).to(dtype)) \
                    if p.numel() < 50_000_000 else p.normal_(0, fan_in ** -0.5)
    return unet.eval()


def run_layout(layout: str, frames: int, px: int, rank: int, grad_ckpt: bool = False) -> dict:
    import torch
    from torch import nn
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from tdd_video import lora
    from tdd_video.engine.trainables import Trainables
    from tdd_video.families.svd import SVDConditioning, SVDFamily
    from tdd_video.methods import TDD, StaticRoles, TDDConfig

    t0 = time.perf_counter()
    base_rss = rss_gb()
    unet = real_svd_unet(torch.bfloat16)
    n_params = sum(p.numel() for p in unet.parameters())
    fam = SVDFamily(unet, nn.Identity(), nn.Identity(), None)
    cfg = TDDConfig(guidance_min_range=[1.0, 1.5], guidance_max_range=[2.0, 3.0], p_uncond=0.0)
    if layout == "shared":
        nets = Trainables(fam, "lora", lora_rank=rank, lora_alpha=rank, lora_preset="attn",
                          gradient_checkpointing=grad_ckpt)
        params = nets.parameters()
    else:
        if grad_ckpt:
            unet.enable_gradient_checkpointing()
        teacher = copy.deepcopy(unet).requires_grad_(False)
        lora.add_lora(unet, "student", rank=rank, alpha=rank, preset="attn")
        target = copy.deepcopy(unet).requires_grad_(False)
        params = lora.trainable_parameters(unet, "student")
        nets = StaticRoles(unet, teacher, target)
        cfg.target_ema = 0.95
    n_train = sum(p.numel() for p in params)
    built_rss = rss_gb()
    opt = torch.optim.AdamW(params, lr=1e-5)
    g = torch.Generator().manual_seed(0)
    lat = px // 8
    x0 = torch.randn(1, frames, 4, lat, lat, generator=g)
    cond = SVDConditioning(image_emb=torch.randn(1, 1, 1024, generator=g),
                           cond_latent=torch.randn(1, 4, lat, lat, generator=g),
                           added_time_ids=torch.tensor([[6.0, 127.0, 0.02]]))
    t1 = time.perf_counter()
    out = TDD(cfg, fam).training_step(x0, cond, nets, g)
    out.loss.backward()
    opt.step()
    step_s = time.perf_counter() - t1
    return {"bench": "memory", "layout": layout, "unet_params": n_params, "lora_rank": rank,
            "trainable_params": n_train, "frames": frames, "px": px, "gradient_checkpointing": grad_ckpt,
            "loss": float(out.loss),
            "rss_start_gb": round(base_rss, 3), "rss_after_build_gb": round(built_rss, 3),
            "peak_rss_gb": round(rss_gb(), 3), "step_s": round(step_s, 2),
            "total_s": round(time.perf_counter() - t0, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", choices=["shared", "three_copy"], default=None,
                   help="run one layout in this process (default: both, each in a subprocess)")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--px", type=int, default=64)
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing on the UNet")
    a = p.parse_args()
    if a.layout:
        print(json.dumps(run_layout(a.layout, a.frames, a.px, a.rank, a.grad_ckpt)), flush=True)
        return
    results = {}
    for layout in ("shared", "three_copy"):
        proc = subprocess.run([sys.executable, __file__, "--layout", layout, "--frames", str(a.frames), "--px",
                               str(a.px), "--rank", str(a.rank)] + (["--grad-ckpt"] if a.grad_ckpt else []),
                              capture_output=True, text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not line:
            print(json.dumps({"bench": "memory", "layout": layout, "error": proc.stderr[-2000:]}))
            return
        results[layout] = json.loads(line[-1])
        print(line[-1], flush=True)
    print(json.dumps({"bench": "memory_ratio", "shared_over_three_copy":
                      round(results["shared"]["peak_rss_gb"] / results["three_copy"]["peak_rss_gb"], 3),
                      "trainable_params_rank64_attn": results["shared"]["trainable_params"]}))


if __name__ == "__main__":
    main()
