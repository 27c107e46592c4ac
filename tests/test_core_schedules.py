"""Schedules, grid and TDD schedule sets against docs/math.md §1c test vectors and hand-computed values."""
import math

import pytest
import torch

from tdd_video.core import (
    EDMSchedule,
    VPSchedule,
    grid_u,
    make_schedule,
    nonuniform_schedule_indices,
    scaled_linear_alphas_cumprod,
    schedule_indices,
)
from tdd_video.errors import ConfigError


def vp_timesteps(k, n=250):
    return VPSchedule().timestep(schedule_indices(n, k) / n).tolist()


def test_vp_schedule_vectors_match_spec():
    assert vp_timesteps(4) == [999, 751, 499, 251]
    assert vp_timesteps(8) == [999, 875, 751, 627, 499, 375, 251, 127]
    # K = 5..7 come from the same rule: N - floor(j*N/K)
    for k in range(4, 9):
        ts = vp_timesteps(k)
        assert ts[0] == 999 and len(ts) == k and ts == sorted(ts, reverse=True)


def test_edm_schedule_vectors_match_spec():
    e = EDMSchedule()
    s4 = e.sigma(schedule_indices(250, 4).double() / 250)
    torch.testing.assert_close(s4, torch.tensor([700, 136.87, 15.59, 0.6999], dtype=torch.float64), rtol=1e-3, atol=0)
    s8 = e.sigma(schedule_indices(250, 8).double() / 250)
    # docs/math.md §1c lists 0.07086 for the last point; the ramp gives 0.07092 (float64) - within 0.1 %.
    ref = torch.tensor([700, 324.57, 136.87, 51.10, 15.59, 3.918, 0.6999, 0.07086], dtype=torch.float64)
    torch.testing.assert_close(s8, ref, rtol=1e-3, atol=0)


def test_edm_sigma_by_hand_and_clean_end():
    e = EDMSchedule()
    lo, hi = 0.002 ** (1 / 7), 700 ** (1 / 7)
    assert float(e.sigma(torch.tensor(0.5, dtype=torch.float64))) == pytest.approx(((lo + hi) / 2) ** 7, rel=1e-12)
    assert float(e.sigma(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(700.0, rel=1e-12)
    assert float(e.sigma(torch.tensor(0.0, dtype=torch.float64))) == 0.0
    u = torch.linspace(0.01, 1, 17, dtype=torch.float64)
    torch.testing.assert_close(e.u_of_sigma(e.sigma(u)), u)


def test_edm_preconditioning_by_hand():
    c_skip, c_out, c_in, c_noise = EDMSchedule().precondition(torch.tensor([1.0, 700.0]))
    torch.testing.assert_close(c_skip, torch.tensor([0.5, 1 / (700 ** 2 + 1)]))
    torch.testing.assert_close(c_out, torch.tensor([-1 / math.sqrt(2), -700 / math.sqrt(700 ** 2 + 1)]))
    torch.testing.assert_close(c_in, torch.tensor([1 / math.sqrt(2), 1 / math.sqrt(700 ** 2 + 1)]))
    torch.testing.assert_close(c_noise, torch.tensor([0.0, 0.25 * math.log(700)]))
    assert c_skip.dtype == torch.float32 and c_skip[1] > 0  # not flushed to zero as in fp16


def test_vp_alphas_match_diffusers_scaled_linear():
    from diffusers import DDPMScheduler
    ref = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod
    torch.testing.assert_close(scaled_linear_alphas_cumprod().float(), ref.float())
    vp = VPSchedule()
    a, s = vp.alpha_sigma(torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(a[:2] ** 2, ref[[999, 499]].double(), rtol=1e-6, atol=1e-7)
    assert a[2] == 1 and s[2] == 0  # clean end
    torch.testing.assert_close(a ** 2 + s ** 2, torch.ones(3, dtype=torch.float64))


def test_vp_quantize_rounds_down():
    vp = VPSchedule()
    u = torch.tensor([0.7 * 0.252, 0.0005, 0.004], dtype=torch.float64)
    assert vp.timestep(vp.quantize(u)).tolist() == [175, -1, 3]
    assert bool((vp.quantize(u) <= u + 1e-12).all())


def test_grid_and_nonuniform_schedules():
    g = grid_u(250)
    assert g.shape == (251,) and g[0] == 0 and g[-1] == 1
    training_set = {int(i) for k in range(4, 9) for i in schedule_indices(250, k)}
    for k in range(1, 13):
        idx = nonuniform_schedule_indices(250, k) if k <= 250 else None
        assert len(idx) == k and idx[0] == 250
        assert bool((idx[1:] < idx[:-1]).all())
        if 4 <= k <= 8:
            assert set(idx.tolist()) <= training_set
            hops = (idx - torch.cat([idx[1:], torch.zeros(1, dtype=idx.dtype)])).tolist()  # incl. final jump to 0
            # short hops early, long hops late (±1 grid unit of floor rounding)
            assert all(b >= a - 1 for a, b in zip(hops, hops[1:])), f"K={k}: {hops}"
        if 4 < k < 8:
            assert hops[0] < hops[-1]


def test_schedule_errors_name_the_key():
    with pytest.raises(ConfigError, match="k_max"):
        schedule_indices(4, 8)  # N smaller than K
    with pytest.raises(ConfigError, match="schedule.kind"):
        make_schedule("flow")
    with pytest.raises(ConfigError, match="sigma_max"):
        EDMSchedule(sigma_min=1.0, sigma_max=0.5)


# γ / TDD target level: floor((1 − η)·τ) on VP integer timesteps (official TDD rule, docs/math.md §3.3, §5).
# Values computed by hand from the formula, τ from the S_K table of §1c (N = 250).
VP_SHRINK_CASES = [
    (0.2, 8, [875, 751, 627, 499, 375, 251, 127], [700, 600, 501, 399, 300, 200, 101]),
    (0.2, 4, [751, 499, 251], [600, 399, 200]),
    (0.4, 6, [835, 667, 499, 335, 167], [501, 400, 299, 201, 100]),
    (0.3, 7, [859, 715, 571, 431, 287, 143], [601, 500, 399, 301, 200, 100]),
    (0.4, 3, [667, 335], [400, 201]),
    (0.3, 4, [751, 499, 251], [525, 349, 175]),
]


@pytest.mark.parametrize("eta,k,taus,want", VP_SHRINK_CASES)
def test_vp_shrink_is_floor_of_scaled_timestep(eta, k, taus, want):
    vp = VPSchedule()
    u_tau = schedule_indices(250, k)[1:].double() / 250
    assert vp.timestep(u_tau).tolist() == taus
    assert vp.timestep(vp.shrink(u_tau, eta)).tolist() == want
    assert vp.shrink(u_tau, eta).dtype == torch.float64


def test_vp_shrink_edge_cases():
    vp = VPSchedule()
    u = torch.tensor([1.0, 0.876, 0.376, 0.004, 0.001, 0.0], dtype=torch.float64)   # t = 999, 875, 375, 3, 0, clean
    # η = 0: every level is its own target; the clean end stays the clean end for any η
    assert torch.equal(vp.shrink(u, 0.0), u)
    assert vp.timestep(vp.shrink(u, 0.99)).tolist() == [9, 8, 3, 0, 0, -1]
    # per-element η (training draws one per sample)
    eta = torch.tensor([0.2, 0.2, 0.2, 0.5, 0.5, 0.3], dtype=torch.float64)
    assert vp.timestep(vp.shrink(u, eta)).tolist() == [799, 700, 300, 1, 0, -1]
    # evaluated in float64 like the official numpy code: (1 − 0.32)·375 = 254.99999999999997 → 254
    assert vp.timestep(vp.shrink(u[2:3], 0.32)).tolist() == [int(math.floor((1 - 0.32) * 375.0))] == [254]
    assert bool((vp.shrink(u, 0.3) <= u).all())
    assert vp.shrink(u.float(), 0.2).dtype == torch.float32


def test_edm_shrink_is_continuous_and_unchanged():
    e = EDMSchedule()
    u = torch.rand(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eta = torch.rand(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.3
    assert torch.equal(e.shrink(u, eta), (1.0 - eta) * u)
    assert torch.equal(e.quantize(e.shrink(u, eta)), e.shrink(u, eta))
    # docs/math.md §5: η = 0.3 on u_{i+1} = 0.752 gives u_s = 0.5264, σ_s ≈ 20.3
    u_s = e.shrink(torch.tensor(0.752, dtype=torch.float64), 0.3)
    assert float(u_s) == (1.0 - 0.3) * 0.752
    assert float(e.sigma(u_s)) == pytest.approx(20.3, rel=1e-2)
