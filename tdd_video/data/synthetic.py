"""Synthetic image-to-video clips with real structure, for the toy model zoo and tests.

Three kinds of clip, each a pure function of (seed, clip index) — ``numpy.random.Generator``
seeded with ``[seed, index]``, so any clip can be regenerated alone and a resumed run writes the
same bytes:

* ``shapes``: 1–4 coloured circles / squares / triangles moving with constant velocity, bouncing
  off the walls and rotating, over a two-colour gradient with a faint sinusoidal or photographic
  (CC0 texture) pattern;
* ``photo_pan``: a camera pan + zoom over a public-domain / CC0 photo that ships inside
  scikit-image (``skimage/data``; see PHOTOS for files and licences) — only if it is installed;
* ``shapes_over_photo``: moving shapes over a slowly panning photo.

Shapes are rendered at ``supersample``× resolution and box-filtered down (anti-aliased edges).
Motion is specified in frame widths per *second* and divided by the clip's fps, so the fps
conditioning carries real information (fast fps → small per-frame steps). The clip's
``motion_bucket_id`` is computed from the true per-frame displacement (SVD's micro-conditioning
in 0..255): ``round(255 · min(d / MOTION_FULL_SCALE, 1))`` with ``d`` the mean displacement per
frame in frame widths (object centres for shapes, the camera for pans; 0.1 widths/frame = 255).

``write_dataset`` writes real mp4 files through ``tdd_video.data.video_io.write_video`` and a
``manifest.jsonl`` (``path`` relative to the manifest, ``fps``, ``motion_bucket_id``, ``caption``,
``kind``, ``num_frames``) that the project's video loader reads like any user's data.

CLI: ``tdd-synthetic-clips --out DIR --num N --seed S --frames F --size H W``.
"""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from tdd_video.data.video_io import write_video
from tdd_video.errors import ConfigError, check_range

MOTION_FULL_SCALE = 0.1          # frame widths per frame that map to motion_bucket_id 255
SHAPE_KINDS = ("circle", "square", "triangle")
CLIP_KINDS = ("shapes", "photo_pan", "shapes_over_photo")
# RGB photos in scikit-image's wheel with their licences (from the skimage.data docstrings).
PHOTOS = {
    "astronaut.png": "public domain (NASA, Eileen Collins)",
    "coffee.png": "CC0 (Rachel Michetti, courtesy of Pikolo Espresso Bar)",
    "chelsea.png": "CC0 (Stefan van der Walt)",
    "rocket.jpg": "public domain (SpaceX, DSCOVR launch)",
    "hubble_deep_field.jpg": "public domain (NASA, Hubble eXtreme Deep Field)",
    "retina.jpg": "CC0 1.0 (Mikael Häggström, Wikimedia)",
}
# Greyscale CC0 textures (cc0textures.com / DeviantArt CC0), tinted and used as faint backgrounds.
TEXTURES = {"brick.png": "CC0 (cc0textures.com Bricks25)", "grass.png": "CC0 (DeviantArt, linolafett)",
            "gravel.png": "CC0 (cc0textures.com Gravel04)"}


@dataclass(frozen=True)
class SyntheticConfig:
    """What clips to render. Sizes in pixels; speeds in frame widths per second."""

    num_frames: int = 8
    height: int = 32
    width: int = 32
    fps_choices: tuple[int, ...] = (6, 8, 10, 12)
    kind_weights: tuple[float, float, float] = (0.5, 0.25, 0.25)   # shapes, photo_pan, shapes_over_photo
    max_shapes: int = 4
    speed_range: tuple[float, float] = (0.05, 0.6)
    supersample: int = 4

    def __post_init__(self):
        check_range("synthetic.num_frames", self.num_frames, 1, 10_000)
        check_range("synthetic.height", self.height, 8, 4096)
        check_range("synthetic.width", self.width, 8, 4096)
        check_range("synthetic.max_shapes", self.max_shapes, 1, 64)
        check_range("synthetic.supersample", self.supersample, 1, 16)
        if not self.fps_choices or min(self.fps_choices) <= 0:
            raise ConfigError("synthetic.fps_choices", f"need positive frame rates, got {self.fps_choices}")
        if len(self.kind_weights) != 3 or min(self.kind_weights) < 0 or sum(self.kind_weights) <= 0:
            raise ConfigError("synthetic.kind_weights", f"need 3 non-negative weights, got {self.kind_weights}")


# --------------------------------------------------------------------------------- assets
def skimage_data_dir() -> Path | None:
    """scikit-image's bundled data folder, or None when scikit-image is not installed."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return folder if folder.is_dir() else None


@lru_cache(maxsize=None)
def _load_image(name: str, gray: bool) -> np.ndarray | None:
    folder = skimage_data_dir()
    if folder is None or not (folder / name).is_file():
        return None
    from PIL import Image
    with Image.open(folder / name) as im:
        im = im.convert("L" if gray else "RGB")
        im.thumbnail((256, 256), Image.Resampling.LANCZOS)   # plenty for ≤ 64 px crops
        return np.asarray(im, dtype=np.float32) / 255.0


def available_photos() -> list[str]:
    """Names of the PHOTOS present on this machine (empty without scikit-image)."""
    return [n for n in PHOTOS if _load_image(n, False) is not None]


def available_textures() -> list[str]:
    return [n for n in TEXTURES if _load_image(n, True) is not None]


# ------------------------------------------------------------------------------- rendering
def _crop_resize(img: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """Bilinear crop of float image [h, w, C] to `box` (x0, y0, x1, y1) resampled to size (H, W)."""
    from PIL import Image
    out = []
    for c in range(img.shape[2]):
        ch = Image.fromarray(img[..., c], mode="F")
        out.append(np.asarray(ch.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box), np.float32))
    return np.stack(out, -1)


def _gradient_background(rng: np.random.Generator, hs: int, ws: int) -> np.ndarray:
    """Two-colour linear gradient at a random angle, plus a faint pattern: float [hs, ws, 3]."""
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float32)
    t = ((xx / ws - 0.5) * math.cos(ang) + (yy / hs - 0.5) * math.sin(ang)) + 0.5
    bg = c0 + np.clip(t, 0, 1)[..., None] * (c1 - c0)
    textures = available_textures()
    if textures and rng.uniform() < 0.5:
        tex = _load_image(textures[rng.integers(len(textures))], True)[..., None]
        s = rng.uniform(0.3, 0.8) * min(tex.shape[:2])
        x0, y0 = rng.uniform(0, tex.shape[1] - s), rng.uniform(0, tex.shape[0] - s)
        patch = _crop_resize(tex, (x0, y0, x0 + s, y0 + s), (hs, ws))
        bg = bg + rng.uniform(0.1, 0.3) * (patch - patch.mean())
    else:
        freq, phase = rng.uniform(1, 4, 2), rng.uniform(0, 2 * math.pi, 2)
        wave = np.sin(2 * math.pi * freq[0] * xx / ws + phase[0]) * np.sin(2 * math.pi * freq[1] * yy / hs + phase[1])
        bg = bg + rng.uniform(0.0, 0.12) * wave[..., None]
    return np.clip(bg, 0, 1).astype(np.float32)


def _bounce(p0: np.ndarray, v: np.ndarray, t: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Position at time t of a point moving at v inside [lo, hi], reflecting off both walls."""
    span = np.maximum(hi - lo, 1e-6)
    q = np.mod(p0 - lo + v * t, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def _shape_mask(kind: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float, ang: float) -> np.ndarray:
    """Boolean mask of a shape of radius r centred at (cx, cy) rotated by ang (supersampled grid)."""
    dx, dy = xx - cx, yy - cy
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    ca, sa = math.cos(ang), math.sin(ang)
    rx, ry = ca * dx + sa * dy, -sa * dx + ca * dy
    if kind == "square":
        return np.maximum(np.abs(rx), np.abs(ry)) <= r * 0.8
    inside = np.ones_like(dx, dtype=bool)                      # equilateral triangle, 3 half-planes
    for k in range(3):
        a = ang + k * 2 * math.pi / 3
        inside &= (math.cos(a) * dx + math.sin(a) * dy) <= r * 0.5
    return inside


def _downsample(img: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return img
    h, w, c = img.shape
    return img.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))


def render_clip(cfg: SyntheticConfig, seed: int, index: int) -> tuple[np.ndarray, dict]:
    """Render clip `index` of dataset `seed`: (uint8 frames [F, H, W, 3], metadata dict).

    Metadata: kind, fps, motion (mean displacement per frame in frame widths), motion_bucket_id,
    caption, photo (file name or None)."""
    rng = np.random.default_rng([int(seed), int(index)])
    photos = available_photos()
    weights = np.array(cfg.kind_weights, dtype=np.float64)
    if not photos:
        weights[1:] = 0.0
    kind = CLIP_KINDS[rng.choice(3, p=weights / weights.sum())]
    fps = int(cfg.fps_choices[rng.integers(len(cfg.fps_choices))])
    F, H, W, ss = cfg.num_frames, cfg.height, cfg.width, cfg.supersample
    hs, ws = H * ss, W * ss
    displacements: list[float] = []
    photo = None

    # Background per frame: static gradient, or a panning/zooming photo.
    if kind == "shapes":
        bg = _gradient_background(rng, hs, ws)
        backgrounds = [bg] * F
    else:
        photo = photos[rng.integers(len(photos))]
        img = _load_image(photo, False)
        ih, iw = img.shape[:2]
        pan_scale = 1.0 if kind == "photo_pan" else 0.4        # slower camera under moving shapes
        s0 = rng.uniform(0.35, 0.8) * min(ih, iw)
        zoom = math.exp(rng.uniform(-0.4, 0.4) * pan_scale)    # crop size ratio last/first frame
        speed = rng.uniform(*cfg.speed_range) * pan_scale / fps  # frame widths per frame
        ang = rng.uniform(0, 2 * math.pi)
        c0 = np.array([rng.uniform(s0 / 2, iw - s0 / 2), rng.uniform(s0 / 2, ih - s0 / 2)])
        backgrounds, prev = [], None
        for f in range(F):
            s = min(s0 * zoom ** (f / max(F - 1, 1)), 0.98 * min(ih, iw))
            c = c0 + np.array([math.cos(ang), math.sin(ang)]) * speed * s0 * f
            c = np.clip(c, s / 2, np.array([iw, ih]) - s / 2)   # keep the crop inside the photo
            box = (c[0] - s / 2, c[1] - s / 2, c[0] + s / 2, c[1] + s / 2)
            backgrounds.append(_crop_resize(img, box, (hs, ws)))
            if prev is not None:   # camera displacement (centre shift + edge shift from zoom) in widths
                displacements.append(float(np.linalg.norm(c - prev[0]) / s + abs(s - prev[1]) / (2 * s)))
            prev = (c, s)

    frames = np.stack(backgrounds).copy()
    n_shapes = 0 if kind == "photo_pan" else int(rng.integers(1, cfg.max_shapes + 1))
    yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float32) + 0.5
    names = []
    for _ in range(n_shapes):
        shape = SHAPE_KINDS[rng.integers(3)]
        r = rng.uniform(0.1, 0.22) * min(hs, ws)
        color = rng.uniform(0, 1, 3).astype(np.float32)
        lo, hi = np.array([r, r]), np.array([ws - r, hs - r])
        p0 = rng.uniform(lo, hi)
        ang_v = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(*cfg.speed_range) * ws / fps        # supersampled px per frame
        v = np.array([math.cos(ang_v), math.sin(ang_v)]) * speed
        rot0, omega = rng.uniform(0, 2 * math.pi), rng.uniform(-1.5, 1.5) / fps
        prev = None
        for f in range(F):
            p = _bounce(p0, v, f, lo, hi)
            mask = _shape_mask(shape, xx, yy, p[0], p[1], r, rot0 + omega * f)
            frames[f][mask] = color
            if prev is not None:
                displacements.append(float(np.linalg.norm(p - prev) / ws))
            prev = p
        names.append(shape)

    out = np.stack([_downsample(fr, ss) for fr in frames])
    out = np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
    motion = float(np.mean(displacements)) if displacements else 0.0
    bucket = int(round(255 * min(motion / MOTION_FULL_SCALE, 1.0)))
    if kind == "photo_pan":
        caption = f"camera pan over {photo.split('.')[0]}"
    else:
        caption = " and ".join(names) + (f" over {photo.split('.')[0]}" if photo else "") + " moving"
    meta = {"kind": kind, "fps": fps, "motion": round(motion, 5), "motion_bucket_id": bucket,
            "caption": caption, "photo": photo}
    return out, meta


# --------------------------------------------------------------------------------- dataset
def write_dataset(out_dir: str | Path, num: int, seed: int = 0, cfg: SyntheticConfig | None = None,
                  progress: bool = True) -> Path:
    """Write `num` clips as mp4 under out_dir/clips/ plus out_dir/manifest.jsonl; returns the manifest.

    Resumable: clips whose mp4 already exists are not re-rendered (their metadata is recomputed,
    which is cheap and identical). The manifest is written last, atomically."""
    cfg = cfg or SyntheticConfig()
    if num < 1:
        raise ValueError(f"write_dataset: num must be >= 1, got {num}")
    out_dir = Path(out_dir)
    (out_dir / "clips").mkdir(parents=True, exist_ok=True)
    rows = []
    it = range(num)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="synthetic clips", unit="clip")
    for i in it:
        rel = f"clips/{seed:04d}_{i:06d}.mp4"
        frames, meta = render_clip(cfg, seed, i)
        if not (out_dir / rel).is_file():
            tmp = out_dir / (rel[:-4] + ".tmp.mp4")
            write_video(frames, tmp, fps=meta["fps"], quality=10)   # quality 10 = x264 crf 0
            tmp.replace(out_dir / rel)
        rows.append({"path": rel, "num_frames": cfg.num_frames, **meta})
    manifest = out_dir / "manifest.jsonl"
    tmp = manifest.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(manifest)
    info = {"seed": seed, "num": num, "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            "photos": {n: PHOTOS[n] for n in available_photos()},
            "textures": {n: TEXTURES[n] for n in available_textures()}}
    (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=1, default=list))
    return manifest
