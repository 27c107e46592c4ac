"""Outputs of the comparison harness: side-by-side grid video, labelled frame strip, metrics table.

Videos are float tensors [F, 3, H, W] in [-1, 1]. A grid has one row per (image, seed) and one
column per contender; the strip shows up to `max_frames` evenly spaced frames per contender.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tdd_video.data.video_io import to_uint8_frames
from tdd_video.eval.metrics import format_metric, json_safe

Tensor = torch.Tensor

# (json key, Markdown header, digits) of the metrics table, in order
COLUMNS = [
    ("unet_passes", "UNet passes", 4),
    ("wall_s", "wall s/video", 3),
    ("latent_mse", "latent MSE ↓", 4),
    ("psnr_db", "PSNR dB ↑", 4),
    ("ssim", "SSIM ↑", 4),
    ("temporal_change", "frame Δ", 4),
    ("temporal_ratio", "frame Δ ×teacher", 3),
    ("sharpness", "sharpness", 4),
    ("sharpness_ratio", "sharpness ×teacher", 3),
    ("first_frame_psnr", "frame-0 PSNR dB ↑", 4),
    ("fvd", "FVD ↓", 4),
]


def grid_video(rows: list[list[Tensor]], pad: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile videos (rows × cols, each [F, 3, H, W], same size) into one video [F, 3, H', W'] with
    `pad`-pixel separators (white by default)."""
    if not rows or not rows[0]:
        raise ValueError("grid_video: nothing to tile")
    f, c, h, w = rows[0][0].shape
    n_r, n_c = len(rows), max(len(r) for r in rows)
    out = torch.full((f, c, n_r * h + (n_r + 1) * pad, n_c * w + (n_c + 1) * pad), pad_value)
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if v.shape != (f, c, h, w):
                raise ValueError(f"grid_video: video ({i},{j}) has shape {tuple(v.shape)}, expected {(f, c, h, w)}")
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[:, :, y:y + h, x:x + w] = v.float().cpu()
    return out


def frame_strip(videos: list[Tensor], labels: list[str], max_frames: int = 8, pad: int = 2, label_width: int = 150):
    """PIL image: one row per video with its label on the left and up to `max_frames` evenly spaced frames
    (frames under 128 px are enlarged by an integer factor, nearest-neighbour)."""
    from PIL import Image, ImageDraw

    f, _, h, w = videos[0].shape
    up = max(1, 128 // max(h, w))                 # small (toy) frames are enlarged, nearest-neighbour
    h, w = h * up, w * up
    n = min(max_frames, f)
    idx = sorted({round(i * (f - 1) / max(n - 1, 1)) for i in range(n)})
    width = label_width + len(idx) * (w + pad) + pad
    height = len(videos) * (h + pad) + pad
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for r, (v, label) in enumerate(zip(videos, labels)):
        frames = to_uint8_frames(v[idx].clamp(-1, 1))
        y = pad + r * (h + pad)
        draw.text((4, y + max(0, h // 2 - 6)), label, fill=(0, 0, 0))
        for k, fr in enumerate(frames):
            tile = Image.fromarray(fr)
            if up > 1:
                tile = tile.resize((w, h), Image.Resampling.NEAREST)
            img.paste(tile, (label_width + pad + k * (w + pad), y))
    return img


def markdown_table(rows: list[dict], reference: str) -> str:
    """Markdown table: one row per contender (means over images × seeds); ∞ for identical videos."""
    head = "| contender | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(COLUMNS)
    lines = [head, sep]
    for r in rows:
        name = r["contender"] + (" (reference)" if r["contender"] == reference else "")
        cells = [format_metric(r.get(k), d) for k, _, d in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(out_dir: Path, rows: list[dict], per_sample: list[dict], meta: dict) -> tuple[Path, Path]:
    """metrics.md (table + how it was made) and metrics.json (table, per-sample values, settings)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = meta["reference"]
    md = [f"# Few-step comparison ({meta['num_images']} image(s) × {len(meta['seeds'])} seed(s), "
          f"{meta['frames']} frames at {meta['height']}×{meta['width']})", "",
          markdown_table(rows, ref), "",
          f"Reference for MSE / PSNR / SSIM / ratios: `{ref}` from the same initial noise and conditioning. "
          "UNet passes count every sample-batch evaluation of a UNet (a CFG step counts 2). "
          "frame Δ = mean |x_(f+1) − x_f| (lower = smoother); sharpness = mean squared Laplacian of the luma. "
          "∞ = identical to the reference; — = not measured."]
    if meta.get("loadavg_1min_at_end") is not None:
        md += ["", f"Wall time measured with {meta['torch_threads']} torch thread(s); 1-min load average at the end: "
                   f"{meta['loadavg_1min_at_end']} (times are only comparable on an otherwise idle machine)."]
    if meta.get("fvd_note"):
        md += ["", meta["fvd_note"]]
    for note in meta.get("notes", []):
        md.append(f"- note: {note}")
    md_path, json_path = out_dir / "metrics.md", out_dir / "metrics.json"
    md_path.write_text("\n".join(md) + "\n")
    json_path.write_text(json.dumps(json_safe({"table": rows, "per_sample": per_sample, "settings": meta}), indent=2))
    return md_path, json_path
