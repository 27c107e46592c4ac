"""Build a toy-zoo SVD teacher end to end: synthetic data -> VAE -> image encoder -> UNet -> export.

    python -m tools.zoo.build_svd --config configs/toy/pretrain_svd.yaml      # one command, resumable

Stages (each resumable from ``work_dir/<stage>/``; a finished stage is skipped on re-run):

1. ``data``: ``tdd_video.data.synthetic.write_dataset`` renders mp4 clips + manifest.jsonl; they
   are read back ONCE through the project's loader (``build_video_loader``, stride 1, clip start 0,
   no flip) into memory; the last ``data.holdout`` clips are held out.
2. ``vae``: tiny AutoencoderKLTemporalDecoder (vae_stage.py); scaling_factor = 1/latent std.
3. ``image_encoder``: a tiny CLIPVisionModelWithProjection, random-init and frozen (SVD's image
   encoder is frozen too). Whether it carries information is measured, not assumed: retrieval of
   each held-out clip's last frame from its first frame by cosine similarity of embeddings.
4. ``unet``: UNetSpatioTemporalConditionModel with the SVD EDM objective through SVDFamily
   (unet_stage.py).
5. ``export``: diffusers folder at ``output`` + fixed-seed reference render + MODEL_CARD.md.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from tools.zoo.config import DataSection, ImageEncoderSection, PretrainConfig
from tools.zoo.stage import StageDir


def ensure_dataset(data: DataSection, work_dir: Path, progress: bool = True) -> Path:
    """Render the synthetic clips (skips clips already on disk); returns the manifest path."""
    from tdd_video.data.synthetic import SyntheticConfig, write_dataset
    folder = work_dir / "data"
    manifest = folder / "manifest.jsonl"
    if manifest.is_file() and sum(1 for _ in manifest.open()) == data.num_clips:
        return manifest
    cfg = SyntheticConfig(num_frames=data.num_frames, height=data.height, width=data.width)
    return write_dataset(folder, data.num_clips, data.seed, cfg, progress=progress)


def load_clips(manifest: Path, data: DataSection) -> dict:
    """All clips through build_video_loader: pixel_values [N, F, 3, H, W] in [-1, 1], fps_id, motion_bucket_id."""
    from tdd_video.data.dataset import build_video_loader
    loader = build_video_loader(dict(source="manifest", path=str(manifest), num_frames=data.num_frames,
                                     target_fps=None, stride=1, height=data.height, width=data.width,
                                     train=False, eval_start="zero", flip=False, batch_size=32,
                                     num_workers=data.num_workers, drop_last=False))
    rows = []
    for batch in loader:
        for i, path in enumerate(batch["path"]):
            rows.append((path, batch["pixel_values"][i], int(batch["fps_id"][i]), int(batch["motion_bucket_id"][i])))
    if len(rows) != data.num_clips:
        raise RuntimeError(f"loaded {len(rows)} clips from {manifest}, expected {data.num_clips}")
    rows.sort(key=lambda r: r[0])                                  # manifest order (file names are indexed)
    return {"pixel_values": torch.stack([r[1] for r in rows]).float(),
            "fps_id": torch.tensor([r[2] for r in rows]), "motion_bucket_id": torch.tensor([r[3] for r in rows])}


def split(clips: dict, holdout: int) -> tuple[dict, dict]:
    return ({k: v[:-holdout] for k, v in clips.items()}, {k: v[-holdout:] for k, v in clips.items()})


def build_image_encoder(cfg: ImageEncoderSection, seed: int):
    """(CLIPVisionModelWithProjection, CLIPImageProcessor) — random init with `seed`, frozen, eval."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from tdd_video.families.tiny import tiny_clip_image_processor
    conf = CLIPVisionConfig(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                            projection_dim=cfg.projection_dim, num_hidden_layers=cfg.num_hidden_layers,
                            num_attention_heads=cfg.num_attention_heads, image_size=cfg.image_size,
                            patch_size=cfg.patch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModelWithProjection(conf).eval().requires_grad_(False)
    return model, tiny_clip_image_processor()


@torch.no_grad()
def image_encoder_information(family, held: dict) -> dict:
    """Top-1 retrieval of each held-out clip's LAST frame given its FIRST frame (cosine of embeddings)."""
    pix = held["pixel_values"]
    a = torch.nn.functional.normalize(family.encode_image_embedding(pix[:, 0])[:, 0], dim=-1)
    b = torch.nn.functional.normalize(family.encode_image_embedding(pix[:, -1])[:, 0], dim=-1)
    sim = a @ b.T
    hits = (sim.argmax(1) == torch.arange(len(a))).float().mean().item()
    return {"retrieval_top1_first_to_last_frame": round(hits, 4), "chance": round(1.0 / len(a), 4),
            "num_clips": len(a), "embedding_std": round(float(a.std()), 4)}


def run(cfg: PretrainConfig, progress: bool = True, command: str = "") -> dict:
    """Run (or resume) every stage; returns a summary dict (also written to work_dir/summary.json)."""
    from tdd_video.families.svd import SVDFamily
    from tdd_video.families.tiny import SVD_SCHEDULER_CONFIG
    from tools.zoo.card import write_model_card
    from tools.zoo.export import folder_size_mb, save_pipeline, write_reference
    from tools.zoo.unet_stage import build_latent_cache, build_unet, train_unet
    from tools.zoo.vae_stage import train_vae

    torch.set_num_threads(cfg.threads)
    t_start = time.time()
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "resolved_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    timings = {}

    t = time.time()
    manifest = ensure_dataset(cfg.data, work, progress)
    clips = load_clips(manifest, cfg.data)
    train, held = split(clips, cfg.data.holdout)
    timings["data_s"] = round(time.time() - t, 1)

    t = time.time()
    vae, vae_info = train_vae(cfg.vae, cfg.data, train["pixel_values"], held["pixel_values"],
                              StageDir(work, "vae"), cfg.seed, progress)
    vae.requires_grad_(False).eval()
    timings["vae_s"] = round(time.time() - t, 1)

    image_encoder, feature_extractor = build_image_encoder(cfg.image_encoder, cfg.seed + 2)
    factor = 2 ** (len(cfg.vae.block_out_channels) - 1)
    unet = build_unet(cfg.unet, cfg.data, cfg.image_encoder, cfg.vae.latent_channels, factor, cfg.seed + 3)
    family = SVDFamily(unet, vae, image_encoder, feature_extractor, SVD_SCHEDULER_CONFIG)
    enc_info = image_encoder_information(family, held)

    t = time.time()
    train_cache = build_latent_cache(family, train, cfg.seed + 4)
    held_cache = build_latent_cache(family, held, cfg.seed + 5)
    timings["latent_cache_s"] = round(time.time() - t, 1)
    t = time.time()
    ema, unet_info = train_unet(cfg.unet, family, train_cache, held_cache, StageDir(work, "unet"), cfg.seed, progress)
    timings["unet_s"] = round(time.time() - t, 1)

    t = time.time()
    out = Path(cfg.output)
    save_pipeline(out, vae, image_encoder, ema, feature_extractor, SVD_SCHEDULER_CONFIG)
    reference = write_reference(out, cfg.render, cfg.data, _image_spec(cfg.render.image))
    timings["export_s"] = round(time.time() - t, 1)
    timings["total_this_run_s"] = round(time.time() - t_start, 1)
    summary = {"name": cfg.name, "output": str(out), "size_mb": round(folder_size_mb(out), 2),
               "vae": vae_info, "image_encoder": enc_info, "unet": unet_info, "reference": reference,
               "timings": timings, "command": command, "config": cfg.to_dict(),
               "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"}
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    write_model_card(out, summary)
    return summary


def _image_spec(image: str) -> str:
    """'tdd_video/assets/x.png' -> 'package:assets/x.png' (ships inside the package); other paths unchanged."""
    parts = Path(image).parts
    if "tdd_video" in parts:
        return "package:" + str(Path(*parts[parts.index("tdd_video") + 1:]))
    return str(Path(image).resolve())
