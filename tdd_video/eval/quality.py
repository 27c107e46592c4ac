"""The quality bench: few-step students against the many-step teacher on held-out images and seeds.

For every contender (`METHOD@STEPS`, see eval.contenders) on every held-out (image, seed) pair — the
same conditioning and the same initial noise for every contender — it measures (docs/math.md §12):

* same-noise distance to teacher@25 (Euler on the Karras grid, frame-wise CFG 1 → 3): latent MSE and
  pixel PSNR;
* sharpness and motion relative to teacher@25 of the same pair (Laplacian energy, mean |frame change|);
* a distribution metric: the Fréchet distance between fixed random-network video features
  (eval.features) of the contender's samples and of a REFERENCE set, teacher@25 on the same images
  but with independent noise (other seeds). teacher@25 itself therefore scores the metric's floor,
  and a student that leaves the same-noise trajectory on purpose (γ-sampling, adversarial) is judged
  on its distribution, not on a trajectory it was never meant to follow.
Every figure is a mean over pairs with its standard error (std/√n); the FD's standard error is a
jackknife over the samples of both sets. With `fd_versus`, every row also gets its FD minus that
contender's, with a paired jackknife SE over the held-out images (fd_difference_with_se).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from tdd_video.errors import ConfigError, check_range
from tdd_video.eval import metrics as M
from tdd_video.eval.contenders import Contenders, parse_contender
from tdd_video.eval.features import RandomVideoFeatures
from tdd_video.eval.fvd import frechet_distance, gaussian_stats
from tdd_video.eval.heldout import heldout_images
from tdd_video.sampling import make_sampler

Tensor = torch.Tensor
REFERENCE = "teacher@25"
REFERENCE_SEED_OFFSET = 100_000       # seeds of the distribution reference set (independent noise)


@dataclass
class QualityConfig:
    """What bench/quality.py measures (see its --help)."""

    contenders: list[str] = field(default_factory=lambda: ["teacher@4", "teacher@8", "teacher@25", "base@4",
                                                             "tdd@1", "tdd@2", "tdd@4", "tdd@8"])
    num_images: int = 32
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    batch: int = 16
    tdd_lora: str | None = None
    tdd_unet: str | None = None
    animatelcm_lora: str | None = None
    animatelcm_unet: str | None = None
    adv_lora: str | None = None
    adv_unet: str | None = None
    tdd_eta: float = 0.0
    tdd_guidance: float = 1.0
    tdd_lora_scale: float = 1.0            # strength of the tdd LoRA (1 = as trained)
    tdd_grid: list[int] | None = None      # custom TDD levels (grid indices) for tdd@len(grid)
    adv_lora_scale: float = 1.0            # strength of the adv LoRA
    animatelcm_guidance: tuple[float, float] = (1.0, 1.0)
    teacher_guidance: tuple[float, float] = (1.0, 3.0)
    refine_strength: float = 0.05
    fps_id: int = 6
    motion_bucket_id: int = 127
    noise_aug: float = 0.02
    progress: bool = True
    cache_dir: str | None = None          # teacher samples (they depend only on the base model) are kept here
    fd_versus: str | None = None           # also give every row its FD minus this contender's, paired SE
    model_dir: str | None = None           # the model's folder: default@N contenders use <model_dir>/students/


def mean_se(values: list[float]) -> tuple[float, float]:
    """(mean, standard error = sample std / √n); SE is 0 for one value."""
    x = torch.tensor(values, dtype=torch.float64)
    if x.numel() == 0:
        return float("nan"), float("nan")
    se = float(x.std(unbiased=True) / math.sqrt(x.numel())) if x.numel() > 1 else 0.0
    return float(x.mean()), se


def fd_with_se(feats: Tensor, ref: Tensor) -> tuple[float, float]:
    """Fréchet distance of two feature sets [N, D] and its jackknife standard error: leave one sample out of
    either set, SE² = Σ_sets (n−1)/n·Σ_i (FD_(i) − mean)². (A bootstrap would duplicate samples, which
    itself changes a covariance-based distance.)"""
    fd = frechet_distance(*gaussian_stats(feats), *gaussian_stats(ref))
    var = 0.0
    for which in (feats, ref):
        n = which.shape[0]
        if n < 3:
            return fd, float("nan")
        vals = []
        for i in range(n):
            rest = torch.cat([which[:i], which[i + 1:]])
            a, b = (rest, ref) if which is feats else (feats, rest)
            vals.append(frechet_distance(*gaussian_stats(a), *gaussian_stats(b)))
        var += _jackknife_var(vals)
    return fd, math.sqrt(var)


def _jackknife_var(leave_one_out: list[float]) -> float:
    """(n−1)/n·Σ_i (θ_(i) − mean)²: the jackknife variance from the n leave-one-out estimates θ_(i)."""
    v = torch.tensor(leave_one_out, dtype=torch.float64)
    n = v.numel()
    return float((n - 1) / n * ((v - v.mean()) ** 2).sum())


def fd_difference_with_se(feats_a: Tensor, feats_b: Tensor, ref: Tensor, groups: Tensor,
                          ref_groups: Tensor) -> tuple[float, float]:
    """FD(a, ref) − FD(b, ref) and its standard error by a delete-one-group jackknife (docs/math.md §12).
    a and b are paired (row i of both comes from the same image and noise), so a group — one held-out image —
    is left out of a, b and the reference at once: the noise they share (the images, the reference set)
    cancels in the difference instead of adding up as it would in √(SE_a² + SE_b²).
    SE² = (G−1)/G·Σ_g (D_(g) − mean)² over the G groups."""
    if feats_a.shape != feats_b.shape or groups.shape[0] != feats_a.shape[0] or ref_groups.shape[0] != ref.shape[0]:
        raise ValueError("fd_difference_with_se: a and b must be paired rows with one group id each; "
                         f"got {tuple(feats_a.shape)}, {tuple(feats_b.shape)}, {groups.shape[0]} and "
                         f"{ref.shape[0]} reference rows with {ref_groups.shape[0]} ids")

    def diff(keep, keep_ref) -> float:
        r = gaussian_stats(ref[keep_ref])
        return (frechet_distance(*gaussian_stats(feats_a[keep]), *r)
                - frechet_distance(*gaussian_stats(feats_b[keep]), *r))

    d = diff(torch.ones_like(groups, dtype=torch.bool), torch.ones_like(ref_groups, dtype=torch.bool))
    ids = torch.unique(torch.cat([groups, ref_groups]))
    if ids.numel() < 3:
        return d, float("nan")
    return d, math.sqrt(_jackknife_var([diff(groups != g, ref_groups != g) for g in ids]))


class _Batches:
    """The held-out (image, seed) pairs in fixed batches: conditioning and noise per pair, independent of batching."""

    def __init__(self, family, images: list[Tensor], seeds: list[int], cfg: QualityConfig, frames: int):
        self.family, self.cfg, self.frames = family, cfg, frames
        self.images = images
        self.pairs = [(i, s) for s in seeds for i in range(len(images))]

    def cond(self, pairs):
        conds = []
        for i, s in pairs:
            gen = torch.Generator().manual_seed(s * 7919 + i)
            conds.append(self.family.encode_conditioning(
                {"first_frame": self.images[i][None].to(self.family.device)}, gen, train=False,
                noise_aug=self.cfg.noise_aug, fps_id=self.cfg.fps_id, motion_bucket_id=self.cfg.motion_bucket_id))
        cond = conds[0].cat(*conds[1:]) if len(conds) > 1 else conds[0]
        return cond, self.family.null_conditioning(cond)

    def noise(self, pairs) -> Tensor:
        _, c, h, w = self.family.latent_shape(1, self.frames, *self.images[0].shape[-2:])[1:]
        shape = (self.frames, c, h, w)
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s * 100_003 + i))
                            for i, s in pairs]).to(self.family.device)

    def chunks(self):
        b = max(1, self.cfg.batch)
        for k in range(0, len(self.pairs), b):
            yield k, self.pairs[k:k + b]


def _sample_all(bench: Contenders, c, batches: _Batches, seeds_of_batch: int = 0) -> tuple[Tensor, Tensor, float]:
    """(latents [P, F, C, h, w], videos [P, F, 3, H, W] float16 on CPU, UNet passes per video) for contender c."""
    fam = batches.family
    lats, vids, passes = [], [], []
    for k, pairs in batches.chunks():
        cond, null = batches.cond(pairs)
        noise = batches.noise(pairs)
        bench.counter.reset(videos=len(pairs))
        with bench.using(c):
            lat = bench.sample(c, cond, null, noise, seed=seeds_of_batch + 1000 + k).float()
        passes.append(bench.counter.passes)
        with torch.no_grad():
            vids.append(fam.decode_latents(lat).clamp(-1, 1).cpu().half())
        lats.append(lat.cpu())
    return torch.cat(lats), torch.cat(vids), float(sum(passes) / len(passes))


def _cached(cfg: QualityConfig, family, key: str, make):
    """make() -> (latents, videos, passes), kept in cfg.cache_dir under a key of the base weights and settings."""
    if not cfg.cache_dir:
        return make()
    import hashlib
    import json
    from pathlib import Path
    unet = family.unet
    probe = next(iter(unet.state_dict().values())).flatten()[:64].tolist()
    blob = json.dumps({"key": key, "cfg": dict(unet.config), "probe": probe, "images": cfg.num_images,
                       "seeds": list(cfg.seeds), "guidance": list(cfg.teacher_guidance), "aug": cfg.noise_aug,
                       "ids": [cfg.fps_id, cfg.motion_bucket_id]}, sort_keys=True, default=str)
    path = Path(cfg.cache_dir) / f"{key.replace('@', '_')}_{hashlib.sha256(blob.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        d = torch.load(path, weights_only=True)
        return d["latents"], d["videos"], float(d["passes"])
    lat, vid, passes = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"latents": lat, "videos": vid, "passes": torch.tensor(passes)}, path)
    return lat, vid, passes


def run_quality(cfg: QualityConfig, family, log=lambda msg: None) -> list[dict]:
    """Measure every contender (module docstring); returns one row (dict) per contender, reference first."""
    specs = list(dict.fromkeys([REFERENCE, *cfg.contenders]))
    contenders = [parse_contender(s) for s in specs]
    if not cfg.seeds:
        raise ConfigError("--seeds", "give at least one seed")
    for key in ("tdd_lora_scale", "adv_lora_scale"):        # as img2vid's --lora-scale: 0 (= the base) and up
        check_range("--" + key.replace("_", "-"), getattr(cfg, key), 0.0, None)
    if cfg.fd_versus and cfg.fd_versus not in specs:
        raise ConfigError("--fd-versus", f"got {cfg.fd_versus!r}, which is not one of the contenders {specs}")
    if cfg.tdd_grid and not any(c.method == "tdd" and c.steps == len(cfg.tdd_grid) for c in contenders):
        raise ConfigError("--tdd-grid", f"{len(cfg.tdd_grid)} levels given, but no tdd@{len(cfg.tdd_grid)} contender "
                                        "to sample with them")
    if cfg.tdd_grid:                                        # bad levels: refused before any render
        make_sampler(family, "tdd").timesteps_of_grid(cfg.tdd_grid, key="--tdd-grid")
    factor = family.vae_scale_factor
    size = int(family.unet.config.sample_size) * factor
    frames = int(getattr(family, "num_frames", 8))
    images, names = heldout_images(cfg.num_images, size)
    bench = Contenders(family, cfg, contenders)
    batches = _Batches(family, images, list(cfg.seeds), cfg, frames)
    ref_batches = _Batches(family, images, [s + REFERENCE_SEED_OFFSET for s in cfg.seeds], cfg, frames)
    features = RandomVideoFeatures()
    try:
        log(f"reference set: {REFERENCE} on {len(images)} images x seeds {cfg.seeds} + {REFERENCE_SEED_OFFSET}")
        _, ref_set, _ = _cached(cfg, family, "reference_set", lambda: _sample_all(
            bench, contenders[0], ref_batches, seeds_of_batch=REFERENCE_SEED_OFFSET))
        ref_feats = features(ref_set.float())
        out, teacher, feats = [], None, {}
        for c in contenders:
            log(f"sampling {c.label} on {len(batches.pairs)} pairs")
            if c.method == "teacher":
                lat, vid, passes = _cached(cfg, family, c.label, lambda: _sample_all(bench, c, batches))
            else:
                lat, vid, passes = _sample_all(bench, c, batches)
            if teacher is None:
                teacher = (lat, vid.float())
            t_lat, t_vid = teacher
            v = vid.float()
            mse = [M.latent_mse(lat[p], t_lat[p]) for p in range(len(lat))]
            psnr = [M.psnr(v[p], t_vid[p]) for p in range(len(v))]
            sharp = [M.ratio(M.sharpness(v[p]), M.sharpness(t_vid[p])) for p in range(len(v))]
            motion = [M.ratio(M.temporal_change(v[p]), M.temporal_change(t_vid[p])) for p in range(len(v))]
            feats[c.label] = features(v)
            fd, fd_se = fd_with_se(feats[c.label], ref_feats)
            row = {"contender": c.label, "method": c.method, "steps": c.steps, "unet_passes": passes,
                   "pairs": len(lat), "images": len(images), "seeds": list(cfg.seeds)}
            for key, vals in (("latent_mse", mse), ("psnr_db", [p for p in psnr if math.isfinite(p)]),
                              ("sharpness_ratio", sharp), ("motion_ratio", motion)):
                row[key], row[f"{key}_se"] = mean_se(vals)
            if c.label == REFERENCE:
                row["psnr_db"], row["psnr_db_se"] = math.inf, 0.0
            row["fd"], row["fd_se"] = fd, fd_se
            out.append(row)
    finally:
        bench.counter.close()
    if cfg.fd_versus:
        groups = torch.tensor([i for i, _ in batches.pairs])
        ref_groups = torch.tensor([i for i, _ in ref_batches.pairs])
        for row in out:
            if row["contender"] not in (REFERENCE, cfg.fd_versus):
                row["fd_minus"] = cfg.fd_versus
                row["fd_diff"], row["fd_diff_se"] = fd_difference_with_se(
                    feats[row["contender"]], feats[cfg.fd_versus], ref_feats, groups, ref_groups)
    out[0]["image_names"] = names
    return out
