"""Distill a TAESD-architecture decoder (diffusers ``AutoencoderTiny``) for the toy SVD teacher's latent space.

    python -m tools.zoo.tiny_decoder [--out tdd_video/zoo/toy-svd/tiny_decoder] [--steps 3000] [--seed 0]

What TAESD is for SD/SVD latents, at toy size: a small frame-by-frame decoder trained to reproduce the
teacher VAE's decoder, so that ``--vae-decoder`` (docs/math.md §14) can be tried, and its fidelity cost
measured, on the toy.
1. renders synthetic clips (``tdd_video.data.synthetic``, a dataset seed the zoo never trained on), encodes
   them with the toy VAE (diffusion latents, × scaling factor) and jitters the latents a little (sampled
   latents sit near, not on, the encoder's outputs);
2. regresses the tiny decoder's frames onto the toy VAE's temporal-decoder frames of the same latents
   (L1 + L2 in pixels), decoder weights only (the encoder half is never used for decoding);
3. measures on held-out clips (another dataset seed): PSNR of the tiny decoder's frames vs the temporal
   decoder's (the fidelity cost of switching decoders), both decoders' PSNR vs the source frames, and the
   decode-time ratio; writes the folder (``save_pretrained``) and ``MODEL_CARD.md`` with those numbers.
Deterministic for a seed. Prints one JSON line with the measurements.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
TRAIN_SEED, HELDOUT_SEED = 7001, 7002          # synthetic dataset seeds (the zoo's own data used another one)


def tiny_decoder_config(latent_channels: int, factor: int, width: int = 32) -> dict:
    """AutoencoderTiny kwargs with log2(factor) upsamplings (one decoder block per resolution)."""
    n = int(round(math.log2(factor))) + 1
    if 2 ** (n - 1) != factor:
        raise ValueError(f"spatial factor {factor} is not a power of 2")
    return {"encoder_block_out_channels": (width,) * n, "decoder_block_out_channels": (width,) * n,
            "num_encoder_blocks": (1,) * n, "num_decoder_blocks": (1,) * n, "latent_channels": latent_channels,
            "scaling_factor": 1.0}


@torch.no_grad()
def make_pairs(family, num_clips: int, seed: int, jitter: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(latents [N, F, C, h, w], temporal-decoder frames [N, F, 3, H, W], source frames) for synthetic clips."""
    from tdd_video.data.synthetic import SyntheticConfig, render_clip
    size = int(family.vae.config.sample_size)
    syn = SyntheticConfig(num_frames=8, height=size, width=size)
    frames = torch.stack([torch.from_numpy(render_clip(syn, seed, i)[0]) for i in range(num_clips)])
    pix = frames.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0
    g = torch.Generator().manual_seed(seed)
    lat = torch.cat([family.encode_latents({"pixel_values": pix[i:i + 32]}, generator=g)
                     for i in range(0, num_clips, 32)])
    lat = lat + jitter * lat.std() * torch.randn(lat.shape, generator=g)
    ref = torch.cat([family.decode_latents(lat[i:i + 32]) for i in range(0, num_clips, 32)])
    return lat, ref.clamp(-1, 1), pix


def clip_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of [-1, 1] clips [N, F, 3, H, W] (eval.metrics.psnr per clip), averaged over clips."""
    from tdd_video.eval.metrics import psnr
    return sum(psnr(x, y) for x, y in zip(a, b)) / len(a)


@torch.no_grad()
def evaluate(tiny, family, heldout: int) -> dict:
    """Fidelity and speed of `tiny` against the family's own VAE decoder on `heldout` held-out clips. The tiny
    decoder decodes through the family exactly as `--vae-decoder` does (families.decoders)."""
    from tdd_video.eval.metrics import temporal_change
    from tdd_video.families.base import using_module
    lat_h, ref_h, src_h = make_pairs(family, heldout, HELDOUT_SEED, 0.0)
    t = time.perf_counter()
    for _ in range(3):
        family.decode_latents(lat_h)
    t_vae = time.perf_counter() - t
    with using_module(family, "decoder", tiny):
        out_h = family.decode_latents(lat_h).clamp(-1, 1)
        t = time.perf_counter()
        for _ in range(3):
            family.decode_latents(lat_h)
        t_tiny = time.perf_counter() - t
    return {"tool": "tiny_decoder", "heldout_clips": heldout,
            "psnr_tiny_vs_temporal_db": round(clip_psnr(out_h, ref_h), 2),
            "psnr_temporal_vs_source_db": round(clip_psnr(ref_h, src_h), 2),
            "psnr_tiny_vs_source_db": round(clip_psnr(out_h, src_h), 2),
            "frame_change_tiny_over_temporal": round(temporal_change(out_h) / temporal_change(ref_h), 3),
            "frame_change_temporal_over_source": round(temporal_change(ref_h) / temporal_change(src_h), 3),
            "decode_speedup": round(t_vae / t_tiny, 2),
            "decoder_params": sum(p.numel() for p in tiny.decoder.parameters()),
            "vae_decoder_params": sum(p.numel() for p in family.vae.decoder.parameters())}


def train(args) -> dict:
    from diffusers import AutoencoderTiny
    from tqdm.auto import tqdm

    from tdd_video.families import load_family
    from tdd_video.families.decoders import decoder_factor
    from tdd_video.zoo import zoo_path
    torch.manual_seed(args.seed)
    family = load_family("svd", str(zoo_path("toy-svd")))
    factor = decoder_factor(family.vae)
    tiny = AutoencoderTiny(**tiny_decoder_config(int(family.vae.config.latent_channels), factor, args.width))
    tiny.requires_grad_(False).decoder.requires_grad_(True)
    t0 = time.time()
    lat, ref, _ = make_pairs(family, args.clips, TRAIN_SEED, args.jitter)
    x, y = lat.flatten(0, 1), ref.flatten(0, 1)
    opt = torch.optim.AdamW(tiny.decoder.parameters(), lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr * 0.05)
    g = torch.Generator().manual_seed(args.seed)
    bar = tqdm(range(args.steps), desc="tiny decoder", disable=not args.progress)
    for _ in bar:
        idx = torch.randint(0, x.shape[0], (args.batch,), generator=g)
        out = tiny.decode(x[idx]).sample
        loss = F.l1_loss(out, y[idx]) + F.mse_loss(out, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    tiny.eval()
    build = {"steps": args.steps, "clips": args.clips, "batch": args.batch, "train_s": round(time.time() - t0, 1),
             "seed": args.seed}
    out = Path(args.out)
    tiny.save_pretrained(out)
    (out / "build.json").write_text(json.dumps(build, indent=1))
    return measure(out, family, args.heldout)


def measure(out: Path, family, heldout: int) -> dict:
    """Evaluate the decoder saved in `out` and (re)write its MODEL_CARD.md; returns the JSON row."""
    from diffusers import AutoencoderTiny
    tiny = AutoencoderTiny.from_pretrained(out).eval()
    build = json.loads((out / "build.json").read_text())
    row = {**evaluate(tiny, family, heldout), **build}
    (out / "MODEL_CARD.md").write_text(card(row, out))
    return row


def card(row: dict, out: Path) -> str:
    try:
        out = out.resolve().relative_to(ROOT)
    except ValueError:
        pass
    cmd = (f"python -m tools.zoo.tiny_decoder --out {out} --steps {row['steps']} --clips {row['clips']} "
           f"--seed {row['seed']}")
    return f"""# toy-svd tiny decoder (TAESD architecture)

A diffusers `AutoencoderTiny` whose decoder was distilled from the toy SVD teacher's temporal VAE decoder:
it reads the same scaled latents and decodes frame by frame. Use it with
`python infer/img2vid.py --steps 4 --vae-decoder {out}` (docs/math.md §14). Only the decoder half is
trained; the encoder half is random and unused.

Measured on {row['heldout_clips']} held-out synthetic clips (dataset seed {HELDOUT_SEED}; training used seed
{TRAIN_SEED}), 8 frames each:

| measure | value |
|---|---|
| PSNR, tiny decoder vs the temporal VAE decoder (same latents) | {row['psnr_tiny_vs_temporal_db']} dB |
| PSNR vs the source frames: temporal VAE / tiny decoder | {row['psnr_temporal_vs_source_db']} / \
{row['psnr_tiny_vs_source_db']} dB |
| mean frame-to-frame change, tiny / temporal decoder (flicker; temporal / source: \
{row['frame_change_temporal_over_source']}) | {row['frame_change_tiny_over_temporal']} |
| decode time, temporal VAE / tiny decoder (toy size, CPU) | {row['decode_speedup']}× |
| decoder parameters: tiny / temporal VAE | {row['decoder_params']:,} / {row['vae_decoder_params']:,} |

Built with `{cmd}` ({row['train_s']} s, {row['steps']} steps of {row['batch']} frames); re-measured with
`python -m tools.zoo.tiny_decoder --out {out} --eval-only`.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "tdd_video" / "zoo" / "toy-svd" / "tiny_decoder"))
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (default 3000)")
    p.add_argument("--clips", type=int, default=512, help="training clips of 8 frames (default 512)")
    p.add_argument("--heldout", type=int, default=64, help="held-out clips for the measurements (default 64)")
    p.add_argument("--batch", type=int, default=64, help="frames per step (default 64)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--jitter", type=float, default=0.05, help="latent noise, × the latents' std (default 0.05)")
    p.add_argument("--width", type=int, default=32, help="channels of every decoder block (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--eval-only", action="store_true", help="re-measure the decoder in --out and rewrite its card")
    args = p.parse_args(argv)
    for key in ("steps", "clips", "heldout", "batch", "width"):
        if getattr(args, key) < 1:
            p.error(f"--{key} must be >= 1, got {getattr(args, key)}")
    if args.eval_only:
        from tdd_video.families import load_family
        from tdd_video.zoo import zoo_path
        out = Path(args.out)
        if not (out / "build.json").is_file():
            p.error(f"--eval-only: {out} holds no decoder built by this tool (no build.json)")
        torch.manual_seed(args.seed)
        print(json.dumps(measure(out, load_family("svd", str(zoo_path("toy-svd"))), args.heldout)), flush=True)
        return 0
    print(json.dumps(train(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
