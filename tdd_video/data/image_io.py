"""Conditioning images for image-to-video: the bundled sample image and robust loading/resizing.

Every adjustment made to a user's input (mode conversion, downscaling of huge images, rounding
of the output size to the VAE factor) is reported as a human-readable note instead of silently
changing the result or crashing deep in a stack trace.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tdd_video.errors import ConfigError

if TYPE_CHECKING:            # torch only where a tensor is made: loading and checking images stays light
    import torch

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
SAMPLE_IMAGE = ASSET_DIR / "sample_image.png"
MAX_SIDE = 4096          # larger inputs are downscaled first (with a note)


def make_sample_image(size: int = 256, seed: int = 0):
    """Procedural 'sunset over hills with a red ball' picture (PIL RGB, size×size). Deterministic."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    sky = (1 - y) * np.array([70, 110, 200]) + y * np.array([250, 170, 90])
    img = np.broadcast_to(sky, (size, size, 3)).copy()
    xs = np.arange(size)
    for k, (amp, base, col) in enumerate([(0.06, 0.62, (60, 120, 60)), (0.05, 0.75, (40, 90, 40))]):
        ridge = (base + amp * np.sin(xs / size * 2 * np.pi * (k + 1.3) + k)) * size
        mask = np.arange(size)[:, None] >= ridge[None, :]
        img[mask] = np.array(col) * (0.85 + 0.15 * rng.random((int(mask.sum()), 1)))
    pil = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    r = size // 9
    cx, cy = int(size * 0.35), int(size * 0.52)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(210, 40, 40), outline=(120, 20, 20), width=max(1, size // 128))
    draw.ellipse([cx - r // 2, cy - r // 2, cx - r // 5, cy - r // 5], fill=(245, 150, 150))
    draw.ellipse([int(size * 0.75), int(size * 0.12), int(size * 0.87), int(size * 0.24)], fill=(255, 235, 160))
    return pil


def load_image(path=None):
    """Open `path` (None: the bundled sample image) as PIL RGB. Returns (image, notes).

    Missing/unreadable files raise ConfigError('image', ...); grayscale, palette, CMYK and images
    with alpha are converted to RGB (alpha composited over white) with a note; of an animated GIF (or any
    multi-frame image) the first frame is used, with a note."""
    from PIL import Image, UnidentifiedImageError
    notes: list[str] = []
    if path is None:
        if not SAMPLE_IMAGE.exists():
            return make_sample_image(), ["bundled sample image missing on disk; regenerated procedurally"]
        path = SAMPLE_IMAGE
    p = Path(path)
    if not p.exists():
        raise ConfigError("image", f"file not found: {p}")
    if p.is_dir():
        raise ConfigError("image", f"{p} is a folder; pass an image file (PNG, JPEG, ...)")
    try:
        with Image.open(p) as im:
            frames = getattr(im, "n_frames", 1)
            im.seek(0)
            im.load()
            img = im.copy()
    except (UnidentifiedImageError, OSError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ConfigError("image", f"cannot read {p} as an image: {e}") from None
    if frames > 1:
        notes.append(f"{p.name} has {frames} frames (animated / multi-frame image); using its first frame")
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba).convert("RGB")
            notes.append(f"image had an alpha channel ({rgba.mode}); composited over white")
        else:
            notes.append(f"image mode {img.mode} converted to RGB")
            img = img.convert("RGB")
    return img, notes


def round_size(height: int, width: int, factor: int) -> tuple[int, int, list[str]]:
    """Round a pixel size down to multiples of the VAE factor (at least one factor). Returns (h, w, notes)."""
    notes = []
    for name, v in (("height", height), ("width", width)):
        if v < 1:
            raise ConfigError(name, f"got {v}, must be a positive number of pixels")
    h, w = max(factor, height // factor * factor), max(factor, width // factor * factor)
    if (h, w) != (height, width):
        notes.append(f"size {height}x{width} is not divisible by the VAE factor {factor}; using {h}x{w}")
    return h, w, notes


def limit_size(img):
    """Downscale an image larger than MAX_SIDE px (aspect kept) with a note. Returns (image, notes)."""
    from PIL import Image
    if max(img.size) <= MAX_SIDE:
        return img, []
    scale = MAX_SIDE / max(img.size)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    note = f"image is {img.width}x{img.height} px (huge); downscaled to {new[0]}x{new[1]} first"
    return img.resize(new, Image.Resampling.LANCZOS), [note]


def fit_image(img, height: int, width: int):
    """Aspect-preserving resize + centre crop to exactly height×width (no bars). Returns (image, notes)."""
    from PIL import Image
    img, notes = limit_size(img)
    src = img.size
    scale = max(width / img.width, height / img.height)
    rw, rh = max(width, round(img.width * scale)), max(height, round(img.height * scale))
    if (rw, rh) != img.size:
        img = img.resize((rw, rh), Image.Resampling.LANCZOS)
    left, top = (rw - width) // 2, (rh - height) // 2
    if (rw, rh) != (width, height):
        if abs(rw / rh - width / height) > 0.01:
            notes.append(f"image aspect {src[0]}:{src[1]} differs from the output {width}:{height} (width:height); "
                         "centre-cropped")
        img = img.crop((left, top, left + width, top + height))
    return img, notes


def image_to_tensor(img) -> torch.Tensor:
    """PIL RGB → float tensor [1, 3, H, W] in [-1, 1] (the families' pixel convention)."""
    import torch
    from einops import rearrange
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return rearrange(torch.from_numpy(arr), "h w c -> 1 c h w") * 2.0 - 1.0
