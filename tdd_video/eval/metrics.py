"""Per-video quality metrics for few-step vs many-step comparisons (issue 6).

Videos are float tensors [F, 3, H, W] in [-1, 1] (the families' pixel convention); a batch
[B, F, 3, H, W] is accepted wherever a video is and averaged over B. Latents are any shape.

* `latent_mse`      mean((a − b)²) in float64.
* `psnr`            10·log10(range² / MSE), range = 2 for [-1, 1]; identical inputs give +inf
                    (reported as such by `format_metric`, never as an error or a huge number).
* `ssim`            Gaussian-window SSIM (Wang et al. 2004, Eq. 13; window 11, σ = 1.5, K1 = 0.01,
                    K2 = 0.03, population covariances, valid region only — the settings of
                    skimage's `structural_similarity(gaussian_weights=True)`), per channel, averaged.
* `temporal_change` mean |x_{f+1} − x_f| over pixels and the F − 1 frame pairs (lower = smoother).
* `sharpness`       mean squared response of the 3×3 Laplacian [[0,1,0],[1,−4,1],[0,1,0]] on
                    the luma (high-frequency energy; a blurrier video has less).
* `first_frame_psnr` PSNR of frame 0 to the conditioning image [3, H, W].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

Tensor = torch.Tensor

_LUMA = (0.299, 0.587, 0.114)


def _frames(video: Tensor) -> Tensor:
    """[F, 3, H, W] or [B, F, 3, H, W] -> [N, 3, H, W] float64."""
    if video.ndim == 5:
        video = rearrange(video, "b f c h w -> (b f) c h w")
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"expected a video [F, 3, H, W] or [B, F, 3, H, W], got shape {tuple(video.shape)}")
    return video.detach().to(torch.float64)


def _check_same(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def latent_mse(a: Tensor, b: Tensor) -> float:
    """Mean squared difference of two latents (or videos) of the same shape, float64."""
    _check_same(a, b, "latent_mse")
    d = a.detach().to(torch.float64) - b.detach().to(torch.float64)
    return float((d * d).mean())


def psnr(a: Tensor, b: Tensor, data_range: float = 2.0) -> float:
    """PSNR in dB between videos/images in a value range of width `data_range` (2 for [-1, 1]).
    Identical inputs return math.inf."""
    _check_same(a, b, "psnr")
    mse = latent_mse(a, b)
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range ** 2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 1-D Gaussian of `size` taps, float64 [size]."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable 'valid' Gaussian filter, per channel. x [N, C, H, W] -> [N, C, H−k+1, W−k+1]."""
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.reshape(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.reshape(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim(a: Tensor, b: Tensor, data_range: float = 2.0, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> float:
    """Mean Gaussian-window SSIM over frames and channels (Wang et al. 2004). a, b [F, 3, H, W].
    The window shrinks (odd size ≤ min(H, W)) for frames smaller than `window`."""
    _check_same(a, b, "ssim")
    x, y = _frames(a), _frames(b)
    size = min(window, x.shape[-1], x.shape[-2])
    size -= 1 - size % 2
    g = gaussian_window(size, sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mu_x * mu_x
    syy = _blur(y * y, g) - mu_y * mu_y
    sxy = _blur(x * y, g) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    return float((num / den).mean())


def temporal_change(video: Tensor) -> float:
    """Mean absolute frame-to-frame change: mean_f mean|x_{f+1} − x_f|. video [F, 3, H, W] (or [B, F, …]).
    A single-frame video has change 0."""
    v = video.detach().to(torch.float64)
    if v.ndim == 4:
        v = v[None]
    if v.ndim != 5:
        raise ValueError(f"temporal_change: expected [F, 3, H, W] or [B, F, 3, H, W], got {tuple(video.shape)}")
    if v.shape[1] < 2:
        return 0.0
    return float((v[:, 1:] - v[:, :-1]).abs().mean())


def sharpness(video: Tensor) -> float:
    """High-frequency energy: mean squared 3×3 Laplacian of the luma, over frames. video [F, 3, H, W]."""
    x = _frames(video)
    luma = sum(w * x[:, i:i + 1] for i, w in enumerate(_LUMA))
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    resp = F.conv2d(luma, lap.reshape(1, 1, 3, 3))
    return float((resp * resp).mean())


def first_frame_psnr(video: Tensor, image: Tensor, data_range: float = 2.0) -> float:
    """PSNR of frame 0 of `video` [F, 3, H, W] to the conditioning image [3, H, W] (same size)."""
    if video.ndim != 4:
        raise ValueError(f"first_frame_psnr: expected a video [F, 3, H, W], got {tuple(video.shape)}")
    if tuple(image.shape) != tuple(video.shape[1:]):
        raise ValueError(f"first_frame_psnr: image {tuple(image.shape)} must match a frame {tuple(video.shape[1:])}")
    return psnr(video[0], image, data_range)


def ratio(value: float, reference: float) -> float:
    """value / reference with the degenerate cases spelled out: 0/0 = 1, x/0 = inf."""
    if reference == 0.0:
        return 1.0 if value == 0.0 else math.inf
    return value / reference


def format_metric(value, digits: int = 4) -> str:
    """Markdown cell for a number: '∞' for +inf, '—' for None/NaN, else `digits` significant digits."""
    if value is None:
        return "—"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}g}"


def json_safe(value):
    """JSON has no inf/NaN: +inf -> "inf", -inf -> "-inf", NaN -> None; recursive over dicts/lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value
