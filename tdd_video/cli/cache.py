"""Latent caches: encode a dataset once with the model's VAE and conditioning encoders.

  tdd-cache-video  --model DIR_OR_ID --data MANIFEST_OR_FOLDER --out DIR [--clips-per-video N]   (SVD)
  tdd-cache-images --model DIR_OR_ID_OR_ZOO --data FOLDER_MANIFEST_OR_SHARDS --out DIR           (SDXL)

Both resume an interrupted run (finished shards are skipped); the layouts are described in
tdd_video/data/cache.py and tdd_video/data/image_cache.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tdd_video.cli.flags import Parser, data_flag_error
from tdd_video.data.config import VideoDataConfig
from tdd_video.errors import ConfigError
from tdd_video.zoo import is_zoo_name, resolve_model

DTYPE_NAMES = ["fp16", "bf16", "fp32"]      # tdd_video.data.cache.DTYPES; torch loads only after the flags are checked


def _check_exists(path: str) -> None:
    if not Path(path).exists():
        raise ConfigError("data.path", f"not found: {path}")


def _device(name: str | None) -> str:
    import torch
    return name or ("cuda" if torch.cuda.is_available() else "cpu")

VIDEO_DOC = "Latent cache: encode each clip once with the family's VAE and image encoder."


def main_video(argv=None) -> int:
    p = Parser(prog="tdd-cache-video", description=VIDEO_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Store layout and the first-frame choice: see tdd_video/data/cache.py.")
    p.add_argument("--model", required=True, help="SVD diffusers folder, hub id, or 'tiny' (random test model)")
    p.add_argument("--data", required=True, help="folder of videos, CSV/JSONL manifest or WebVid CSV")
    p.add_argument("--out", required=True, help="output folder (resumes if it already holds shards)")
    p.add_argument("--dtype", default="fp16", choices=DTYPE_NAMES, help="storage dtype of latents/embeddings")
    p.add_argument("--shard-size", type=int, default=64, help="samples per safetensors shard")
    p.add_argument("--config", help="YAML file whose 'data:' section (or top level) is a VideoDataConfig")
    p.add_argument("--num-frames", type=int), p.add_argument("--target-fps", type=float)
    p.add_argument("--stride", type=int), p.add_argument("--height", type=int), p.add_argument("--width", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clips-per-video", type=int, default=1,
                   help="clips cached per video: the centre clip + N-1 randomly started/cropped/flipped ones "
                        "(default 1)")
    p.add_argument("--motion-bucket", choices=["manifest", "estimate"],
                   help="motion_bucket_id per clip: the manifest's value / default (manifest), or estimated from the "
                        "frames and calibrated (estimate; docs/math.md §13). Default: the config's data.motion_bucket")
    p.add_argument("--motion-calibration", metavar="FILE", help="estimate: a fixed calibration JSON "
                   "(default: the data's own, computed once and stored next to the data)")
    p.add_argument("--motion-percentiles", type=float, nargs=3, metavar=("P5", "P50", "P95"),
                   help="estimate: fixed calibration, raw motion (frame diagonals per second) at these percentiles")
    p.add_argument("--teacher-samples", type=int, default=0, metavar="STEPS",
                   help="store the teacher's STEPS-step sample (Karras Euler, frame-wise CFG --teacher-guidance) "
                        "conditioned on each clip's first frame, fps and motion, instead of the clip's latents: "
                        "training states from the teacher's distribution (docs/math.md §3.8). 0 = the clips' latents")
    p.add_argument("--teacher-guidance", type=float, nargs=2, default=[1.0, 3.0], metavar=("GMIN", "GMAX"))
    p.add_argument("--encode-batch", type=int, default=8, help="clips encoded / sampled together (default 8)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--model-dtype", default="fp32", choices=DTYPE_NAMES, help="dtype of the VAE/CLIP when encoding")
    args = p.parse_args(argv)
    d = {}
    if args.config:
        from tdd_video.engine.config import read_yaml
        try:
            loaded = read_yaml(args.config)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        d = dict(loaded.get("data", loaded))
    d.update(path=args.data, source=d.get("source", "auto"))
    for key in ("num_frames", "target_fps", "height", "width"):
        if getattr(args, key) is not None:
            d[key] = getattr(args, key)
    if args.stride is not None:
        d.update(stride=args.stride, target_fps=None)
    if args.motion_bucket is not None:
        d["motion_bucket"] = args.motion_bucket
    if args.motion_calibration is not None:
        d["motion_calibration"] = args.motion_calibration
    if args.motion_percentiles is not None:
        d["motion_percentiles"] = list(args.motion_percentiles)
    try:
        cfg = VideoDataConfig.from_dict(d).validate()
        _check_exists(args.data)
    except ConfigError as e:
        print(f"error: {data_flag_error(e, p)}", file=sys.stderr)
        return 2
    from tdd_video.data.cache import DTYPES, build_cache, video_encoder
    from tdd_video.families import load_family
    from tdd_video.sampling.teacher_data import teacher_sample_encoder
    try:
        model = str(resolve_model(args.model)) if is_zoo_name(args.model) else args.model
        family = load_family("svd", model, dtype=DTYPES[args.model_dtype], device=_device(args.device))
        if args.teacher_samples > 0:
            encode = teacher_sample_encoder(family, args.teacher_samples, tuple(args.teacher_guidance))
            source = f"teacher_euler{args.teacher_samples}_cfg{args.teacher_guidance[0]:g}-{args.teacher_guidance[1]:g}"
        else:
            encode, source = video_encoder(family), "vae"
        index = build_cache(encode, cfg, args.out, args.dtype, args.shard_size, args.seed, args.model,
                            clips_per_video=args.clips_per_video, latent_source=source,
                            encode_batch=max(1, args.encode_batch))
    except ConfigError as e:
        print(f"error: {data_flag_error(e, p)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = json.loads(index.read_text())
    print(f"wrote {info['num_samples']} clips in {len(info['shards'])} shards to {args.out} "
          f"({info['num_failed']} videos skipped); index: {index}")
    if "motion" in info:
        n = info["motion"]["calibration"]["num_clips"]
        print(f"motion_bucket_id: estimated from the frames, calibration on {n} clips (docs/math.md §13)")
    return 0



def main_images(argv=None) -> int:
    p = Parser(prog="tdd-cache-images",
                                description="Build the SDXL latent + text-embedding cache (resumable).")
    p.add_argument("--model", required=True, help="diffusers SDXL folder, hub id, zoo name or 'tiny'")
    p.add_argument("--data", required=True, help="image folder, CSV/JSONL manifest, or .tar shards")
    p.add_argument("--out", required=True)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--dtype", default="fp16", choices=DTYPE_NAMES)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    from tdd_video.data.images import ImageDataConfig
    try:
        cfg = ImageDataConfig(path=a.data, height=a.height, width=a.width).validate()
        if not any(c in a.data for c in "*?{["):        # shard patterns are expanded by the loader
            _check_exists(a.data)
    except ConfigError as e:
        print(f"error: {data_flag_error(e, p)}", file=sys.stderr)
        return 2
    from tdd_video.data.image_cache import build_image_cache, image_encoder
    from tdd_video.families import load_family
    try:
        model = str(resolve_model(a.model)) if is_zoo_name(a.model) else a.model
        family = load_family("sdxl", model, device=a.device)
        path = build_image_cache(image_encoder(family), cfg, a.out, a.dtype, a.shard_size, a.seed, a.model)
    except ConfigError as e:
        print(f"error: {data_flag_error(e, p)}", file=sys.stderr)
        return 2
    print(f"cache ready: {path} ({json.loads(path.read_text())['total']} samples)")
    return 0

