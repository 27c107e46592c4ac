"""Tiny SVD / SDXL model sizes and UNet speed on CPU. Prints one JSON line per result.

    OMP_NUM_THREADS=1 python bench/bench_tiny_models.py [--threads 1] [--repeats 20]
"""
import argparse
import json
import time

import torch

from tdd_video.families import load_family


def timed(fn, repeats):
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    svd = load_family("svd", "tiny")
    first = torch.rand(1, 3, 64, 64) * 2 - 1
    cond = svd.encode_conditioning({"first_frame": first}, train=False)
    x = torch.randn(1, 8, 4, 16, 16)
    u = torch.tensor([0.5], dtype=torch.float64)
    for name in ("unet", "vae", "image_encoder"):
        n = sum(p.numel() for p in getattr(svd, name).parameters())
        print(json.dumps({"model": "tiny_svd", "component": name, "params": n}))
    with torch.no_grad():
        ms = timed(lambda: svd.denoise(x, u, cond), args.repeats)
    print(json.dumps({"model": "tiny_svd", "what": "unet forward (denoise), 1x8 frames 64x64 px",
                      "threads": args.threads, "ms": round(ms, 2)}))

    def fwd_bwd():
        svd.denoise(x, u, cond).square().mean().backward()
    print(json.dumps({"model": "tiny_svd", "what": "unet forward+backward, 1x8 frames 64x64 px",
                      "threads": args.threads, "ms": round(timed(fwd_bwd, args.repeats), 2)}))
    sdxl = load_family("sdxl", "tiny")
    c2 = sdxl.encode_conditioning({"caption": ["a red ball"]})
    x2 = torch.randn(1, 4, 16, 16)
    print(json.dumps({"model": "tiny_sdxl", "component": "unet",
                      "params": sum(p.numel() for p in sdxl.unet.parameters())}))
    with torch.no_grad():
        ms = timed(lambda: sdxl.denoise(x2, u, c2), args.repeats)
    print(json.dumps({"model": "tiny_sdxl", "what": "unet forward (denoise), 1 image 64x64 px",
                      "threads": args.threads, "ms": round(ms, 2)}))


if __name__ == "__main__":
    main()
