"""Fréchet Video Distance: Fréchet distance between Gaussians fitted to video features.

    FD = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2·(Σ₁^{½} Σ₂ Σ₁^{½})^{½})        (Dowson & Landau 1982)

computed in float64 with symmetric eigendecompositions (no scipy): Σ₁^{½} Σ₂ Σ₁^{½} is symmetric
PSD, so its square root's trace is the sum of the square roots of its (clamped) eigenvalues.
The feature extractor is pluggable: any callable videos [B, F, 3, H, W] in [-1, 1] -> [B, D].
`I3DFeatures` wraps a local TorchScript I3D file as commonly distributed for FVD
(`i3d_torchscript.pt`, StyleGAN-V / fvd-comparison convention: input [B, 3, T, 224, 224] in
[-1, 1], called with rescale=False, resize=False, return_features=True -> [B, 400]).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

Tensor = torch.Tensor
FeatureExtractor = Callable[[Tensor], Tensor]


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """(mean [D], covariance [D, D]) of features [N, D] in float64; unbiased (N − 1) covariance,
    zero covariance for N = 1."""
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got {tuple(features.shape)}")
    f = features.detach().to(torch.float64)
    mu = f.mean(dim=0)
    centred = f - mu
    n = f.shape[0]
    cov = centred.T @ centred / max(n - 1, 1)
    return mu, cov


def sqrtm_psd(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix via eigh (negative eigenvalues from
    round-off are clamped to 0). float64 [D, D]."""
    m = matrix.to(torch.float64)
    m = 0.5 * (m + m.T)
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2), float64."""
    mu1, mu2 = mu1.to(torch.float64), mu2.to(torch.float64)
    cov1, cov2 = cov1.to(torch.float64), cov2.to(torch.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"frechet_distance: inconsistent shapes mu {tuple(mu1.shape)}/{tuple(mu2.shape)}, "
                         f"cov {tuple(cov1.shape)}/{tuple(cov2.shape)}")
    root1 = sqrtm_psd(cov1)
    middle = root1 @ cov2 @ root1
    vals = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0)
    diff = mu1 - mu2
    fd = diff @ diff + torch.trace(cov1) + torch.trace(cov2) - 2.0 * vals.sqrt().sum()
    return float(fd.clamp_min(0))


def features_of(videos: Tensor, extractor: FeatureExtractor, batch_size: int = 8) -> Tensor:
    """Run `extractor` over videos [N, F, 3, H, W] in chunks; returns float64 features [N, D]."""
    out = []
    with torch.no_grad():
        for i in range(0, videos.shape[0], batch_size):
            feats = extractor(videos[i:i + batch_size])
            out.append(feats.detach().reshape(feats.shape[0], -1).to(torch.float64).cpu())
    return torch.cat(out)


def fvd(real: Tensor, fake: Tensor, extractor: FeatureExtractor, batch_size: int = 8) -> float:
    """FVD between two sets of videos [N, F, 3, H, W] in [-1, 1] under `extractor`."""
    mu_r, cov_r = gaussian_stats(features_of(real, extractor, batch_size))
    mu_f, cov_f = gaussian_stats(features_of(fake, extractor, batch_size))
    return frechet_distance(mu_r, cov_r, mu_f, cov_f)


class I3DFeatures:
    """A local TorchScript I3D (e.g. `i3d_torchscript.pt`) as an FVD feature extractor.

    videos [B, F, 3, H, W] in [-1, 1] are resized to 224×224 (bilinear, antialiased), laid out
    as [B, 3, F, 224, 224] and passed with rescale=False, resize=False, return_features=True;
    a TorchScript module without those keyword arguments is called as `model(x)`."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", size: int = 224):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--i3d: no file at {path} (pass a local TorchScript I3D, e.g. i3d_torchscript.pt)")
        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 - report what the file is not
            raise ValueError(f"--i3d: {path} is not a loadable TorchScript module ({type(e).__name__}: {e})") from None
        self.device = torch.device(device)
        self.size = size

    def __call__(self, videos: Tensor) -> Tensor:
        if videos.ndim != 5 or videos.shape[2] != 3:
            raise ValueError(f"I3DFeatures: expected videos [B, F, 3, H, W], got {tuple(videos.shape)}")
        b = videos.shape[0]
        x = F.interpolate(videos.flatten(0, 1).float(), size=(self.size, self.size), mode="bilinear",
                          align_corners=False, antialias=True).clamp(-1, 1)
        x = rearrange(x, "(b f) c h w -> b c f h w", b=b).contiguous().to(self.device)
        try:
            return self.model(x, rescale=False, resize=False, return_features=True)
        except (RuntimeError, TypeError):
            return self.model(x)
