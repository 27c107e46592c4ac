"""Synthetic captioned images for the toy SDXL teacher, and prompt-adherence scores computed from the same rules.

A scene is two coloured shapes on a low-saturation background: caption
``"a {colour1} {shape1} {above|below} a {colour2} {shape2}"``. The subject (object 1) is drawn in the top
half when the relation is "above", in the bottom half when it is "below"; object 2 goes in the other half.
Colours are four saturated palette colours, shapes circle / square, colour1 ≠ colour2. Backgrounds are
grey levels with a tint and a linear gradient, always far (> 120 in RGB distance) from every palette
colour, so the adherence score below can classify pixels exactly by the rules that drew them:

* a pixel belongs to palette colour c if its RGB distance to c is < ``PIXEL_TOLERANCE`` (and is the nearest);
* ``colour_ok`` for a half: the palette colour with the most pixels there is the expected one (≥ ``MIN_PIXELS``);
* ``shape_ok``: the expected-colour pixels of that half fill their bounding box like the expected shape
  (fill ≥ ``SQUARE_FILL`` → square, else circle; a disc fills π/4 ≈ 0.785 of its box, a square ≈ 1).

Everything is deterministic by seed (numpy Generator). Images are uint8 [S, S, 3], drawn at 4× and
box-downsampled (anti-aliased).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {"red": (220, 40, 40), "green": (40, 180, 60),
                                            "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square")
RELATIONS = ("above", "below")
PIXEL_TOLERANCE = 70.0
MIN_PIXELS = 6
SQUARE_FILL = 0.89
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    """What a caption asks for. top/bottom: (colour, shape) of the object in that half."""

    colour1: str
    shape1: str
    relation: str
    colour2: str
    shape2: str

    @property
    def caption(self) -> str:
        return f"a {self.colour1} {self.shape1} {self.relation} a {self.colour2} {self.shape2}"

    @property
    def top(self) -> tuple[str, str]:
        return (self.colour1, self.shape1) if self.relation == "above" else (self.colour2, self.shape2)

    @property
    def bottom(self) -> tuple[str, str]:
        return (self.colour2, self.shape2) if self.relation == "above" else (self.colour1, self.shape1)


def all_scenes() -> list[Scene]:
    """Every caption of the grammar (4·3 colour pairs × 4 shape pairs × 2 relations = 96)."""
    return [Scene(c1, s1, r, c2, s2) for c1, c2 in itertools.permutations(COLOURS, 2)
            for s1, s2 in itertools.product(SHAPES, SHAPES) for r in RELATIONS]


def parse_caption(caption: str) -> Scene:
    """Inverse of Scene.caption; ValueError for captions outside the grammar."""
    w = caption.strip().lower().split()
    if len(w) != 7 or w[0] != "a" or w[4] != "a" or w[1] not in COLOURS or w[5] not in COLOURS \
            or w[2] not in SHAPES or w[6] not in SHAPES or w[3] not in RELATIONS:
        raise ValueError(f"caption {caption!r} is not 'a <colour> <shape> above|below a <colour> <shape>' "
                         f"(colours {list(COLOURS)}, shapes {list(SHAPES)})")
    return Scene(w[1], w[2], w[3], w[5], w[6])


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    grey = rng.uniform(70, 185)
    tint = rng.uniform(-12, 12, size=3)
    ang = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0, 25)
    yy, xx = np.mgrid[0:n, 0:n] / max(n - 1, 1) - 0.5
    ramp = amp * (np.cos(ang) * xx + np.sin(ang) * yy)
    return grey + tint[None, None, :] + ramp[..., None]


def _draw(canvas: np.ndarray, shape: str, cy: float, cx: float, r: float, colour) -> None:
    n = canvas.shape[0]
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    if shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        mask = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    canvas[mask] = colour


def render_scene(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [size, size, 3] image of `scene` (positions, sizes, background drawn from rng)."""
    n = size * SUPERSAMPLE
    canvas = _background(rng, n)
    for (colour, shape), half in ((scene.top, 0), (scene.bottom, 1)):
        r = rng.uniform(0.12, 0.17) * n
        cy = (0.25 + 0.5 * half) * n + rng.uniform(-0.05, 0.05) * n
        cx = rng.uniform(r + 0.04 * n, n - r - 0.04 * n)
        if shape == "square":
            r *= 0.89        # equal area: a square of half-side 0.886·r covers a disc of radius r
        _draw(canvas, shape, cy, cx, r, np.asarray(COLOURS[colour], np.float64))
    img = canvas.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_images(num: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(uint8 images [num, size, size, 3], captions): scenes cycle through all 96 captions in a seeded order."""
    rng = np.random.default_rng(seed)
    scenes = all_scenes()
    order = np.concatenate([rng.permutation(len(scenes)) for _ in range(num // len(scenes) + 1)])[:num]
    imgs = np.stack([render_scene(scenes[i], size, rng) for i in order])
    return imgs, [scenes[i].caption for i in order]


def write_folder(folder, num: int, size: int = 32, seed: int = 0) -> list:
    """Write PNG images with .txt caption siblings (the image-text folder format); returns the image paths."""
    from pathlib import Path

    from PIL import Image
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    imgs, caps = make_images(num, size, seed)
    paths = []
    for i, (img, cap) in enumerate(zip(imgs, caps)):
        p = folder / f"{i:06d}.png"
        Image.fromarray(img).save(p)
        p.with_suffix(".txt").write_text(cap + "\n")
        paths.append(p)
    return paths


# ------------------------------------------------------------------------------ adherence
def palette_labels(img: np.ndarray) -> np.ndarray:
    """int [H, W]: index into COLOURS of the nearest palette colour within PIXEL_TOLERANCE, else −1."""
    pal = np.asarray(list(COLOURS.values()), np.float64)
    d = np.linalg.norm(img.astype(np.float64)[..., None, :] - pal, axis=-1)     # [H, W, C]
    idx = d.argmin(-1)
    return np.where(d.min(-1) < PIXEL_TOLERANCE, idx, -1)


def _half_score(labels: np.ndarray, colour: str, shape: str) -> tuple[bool, bool]:
    names = list(COLOURS)
    counts = np.bincount(labels[labels >= 0], minlength=len(names))
    want = names.index(colour)
    colour_ok = bool(counts[want] >= MIN_PIXELS and counts[want] == counts.max())
    if not colour_ok:
        return False, False
    ys, xs = np.nonzero(labels == want)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = len(ys) / box
    return True, bool((fill >= SQUARE_FILL) == (shape == "square"))


def adherence(img: np.ndarray, caption: str) -> dict[str, float]:
    """Scores of one uint8 [H, W, 3] image against its caption: colour / shape / both-halves-correct (0 or 1)."""
    scene = parse_caption(caption)
    labels = palette_labels(img)
    h = labels.shape[0] // 2
    top_c, top_s = _half_score(labels[:h], *scene.top)
    bot_c, bot_s = _half_score(labels[h:], *scene.bottom)
    return {"colour": (top_c + bot_c) / 2, "shape": (top_s + bot_s) / 2,
            "layout": float(top_c and bot_c), "all": float(top_c and bot_c and top_s and bot_s)}


def mean_adherence(images: np.ndarray, captions: list[str]) -> dict[str, float]:
    """Mean of `adherence` over uint8 images [N, H, W, 3]."""
    rows = [adherence(im, c) for im, c in zip(images, captions)]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
