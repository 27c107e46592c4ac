"""Held-out conditioning images for quality measurements: real photos no model of this project trained on.

The toy teachers and every student trained here saw synthetic clips built from the scikit-image photos
astronaut, coffee, chelsea, rocket, hubble_deep_field, retina and the textures brick, grass, gravel
(tdd_video.data.synthetic). The held-out set uses OTHER photos that ship inside the scikit-image wheel
(licences in their `skimage.data` docstrings):

* ``stereo_motorcycle`` (left view; Middlebury 2014 stereo benchmark) — colour photo
* ``immunohistochemistry`` (CMMI; "no known copyright restrictions") — colour micrograph
* ``camera`` (CC0, Lav Varshney), ``coins`` (Pompeii coins, public domain), ``moon``, ``clock``
  (public domain, Stefan van der Walt) — grey photos, used as RGB
* ``lfw_subset`` faces (Labeled Faces in the Wild, 25×25 crops) — grey faces

`heldout_images(n, size)` returns n distinct square crops (deterministic: fixed crop boxes per photo,
cycling over the photos), resized with antialiasing to size×size, as float tensors [3, H, W] in [-1, 1].
"""
from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from tdd_video.errors import ConfigError

# (photo, crop box as fractions (top, left, side) of the shorter image side); four views per photo
_VIEWS = ((0.0, 0.0, 1.0), (0.1, 0.25, 0.6), (0.35, 0.05, 0.55), (0.2, 0.4, 0.5))
PHOTOS = ("stereo_motorcycle", "immunohistochemistry", "camera", "coins", "moon", "clock")
NUM_FACES = 8


def _photo(name: str) -> np.ndarray:
    import skimage.data as data
    img = data.stereo_motorcycle()[0] if name == "stereo_motorcycle" else getattr(data, name)()
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3].astype(np.uint8)


def _faces() -> list[np.ndarray]:
    import skimage.data as data
    faces = np.asarray(data.lfw_subset())[:100]                   # the first 100 are faces
    faces = (faces * 255).clip(0, 255).astype(np.uint8) if faces.dtype != np.uint8 else faces
    picks = np.linspace(0, len(faces) - 1, NUM_FACES).round().astype(int)
    return [np.repeat(faces[i][..., None], 3, axis=-1) for i in picks]


def _crop(img: np.ndarray, top: float, left: float, side: float) -> np.ndarray:
    h, w = img.shape[:2]
    s = int(round(min(h, w) * side))
    y = min(int(round(top * min(h, w))), h - s)
    x = min(int(round(left * max(h, w))), w - s)
    return img[y:y + s, x:x + s]


def catalogue() -> list[tuple[str, np.ndarray]]:
    """Every held-out view as (name, uint8 [h, w, 3]), in a fixed order: photo crops, then faces."""
    views = [(f"{p}_{k}", _crop(_photo(p), *v)) for k, v in enumerate(_VIEWS) for p in PHOTOS]
    views += [(f"lfw_face_{k}", f) for k, f in enumerate(_faces())]
    return views


def heldout_images(n: int, size: int | tuple[int, int]) -> tuple[list[torch.Tensor], list[str]]:
    """n held-out conditioning images as [3, H, W] float tensors in [-1, 1], and their names."""
    from PIL import Image
    views = catalogue()
    if not 1 <= n <= len(views):
        raise ConfigError("num_images", f"got {n}, the held-out set has 1..{len(views)} images")
    h, w = (size, size) if isinstance(size, int) else size
    out, names = [], []
    for name, arr in views[:n]:
        img = Image.fromarray(arr).resize((w, h), Image.LANCZOS)
        t = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
        out.append(rearrange(t, "h w c -> c h w"))
        names.append(name)
    return out, names
