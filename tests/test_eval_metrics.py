"""Metrics and Fréchet math against hand-made inputs and closed forms (issue 6)."""
import json
import math

import pytest
import torch

from tdd_video.eval.fvd import I3DFeatures, features_of, frechet_distance, fvd, gaussian_stats, sqrtm_psd
from tdd_video.eval.metrics import (
    first_frame_psnr,
    format_metric,
    json_safe,
    latent_mse,
    psnr,
    ratio,
    sharpness,
    ssim,
    temporal_change,
)


def _video(seed=0, f=4, h=32, w=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(f, 3, h, w, generator=g) * 2 - 1


def test_identical_videos_mse_zero_psnr_inf_ssim_one():
    v = _video()
    assert latent_mse(v, v) == 0.0
    assert psnr(v, v) == math.inf
    assert ssim(v, v) == pytest.approx(1.0, abs=1e-12)
    assert format_metric(psnr(v, v)) == "∞"
    assert json.loads(json.dumps(json_safe({"psnr": psnr(v, v)})))["psnr"] == "inf"


def test_psnr_known_value():
    a = torch.zeros(2, 3, 8, 8)
    b = a + 0.1                     # MSE = 0.01, range 2 -> 10·log10(4/0.01) = 26.0206 dB
    assert psnr(a, b) == pytest.approx(10 * math.log10(400.0), abs=1e-5)
    assert latent_mse(a, b) == pytest.approx(0.01, rel=1e-6)


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    a = _video(1, f=1, h=40, w=48)
    b = (a + 0.3 * _video(2, f=1, h=40, w=48)).clamp(-1, 1)
    ref = skm.structural_similarity(a[0].permute(1, 2, 0).double().numpy(), b[0].permute(1, 2, 0).double().numpy(),
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=2.0, channel_axis=2)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-6)
    assert ssim(a, b) < 0.99


def test_shifted_frames_known_smoothness():
    base = _video(3, f=1)[0]
    # frame f = base + f·0.05: every frame pair differs by exactly 0.05 everywhere
    v = torch.stack([base + 0.05 * f for f in range(6)])
    assert temporal_change(v) == pytest.approx(0.05, rel=1e-6)
    still = base.expand(5, -1, -1, -1)
    assert temporal_change(still) == 0.0
    # a one-pixel horizontal roll of a vertical-stripe pattern changes every pixel by ±1: change 1
    stripes = torch.tensor([1.0, -1.0]).repeat(8)[None, None, :].expand(3, 16, 16) * 0.5
    rolled = torch.stack([stripes.roll(f, dims=-1) for f in range(4)])
    assert temporal_change(rolled) == pytest.approx(1.0)
    assert ratio(temporal_change(v), temporal_change(v)) == 1.0


def test_blur_lowers_sharpness():
    v = _video(4, f=3, h=32, w=32)
    k = torch.ones(3, 1, 3, 3) / 9
    blurred = torch.nn.functional.conv2d(v, k, padding=1, groups=3)
    assert sharpness(blurred) < 0.3 * sharpness(v)
    assert sharpness(torch.zeros(2, 3, 8, 8)) == 0.0
    assert ratio(0.0, 0.0) == 1.0 and ratio(1.0, 0.0) == math.inf


def test_first_frame_fidelity():
    v = _video(5)
    assert first_frame_psnr(v, v[0]) == math.inf
    assert first_frame_psnr(v, v[0] + 0.1) == pytest.approx(10 * math.log10(400.0), abs=1e-6)
    with pytest.raises(ValueError, match="must match"):
        first_frame_psnr(v, v[0, :, :8])


def test_frechet_closed_form_diagonal_and_rotated():
    g = torch.Generator().manual_seed(0)
    d = 6
    a = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    b = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    mu1 = torch.randn(d, generator=g, dtype=torch.float64)
    mu2 = torch.randn(d, generator=g, dtype=torch.float64)
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-10)
    # same eigenbasis, rotated: the closed form is unchanged
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    c1, c2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)
    r = sqrtm_psd(c1)
    assert torch.allclose(r @ r, c1, atol=1e-12)


def test_frechet_general_covariances_scalar_case():
    # 1-D: FD = (m1 − m2)² + (s1 − s2)²
    fd = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([3.0]), torch.tensor([[9.0]]))
    assert fd == pytest.approx(4.0 + 1.0)


def test_fvd_with_stand_in_extractor_recovers_known_distance():
    """Videos whose 'features' (per-video mean of each channel) are Gaussian with known parameters."""
    g = torch.Generator().manual_seed(1)
    n = 4000

    def make(shift, scale):
        z = torch.randn(n, 3, generator=g, dtype=torch.float64) * scale + shift
        return z[:, None, :, None, None].expand(n, 2, 3, 4, 4).float()

    def extractor(videos):                  # stand-in: mean colour over frames and pixels -> [B, 3]
        return videos.mean(dim=(1, 3, 4))

    real, fake = make(0.0, 1.0), make(0.5, 2.0)
    expected = 3 * 0.5 ** 2 + 3 * (1.0 - 2.0) ** 2     # = 3.75
    assert fvd(real, fake, extractor, batch_size=1000) == pytest.approx(expected, rel=0.08)
    assert fvd(real, real, extractor, batch_size=1000) == pytest.approx(0.0, abs=1e-6)
    mu, cov = gaussian_stats(features_of(real[:1], extractor))
    assert cov.abs().sum() == 0.0


def test_i3d_loader_uses_torchscript_file(tmp_path):
    class FakeI3D(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                    return_features: bool = False) -> torch.Tensor:
            assert x.shape[1] == 3 and x.shape[-1] == 224
            return x.mean(dim=(2, 3, 4)).repeat(1, 4)

    path = tmp_path / "i3d.pt"
    torch.jit.script(FakeI3D()).save(str(path))
    feats = I3DFeatures(path)(torch.zeros(2, 4, 3, 16, 16))
    assert feats.shape == (2, 12)
    with pytest.raises(FileNotFoundError, match="--i3d"):
        I3DFeatures(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="TorchScript"):
        I3DFeatures(bad)
