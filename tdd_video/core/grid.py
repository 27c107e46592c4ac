"""The N-point teacher grid, TDD's K-step schedules and target timestep selection (docs/math.md §1c, §3, §5).

All functions work with *grid indices* k ∈ {0..N} (u_k = k/N; k = 0 is the clean end, k = N the
noisiest point) so that the same code serves the EDM σ grid and the VP timestep grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tdd_video.core.params import validate_tdd_params
from tdd_video.errors import ConfigError, check_range

Tensor = torch.Tensor


def grid_u(num_grid: int) -> Tensor:
    """u values of the grid, ascending: u_k = k/N, k = 0..N (k = 0 the clean end). float64 [N+1]."""
    check_range("num_grid", num_grid, 1, None)
    return torch.arange(num_grid + 1, dtype=torch.float64) / num_grid


def schedule_indices(num_grid: int, k: int) -> Tensor:
    """S_K as grid indices, noisiest first: N − floor(j·N/K), j = 0..K−1 (docs/math.md §3.1). int64 [K].

    N = 250 on the VP grid gives timesteps [999, 751, 499, 251] for K = 4."""
    validate_tdd_params(num_grid, k, k)
    j = torch.arange(k, dtype=torch.int64)
    return num_grid - torch.div(j * num_grid, k, rounding_mode="floor")


def nonuniform_schedule_indices(num_grid: int, k: int, k_min: int = 4, k_max: int = 8) -> Tensor:
    """TDD non-equidistant K-step schedule, noisiest first (docs/math.md §5). int64 [K].

    Short hops early (the S_{k_max} spacing), long hops late (the S_{k_min} spacing): take as many
    leading points of S_{k_max} as needed, then continue on S_{k_min}, so every point lies on the
    training schedule set {S_K}. The number of fine points h is the smallest for which the coarse
    tail below the h-th fine point supplies K − h points (e.g. N = 250, K = 5: [250, 219, 188, 125, 63]).
    Falls back to S_K when K ∉ (k_min, k_max)."""
    validate_tdd_params(num_grid, k_min, k_max)
    check_range("steps", k, 1, None)
    if not (k_min < k < k_max):
        return schedule_indices(num_grid, k)
    fine, coarse = schedule_indices(num_grid, k_max), schedule_indices(num_grid, k_min)
    best = None
    for h in range(1, k):
        tail = coarse[coarse < fine[h - 1]]
        if len(tail) >= k - h:
            best = torch.cat([fine[:h], tail[: k - h]])
            break
    if best is None:  # pragma: no cover - impossible for k_min < k < k_max
        return schedule_indices(num_grid, k)
    return best


def tau_table(num_grid: int, k_min: int, k_max: int) -> Tensor:
    """table[K − k_min, k] = the largest point of S_K ∪ {0} that is ≤ k. int64 [k_max−k_min+1, N+1]."""
    validate_tdd_params(num_grid, k_min, k_max)
    ks = torch.arange(num_grid + 1)
    rows = []
    for kk in range(k_min, k_max + 1):
        pts = torch.cat([schedule_indices(num_grid, kk), torch.zeros(1, dtype=torch.int64)])
        cand = torch.where(pts[None, :] <= ks[:, None], pts[None, :], torch.full_like(pts[None, :], -1))
        rows.append(cand.max(dim=1).values)
    return torch.stack(rows)


@dataclass
class TargetSample:
    """One batch of TDD source/target times on the u axis (all [B])."""

    t: Tensor        # source time u_t (float64)
    t_next: Tensor   # adjacent less-noisy teacher grid point u_{t_n}
    s: Tensor        # target time u_s = shrink(u_τ, η) in the schedule's units (s ≤ τ ≤ t_n < t)
    k: Tensor        # sampled number of steps K (int64)
    tau: Tensor      # u of the next S_K point at or below t_n
    eta: Tensor      # sampled η ∈ [0, η_max]
    index: Tensor    # source grid index n ∈ {1..N} (int64)


def select_targets(batch: int, num_grid: int = 250, k_min: int = 4, k_max: int = 8,
                   eta_max: float = 0.3, *, generator: torch.Generator | None = None,
                   source_weights: Tensor | None = None, schedule=None, hop: int = 1) -> TargetSample:
    """TDD target timestep selection, vectorised over the batch (docs/math.md §3.2–3.3; paper Eq. 6).

    n ~ U{1..N} (or ∝ source_weights [N]); t = u_n, t_n = u_{max(n−hop, 0)}; K ~ U{k_min..k_max};
    τ = max{p ∈ S_K ∪ {0} : p ≤ n−hop}; η ~ U[0, η_max]; s = shrink(u_τ, η), then s ≤ τ. hop = 1 is TDD's
    one-grid-step teacher; hop h > 1 lets the teacher solve h grid steps (LCM's skipping step).

    The shrink is done in the family schedule's own units: EDM s = (1 − η)·u_τ (continuous); VP
    s = floor((1 − η)·τ) on integer timesteps, as the official TDD code does (not (1 − η) on u and then
    rounded down, which is one timestep lower for some pairs). Without a `schedule`, s = (1 − η)·u_τ."""
    validate_tdd_params(num_grid, k_min, k_max, eta_max)
    if source_weights is None:
        n = torch.randint(1, num_grid + 1, (batch,), generator=generator)
    else:
        w = torch.as_tensor(source_weights, dtype=torch.float64)
        if w.shape != (num_grid,) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ConfigError("source_weights", f"need {num_grid} non-negative weights with a positive sum")
        n = torch.multinomial(w, batch, replacement=True, generator=generator) + 1
    k = torch.randint(k_min, k_max + 1, (batch,), generator=generator)
    eta = torch.rand(batch, generator=generator, dtype=torch.float64) * eta_max
    check_range("teacher_hop", hop, 1, num_grid)
    nxt = (n - hop).clamp_min(0)                 # the teacher's destination: `hop` grid steps down (docs/math.md §3.2)
    tau_idx = tau_table(num_grid, k_min, k_max)[k - k_min, nxt]
    tau = tau_idx.to(torch.float64) / num_grid
    if schedule is not None:
        s = torch.minimum(schedule.shrink(tau, eta).to(torch.float64), tau)
    else:
        s = (1.0 - eta) * tau
    return TargetSample(t=n.to(torch.float64) / num_grid, t_next=nxt.to(torch.float64) / num_grid,
                        s=s, k=k, tau=tau, eta=eta, index=n)


def subhop_levels(u_from: Tensor, u_to: Tensor, hops: int, schedule=None) -> Tensor:
    """Levels of a jump u_from → u_to split into `hops` equal sub-hops on the u axis (docs/math.md §3.5).

    Returns float64 [hops + 1, B]: row 0 = u_from, row `hops` = u_to exactly, rows in between
    u_from + (u_to − u_from)·j/hops, put on the schedule's lattice by `schedule.quantize` (VP: rounded down
    onto integer timesteps; EDM: unchanged). Rows never increase and stay within [u_to, u_from] (when both
    ends lie on the lattice); a row may repeat its predecessor (a zero-length sub-hop), which the caller
    treats as the identity. hops = 1 gives [u_from, u_to]."""
    check_range("target_hops", hops, 1, None)
    a = torch.as_tensor(u_from, dtype=torch.float64)
    b = torch.as_tensor(u_to, dtype=torch.float64)
    a, b = torch.broadcast_tensors(a, b)
    if bool((b > a).any()):
        raise ValueError("subhop_levels needs u_to <= u_from")
    rows = [a]
    for j in range(1, hops):
        mid = a + (b - a) * (j / hops)
        if schedule is not None:
            mid = schedule.quantize(mid).to(torch.float64)
        rows.append(torch.minimum(torch.maximum(mid, b), rows[-1]))
    rows.append(b)
    return torch.stack(rows)


def grid_walk_levels(u_from: Tensor, u_to: Tensor, num_grid: int, walk_k: int, length: int) -> Tensor:
    """Levels of a jump u_from → u_to that walks through the points of S_walk_k lying strictly between
    the two ends (docs/math.md §3.5): the path a student trained on S_walk_k takes. float64 [length + 1, B].

    Row 0 = u_from; then the S_walk_k points p/N with u_to < p/N < u_from, noisiest first; then u_to, repeated
    to fill `length` sub-hops (repeats are zero-length sub-hops the caller treats as the identity). Raises
    ValueError when a row needs more than `length` sub-hops (grid_walk_bound gives a safe length)."""
    check_range("walk_k", walk_k, 1, num_grid)
    check_range("length", length, 1, None)
    a = torch.as_tensor(u_from, dtype=torch.float64)
    b = torch.as_tensor(u_to, dtype=torch.float64)
    a, b = torch.broadcast_tensors(a.reshape(-1), b.reshape(-1))
    if bool((b > a).any()):
        raise ValueError("grid_walk_levels needs u_to <= u_from")
    pts = schedule_indices(num_grid, walk_k).to(torch.float64) / num_grid          # descending [G]
    tol = 1e-9
    inside = (pts[None] < a[:, None] - tol) & (pts[None] > b[:, None] + tol)     # [B, G], a contiguous run
    count = inside.sum(1)
    if bool((count + 1 > length).any()):
        raise ValueError(f"grid_walk_levels: a row needs {int(count.max()) + 1} sub-hops, length is {length}")
    inner = torch.where(inside, pts[None], torch.full_like(inside, -1.0, dtype=torch.float64))
    inner = inner.sort(dim=1, descending=True).values                            # the run's points first
    rows = [a]
    for j in range(length - 1):
        rows.append(torch.where(j < count, inner[:, j], b) if j < inner.shape[1] else b)
    rows.append(b)
    return torch.stack(rows)


def grid_walk_bound(num_grid: int, k_min: int, k_max: int, walk_k: int, hop: int = 1) -> int:
    """The most sub-hops grid_walk_levels needs for any target select_targets can draw with η = 0:
    max over source n and K of (#S_walk_k points strictly between τ_K(t_n) and t_n) + 1. A constant of the
    config, so every rank makes the same number of target calls (ZeRO-3)."""
    validate_tdd_params(num_grid, k_min, k_max)
    check_range("walk_k", walk_k, 1, num_grid)
    nxt = (torch.arange(1, num_grid + 1) - hop).clamp_min(0)                    # t_n of every source n
    tau = tau_table(num_grid, k_min, k_max)[:, nxt]                              # [K range, N]
    pts = schedule_indices(num_grid, walk_k)
    between = (pts[None, None] < nxt[None, :, None]) & (pts[None, None] > tau[..., None])
    return int(between.sum(-1).max()) + 1


def source_density(num_grid: int, kind: str = "uniform") -> Tensor | None:
    """Named source-time densities over grid indices 1..N: 'uniform' (None), 'high-noise'
    (weight ∝ k) or 'low-noise' (weight ∝ N+1−k)."""
    k = torch.arange(1, num_grid + 1, dtype=torch.float64)
    if kind == "uniform":
        return None
    if kind == "high-noise":
        return k
    if kind == "low-noise":
        return num_grid + 1 - k
    raise ConfigError("source_density", f"got {kind!r}, allowed values are 'uniform', 'high-noise', 'low-noise'")


# -- the Karras σ grid (AnimateLCM's training grid and the teacher's Euler sampler) ----------------
ANIMATELCM_NUM_GRID = 40
U_SIGMA_MIN = 1e-12        # u of a Karras grid's last point: σ(u) = σ_min·(1 + O(1e-10)), not the clean end


def karras_grid_u(num_points: int) -> Tensor:
    """u of an N-point Karras grid σ_max → σ_min, then the clean end (docs/math.md §8). float64 [N + 1].

    u_i = 1 − i/(N − 1) for i < N − 1, u_{N−1} = U_SIGMA_MIN (σ = σ_min, not 0), u_N = 0 (σ = 0).
    On the EDM schedule this is diffusers' Karras σ list with its trailing 0. N = 1 gives [1, 0]."""
    check_range("num_points", num_points, 1, None)
    if num_points == 1:
        return torch.tensor([1.0, 0.0], dtype=torch.float64)
    u = 1.0 - torch.arange(num_points, dtype=torch.float64) / (num_points - 1)
    u[-1] = U_SIGMA_MIN
    return torch.cat([u, torch.zeros(1, dtype=torch.float64)])


def animatelcm_step_indices(steps: int, num_grid: int = ANIMATELCM_NUM_GRID) -> Tensor:
    """Grid indices a K-step AnimateLCM sampler visits: [0, r, …, (K−1)·r], r = N // K (docs/math.md §8). int64 [K]."""
    check_range("steps", steps, 1, num_grid)
    return torch.arange(steps, dtype=torch.int64) * (num_grid // steps)
