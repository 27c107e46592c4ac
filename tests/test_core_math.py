"""DDIM jump, re-noising, guidance, clipping and losses (docs/math.md §2, §4–6) against hand-computed values."""
import math

import pytest
import torch

from tdd_video.core import (
    EDMSchedule,
    VPSchedule,
    add_noise,
    cfg,
    clip_x0,
    clip_x0_dynamic,
    clip_x0_static,
    ddim_jump,
    distill_loss,
    framewise_scale,
    jump,
    l2_loss,
    null_mask,
    pseudo_huber_loss,
    renoise,
    sample_guidance_range,
    where_null,
)
from tdd_video.errors import ConfigError

SCHEDULES = [EDMSchedule(), VPSchedule()]


@pytest.mark.parametrize("sch", SCHEDULES, ids=["edm", "vp"])
def test_jump_identity_and_clean_end(sch):
    g = torch.Generator().manual_seed(0)
    x, x0 = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    u = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
    assert torch.equal(jump(sch, x, x0, u, u), x)                       # f(x, t -> t) = x
    assert torch.equal(jump(sch, x, x0, u, torch.zeros(3, dtype=torch.float64)), x0)  # s = clean end -> x0_hat


def test_jump_recovers_the_noise_trajectory():
    """If x0_hat is the true x0, the jump lands exactly on the same-noise point at s (both families)."""
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 8, generator=g, dtype=torch.float64), torch.randn(2, 8, generator=g, dtype=torch.float64)
    for sch in SCHEDULES:
        ut, us = torch.tensor([0.8, 0.6], dtype=torch.float64), torch.tensor([0.3, 0.05], dtype=torch.float64)
        xt = add_noise(sch, x0, eps, ut)
        torch.testing.assert_close(jump(sch, xt, x0, ut, us), add_noise(sch, x0, eps, us))


def test_edm_jump_by_hand():
    x_t, x0 = torch.tensor([[10.0]]), torch.tensor([[2.0]])
    out = ddim_jump(x_t, x0, 1.0, torch.tensor([4.0]), 1.0, torch.tensor([1.0]))
    assert float(out) == pytest.approx(2.0 + 0.25 * 8.0)  # x0 + (σs/σt)(xt - x0)


def test_vp_jump_by_hand():
    a_t, s_t, a_s, s_s = 0.6, 0.8, 0.8, 0.6
    out = ddim_jump(torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([a_t]), torch.tensor([s_t]),
                    torch.tensor([a_s]), torch.tensor([s_s]))
    eps = (1.0 - 0.6 * 0.5) / 0.8
    assert float(out) == pytest.approx(0.8 * 0.5 + 0.6 * eps)


def test_renoise_marginals():
    """Re-noising s -> t with fresh noise gives the forward-process variance at t (EDM and VP)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(200000, dtype=torch.float64)
    for sch in SCHEDULES:
        us, ut = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
        xs = add_noise(sch, x0, torch.randn(x0.shape, generator=g, dtype=torch.float64), us)
        xt = renoise(sch, xs, us, ut, torch.randn(x0.shape, generator=g, dtype=torch.float64))
        _, sig_t = sch.alpha_sigma(ut)
        assert float(xt.std()) == pytest.approx(float(sig_t), rel=0.01)
    # EDM by hand: x + sqrt(σt² − σs²)·z
    e = EDMSchedule()
    out = renoise(e, torch.tensor([1.0]), 0.2, 0.6, torch.tensor([1.0]))
    assert float(out) == pytest.approx(1.0 + math.sqrt(float(e.sigma(0.6)) ** 2 - float(e.sigma(0.2)) ** 2))


def test_cfg_identity_and_hand_values():
    u, c = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(cfg(u, c, 1.0), c)
    torch.testing.assert_close(cfg(u, c, torch.ones(2, 1)), c)
    torch.testing.assert_close(cfg(u, c, 0.0), u)
    assert float(cfg(torch.tensor(1.0), torch.tensor(3.0), 2.5)) == pytest.approx(1 + 2.5 * 2)


def test_framewise_scale_matches_pipeline_rule():
    w = framewise_scale(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0]), 5)
    assert w.shape == (2, 5, 1, 1, 1)
    torch.testing.assert_close(w[0, :, 0, 0, 0], torch.linspace(1, 3, 5))
    torch.testing.assert_close(w[1, :, 0, 0, 0], torch.full((5,), 2.0))
    lo, hi = sample_guidance_range(1000, (1.0, 1.5), (2.0, 2.5), torch.Generator().manual_seed(0))
    assert float(lo.min()) >= 1.0 and float(lo.max()) <= 1.5 and float(hi.min()) >= 2.0


def test_null_mask_rate_and_selection():
    m = null_mask(20000, 0.2, torch.Generator().manual_seed(0))
    assert abs(float(m.float().mean()) - 0.2) < 0.015
    assert not bool(null_mask(10, 0.0).any()) and bool(null_mask(10, 1.0).all())
    c, n = torch.ones(3, 2), torch.zeros(1, 2)
    out = where_null(torch.tensor([True, False, True]), c, n)
    assert out[:, 0].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ConfigError, match="p_uncond"):
        null_mask(4, 1.5)


def test_clipping():
    x = torch.tensor([[0.5, -0.9, 0.2, 0.0]])
    assert torch.equal(clip_x0_static(x, 1.0), x)                      # in range: unchanged
    assert torch.equal(clip_x0_dynamic(x, 1.0), x)
    big = torch.cat([torch.linspace(-1, 1, 999), torch.tensor([50.0])])[None]
    out = clip_x0_dynamic(big, 1.0, 0.995)
    assert float(out.max()) < 50 and float(out.max()) >= 1.0            # extreme value bounded
    assert torch.equal(out[0, :999], big[0, :999])                     # in-range values never rescaled
    assert float(clip_x0_static(big, 2.0).max()) == 2.0
    v = torch.randn(2, 4, 3, 5, 5) * torch.tensor([1.0, 10.0]).reshape(2, 1, 1, 1, 1)
    out = clip_x0_dynamic(v, 1.0)                                      # per whole video
    assert float(out[1].abs().max()) > float(out[0].abs().max())
    assert torch.equal(clip_x0(v, "none", 1.0), v)
    with pytest.raises(ConfigError, match="clip_mode"):
        clip_x0(v, "soft", 1.0)


def test_losses_by_hand():
    p, t = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    c = 1e-3
    assert float(pseudo_huber_loss(p, t, c)) == pytest.approx(((math.sqrt(9 + c * c) - c) + 0.0) / 2, rel=1e-6)
    assert float(l2_loss(p, t)) == pytest.approx(4.5)
    w = torch.tensor([2.0])
    assert float(distill_loss("l2", p, t, weight=w)) == pytest.approx(9.0)
    assert pseudo_huber_loss(p.half(), t.half()).dtype == torch.float32
    assert distill_loss("huber", torch.zeros(3, 2), torch.zeros(3, 2), reduce=False).shape == (3,)
    with pytest.raises(ConfigError, match="loss"):
        distill_loss("l1", p, t)


def test_laplacian_by_hand():
    from tdd_video.core import laplacian
    x = torch.zeros(2, 3, 1, 5, 5)
    x[1, 2, 0, 2, 2] = 1.0                                           # a unit impulse
    lap = laplacian(x)
    assert lap.shape == x.shape and lap.dtype == torch.float32
    expect = torch.zeros(5, 5)
    expect[2, 2], expect[1, 2], expect[3, 2], expect[2, 1], expect[2, 3] = -4, 1, 1, 1, 1
    assert torch.equal(lap[1, 2, 0], expect) and lap[0].abs().max() == 0
    assert laplacian(torch.full((4, 6, 6), 2.5)).abs().max() == 0     # constant, edges replicated
    ramp = torch.arange(6.0).expand(6, 6)                             # linear in x: zero inside
    assert laplacian(ramp)[1:-1, 1:-1].abs().max() == 0
    assert laplacian(ramp)[:, 0].tolist() == [1.0] * 6                # left edge replicated: (0 + 1) − 2·0 = 1
    with pytest.raises(ValueError, match="H, W"):
        laplacian(torch.zeros(4))


def test_guidance_weights_video_ramp_and_image_scalar():
    from tdd_video.core import guidance_weights
    lo, hi = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0])
    w, a, b = guidance_weights(lo, hi, torch.zeros(2, 5, 4, 2, 2))
    assert w.shape == (2, 5, 1, 1, 1) and torch.equal(a, lo)
    torch.testing.assert_close(w[0, :, 0, 0, 0], torch.linspace(1, 3, 5))
    w, a, b = guidance_weights(lo, hi, torch.zeros(2, 4, 8, 8))
    assert w.shape == (2, 1, 1, 1) and torch.equal(w.flatten(), hi) and torch.equal(a, hi)


def test_x0_loss_weight_hand_values():
    """min(√(α_s²+σ_s²)/(α_s − σ_s α_t/σ_t), cap): EDM σ 10 → 5: c = 0.5, √26/0.5 = 10.198; VP (0.6, 0.8) →
    (0.8, 0.6): c = 0.8 − 0.6·0.75 = 0.35, 1/0.35 = 2.857; the clean end and cap = 1 give 1."""
    from tdd_video.core import x0_loss_weight
    one = torch.tensor(1.0)
    assert x0_loss_weight(one, 10.0, one, 5.0, 100.0).item() == pytest.approx(math.sqrt(26) / 0.5, rel=1e-6)
    assert x0_loss_weight(one, 10.0, one, 5.0, 4.0).item() == pytest.approx(4.0)
    assert x0_loss_weight(one, 10.0, one, 5.0, 1.0).item() == 1.0
    assert x0_loss_weight(0.6, 0.8, 0.8, 0.6, 100.0).item() == pytest.approx(1 / 0.35, rel=1e-6)
    assert x0_loss_weight(torch.tensor([0.6, 0.6]), 0.8, 1.0, 0.0, 100.0).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        x0_loss_weight(one, 10.0, one, 5.0, 0.5)
