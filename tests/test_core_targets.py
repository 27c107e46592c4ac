"""TDD target timestep selection (docs/math.md §3) — properties over many samples and hand-checked cases."""
import pytest
import torch

from tdd_video.core import EDMSchedule, VPSchedule, schedule_indices, select_targets, source_density, tau_table
from tdd_video.errors import ConfigError


@pytest.mark.parametrize("schedule", [EDMSchedule(), VPSchedule()], ids=["edm", "vp"])
def test_order_and_membership_for_every_sample(schedule):
    g = torch.Generator().manual_seed(0)
    ts = select_targets(20000, 250, 4, 8, 0.3, generator=g, schedule=schedule)
    assert bool((ts.s <= ts.t_next).all()) and bool((ts.t_next < ts.t).all())
    assert bool((ts.s <= ts.tau + 1e-12).all()) and bool((ts.s >= (1 - 0.3) * ts.tau - 1e-3 - 1e-12).all())
    assert set(ts.k.unique().tolist()) == {4, 5, 6, 7, 8}
    assert float(ts.eta.min()) >= 0 and float(ts.eta.max()) <= 0.3
    torch.testing.assert_close(ts.t - ts.t_next, torch.full_like(ts.t, 1 / 250))
    # every tau lies on the S_K that was drawn (or is the clean end), and is the largest such point <= t_n
    for k in range(4, 9):
        pts = torch.cat([schedule_indices(250, k), torch.zeros(1, dtype=torch.int64)]).double() / 250
        sel = ts.k == k
        tau = ts.tau[sel]
        assert bool(torch.isclose(tau[:, None], pts[None, :]).any(dim=1).all())
        below = torch.where(pts[None, :] <= ts.t_next[sel, None] + 1e-12, pts[None, :],
                            torch.tensor(-1.0, dtype=torch.float64))
        torch.testing.assert_close(tau, below.max(dim=1).values)


def test_hand_checked_cases():
    table = tau_table(250, 4, 8)
    # K = 4: S_4 = {250, 188, 125, 63} (+0). t_n index 187 -> tau 125; 188 -> 188; 62 -> 0
    assert table[0, 187] == 125 and table[0, 188] == 188 and table[0, 62] == 0 and table[0, 250] == 250
    # K = 8: S_8 = {250, 219, 188, 157, 125, 94, 63, 32}
    assert table[4, 218] == 188 and table[4, 31] == 0 and table[4, 32] == 32


def test_seeded_and_vectorised():
    a = select_targets(64, generator=torch.Generator().manual_seed(3))
    b = select_targets(64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.s, b.s) and torch.equal(a.k, b.k)
    assert a.s.shape == (64,)


def test_source_density_weights_shift_sources():
    w = source_density(250, "high-noise")
    ts = select_targets(5000, generator=torch.Generator().manual_seed(0), source_weights=w)
    assert float(ts.t.mean()) > 0.6  # E[u] = (2N+1)/(3N) ≈ 0.67 under weight ∝ k
    with pytest.raises(ConfigError, match="source_density"):
        source_density(250, "bogus")
    with pytest.raises(ConfigError, match="source_weights"):
        select_targets(4, source_weights=torch.ones(10))


@pytest.mark.parametrize("kw,key", [
    (dict(k_min=6, k_max=4), "k_max"),
    (dict(eta_max=1.0), "eta_max"),
    (dict(eta_max=-0.1), "eta_max"),
    (dict(num_grid=6, k_max=8), "num_grid"),
    (dict(k_min=0), "k_min"),
])
def test_bad_settings_are_named(kw, key):
    with pytest.raises(ConfigError, match=key):
        select_targets(4, **kw)


def test_vp_targets_are_floor_of_scaled_tau_timestep():
    """docs/math.md §3.3, VP: s = floor((1 − η)·τ) with τ the integer timestep of the S_K point (official TDD
    `select_s`), for every sample; not (1 − η) on u = (τ + 1)/T rounded down."""
    vp = VPSchedule()
    ts = select_targets(20000, 250, 4, 8, 0.3, generator=torch.Generator().manual_seed(0), schedule=vp)
    tau_t = vp.timestep(ts.tau)
    # τ comes from the S_K table: 4·index − 1 (or −1, the clean end)
    tau_idx = tau_table(250, 4, 8)[ts.k - 4, ts.index - 1]
    assert torch.equal(tau_t, torch.where(tau_idx > 0, 4 * tau_idx - 1, torch.full_like(tau_idx, -1)))
    want = torch.where(tau_t >= 0, torch.floor((1 - ts.eta) * tau_t.double()).long(), tau_t)
    assert torch.equal(vp.timestep(ts.s), want)
    assert torch.equal(ts.s, vp.u_of_timestep(want))            # exactly on the integer lattice
    assert bool((ts.s <= ts.tau).all()) and bool((ts.tau <= ts.t_next).all()) and bool((ts.t_next < ts.t).all())
    assert bool((vp.timestep(ts.s) <= vp.timestep(ts.t_next)).all())
    # the old rule (shrink u, then round down) is one timestep lower on a sizeable share of these samples
    old = vp.timestep(vp.quantize((1 - ts.eta) * ts.tau))
    assert bool((old <= want).all()) and int((old < want).sum()) > 1000


def test_vp_target_hand_checked_values():
    """Hand-computed targets of S_8 (τ = 875, 751, …, 127) and S_4 through the training path."""
    vp = VPSchedule()
    ts = select_targets(50000, 250, 8, 8, 0.3, generator=torch.Generator().manual_seed(1), schedule=vp)
    tau_t, s_t = vp.timestep(ts.tau), vp.timestep(ts.s)
    # pick samples whose η lies where floor((1 − η)·875) = 700, i.e. η ∈ (1 − 701/875, 1 − 700/875] = (0.19886, 0.2]
    sel = (tau_t == 875) & (ts.eta > 1 - 701 / 875 + 1e-9) & (ts.eta <= 0.2)
    assert int(sel.sum()) > 0 and set(s_t[sel].tolist()) == {700}
    # τ = 375, η ∈ (1 − 301/375, 0.2]: s = 300 (the old rule gave 299 for η = 0.2)
    sel = (tau_t == 375) & (ts.eta > 1 - 301 / 375 + 1e-9) & (ts.eta <= 0.2)
    assert int(sel.sum()) > 0 and set(s_t[sel].tolist()) == {300}
    # τ at the clean end: s stays at the clean end
    sel = tau_t == -1
    assert int(sel.sum()) > 0 and set(s_t[sel].tolist()) == {-1}


def test_edm_targets_unchanged():
    """EDM: s = (1 − η)·u_τ on the continuous u axis, bit for bit."""
    e = EDMSchedule()
    for kw in (dict(schedule=e), {}):
        ts = select_targets(4096, 250, 4, 8, 0.3, generator=torch.Generator().manual_seed(2), **kw)
        assert torch.equal(ts.s, (1.0 - ts.eta) * ts.tau)




def test_teacher_hop_moves_the_teacher_destination_down_h_grid_steps():
    """teacher_hop h: t_n = u_{n−h} (the clean end at most), τ ≤ t_n, s ≤ τ; h = 1 is TDD's default selection."""
    g = dict(generator=torch.Generator().manual_seed(0))
    one = select_targets(4096, 250, 4, 8, 0.3, **g)
    again = select_targets(4096, 250, 4, 8, 0.3, generator=torch.Generator().manual_seed(0), hop=1)
    assert torch.equal(one.s, again.s) and torch.equal(one.t_next, again.t_next)
    h = select_targets(4096, 250, 4, 8, 0.3, generator=torch.Generator().manual_seed(0), hop=5)
    assert torch.equal(h.t_next, ((h.index - 5).clamp_min(0)).double() / 250)
    assert bool((h.s <= h.tau).all()) and bool((h.tau <= h.t_next).all()) and bool((h.t_next < h.t).all())
    with pytest.raises(ConfigError, match="teacher_hop"):
        select_targets(4, 250, 4, 8, 0.3, hop=0)


def test_subhop_levels_hand_values_and_properties():
    from tdd_video.core import subhop_levels
    # EDM (continuous u): equal thirds of [0.1, 0.7]
    lv = subhop_levels(torch.tensor([0.7]), torch.tensor([0.1]), 3, EDMSchedule())
    assert torch.allclose(lv[:, 0], torch.tensor([0.7, 0.5, 0.3, 0.1], dtype=torch.float64))
    assert subhop_levels(torch.tensor([0.7], dtype=torch.float64), 0.1, 1).tolist() == [[0.7], [0.1]]
    # VP: u = 0.751 (timestep 750) → 0.5 (timestep 499); the middle 0.6255 is rounded DOWN onto timestep 624
    vp = VPSchedule()
    lv = subhop_levels(torch.tensor([0.751]), torch.tensor([0.5]), 2, vp)
    assert vp.timestep(lv[:, 0]).tolist() == [750, 624, 499]
    # a zero-length jump stays put; ends are exact; rows never increase and stay in [u_to, u_from]
    g = torch.Generator().manual_seed(0)
    a = (torch.randint(1, 251, (64,), generator=g).double()) / 250
    b = a * torch.rand(64, generator=g, dtype=torch.float64)
    b[:4] = a[:4]
    for sched in (EDMSchedule(), vp):
        lv = subhop_levels(a, b, 4, sched)
        assert lv.shape == (5, 64) and torch.equal(lv[0], a) and torch.equal(lv[-1], b)
        assert (lv[1:] <= lv[:-1]).all() and (lv >= b).all() and (lv <= a).all()
        assert (lv[:, :4] == a[:4]).all()
    with pytest.raises(ConfigError):
        subhop_levels(a, b, 0)
    with pytest.raises(ValueError):
        subhop_levels(b[4:], a[4:], 2)


def test_grid_walk_levels_hand_values_and_bound():
    """The target's walk through S_16 (N = 250: [250, 235, 219, 204, 188, 172, 157, 141, 125, ...])."""
    from tdd_video.core import grid_walk_bound, grid_walk_levels, schedule_indices
    a = torch.tensor([0.8, 0.5, 0.3], dtype=torch.float64)
    lv = grid_walk_levels(a, torch.tensor([0.5, 0.5, 0.0]), 250, 16, 5)
    assert (lv * 250).round().T.tolist() == [[200, 188, 172, 157, 141, 125],   # 200 → 125 through S_16
                                              [125] * 6,                          # s = t_n: no sub-hop moves
                                              [75, 63, 47, 32, 16, 0]]
    assert lv.dtype == torch.float64 and torch.equal(lv[0], a)
    # t_n = 187 (just below the S_4 point 188) → τ = 125: 172, 157, 141 in between, 4 sub-hops: the bound for K = 4
    assert grid_walk_bound(250, 4, 4, 16) == 4 and grid_walk_bound(250, 8, 8, 16) == 2
    assert grid_walk_bound(250, 4, 8, 16) == 4 and grid_walk_bound(250, 16, 16, 16) == 1
    with pytest.raises(ValueError, match="sub-hops"):
        grid_walk_levels(torch.tensor([0.8]), torch.tensor([0.5]), 250, 16, 4)
    with pytest.raises(ValueError):
        grid_walk_levels(torch.tensor([0.2]), torch.tensor([0.5]), 250, 16, 4)
    # every target select_targets draws (η = 0) fits the bound; interior levels lie on S_16; ends exact; monotone
    g = torch.Generator().manual_seed(1)
    s16 = set((schedule_indices(250, 16)).tolist()) | {0}
    for sched in (EDMSchedule(), VPSchedule()):
        ts = select_targets(512, 250, 4, 8, 0.0, generator=g, schedule=sched)
        n = grid_walk_bound(250, 4, 8, 16)
        lv = grid_walk_levels(ts.t_next, ts.s, 250, 16, n)
        assert torch.equal(lv[0], ts.t_next) and torch.equal(lv[-1], ts.s.double())
        assert (lv[1:] <= lv[:-1]).all()
        inner = lv[1:-1][(lv[1:-1] < lv[:-2]) & (lv[1:-1] > ts.s.double())]
        assert set((inner * 250).round().long().tolist()) <= s16
        assert int(((lv[1:] < lv[:-1]).sum(0)).max()) == n        # some draw needs the whole bound
