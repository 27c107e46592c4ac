"""Quality bench options (tdd_video.eval.contenders, eval.quality): the tdd LoRA at a chosen strength, the default
render as a contender, custom TDD levels, paired FD differences."""
import torch

from tdd_video import zoo
from tdd_video.eval.contenders import Contenders, parse_contender
from tdd_video.eval.quality import QualityConfig
from tdd_video.families import load_family


def _unet_out(family, contenders, spec):
    unet = family.unet
    cfg = unet.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, cfg.in_channels, 4, 4, generator=g)
    emb = torch.randn(1, 1, cfg.cross_attention_dim, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02]])
    with contenders.using(parse_contender(spec)) as net, torch.no_grad():
        return net(x, torch.tensor([0.5]), emb, added_time_ids=ids).sample


def test_lora_scale_zero_is_the_base_and_half_lies_between():
    family = load_family("svd", str(zoo.resolve_model(zoo.DEFAULT_SVD)))
    lora_file = str(zoo.default_student_lora())
    outs = {}
    for scale in (0.0, 0.5, 1.0):
        cfg = QualityConfig(contenders=["base@1", "tdd@1"], tdd_lora=lora_file, tdd_lora_scale=scale, progress=False)
        c = Contenders(family, cfg, [parse_contender(s) for s in cfg.contenders])
        outs[scale] = _unet_out(family, c, "tdd@1")
        base = _unet_out(family, c, "base@1")
    assert torch.equal(outs[0.0], base)
    d_half, d_full = (outs[0.5] - base).abs().mean(), (outs[1.0] - base).abs().mean()
    assert 0 < d_half < d_full


def test_default_contender_is_the_cli_default_student_at_its_strength(tmp_path):
    """default@N = tdd@N with the zoo student made for N steps at zoo.strength_for_steps(N) (what img2vid renders
    without --model); 1 and 4 steps are different students; no model folder, or one without that student, is
    refused naming --contenders."""
    import pytest

    from tdd_video.errors import ConfigError
    family = load_family("svd", str(zoo.resolve_model(zoo.DEFAULT_SVD)))
    model_dir = str(zoo.resolve_model(zoo.DEFAULT_SVD))
    for steps in (1, 3, 4):
        path, scale = zoo.step_student_lora(steps, model_dir)
        assert path.parent.name == zoo.student_for_steps(steps) and scale == zoo.strength_for_steps(steps)
        cfg = QualityConfig(contenders=[f"tdd@{steps}", f"default@{steps}"], tdd_lora=str(path),
                            tdd_lora_scale=scale, model_dir=model_dir, progress=False)
        c = Contenders(family, cfg, [parse_contender(s) for s in cfg.contenders])
        assert torch.equal(_unet_out(family, c, f"default@{steps}"), _unet_out(family, c, f"tdd@{steps}"))
    cfg = QualityConfig(contenders=["default@1", "default@4"], model_dir=model_dir, progress=False)
    c = Contenders(family, cfg, [parse_contender(s) for s in cfg.contenders])
    assert not torch.equal(_unet_out(family, c, "default@1"), _unet_out(family, c, "default@4"))
    assert zoo.step_student_lora(1, tmp_path) is None
    for folder in (None, str(tmp_path)):
        cfg = QualityConfig(contenders=["default@2"], model_dir=folder, progress=False)
        with pytest.raises(ConfigError, match="--contenders"):
            Contenders(family, cfg, [parse_contender("default@2")])


def test_negative_lora_scale_is_refused_before_any_render():
    import pytest

    from tdd_video.errors import ConfigError
    from tdd_video.eval.quality import run_quality
    family = load_family("svd", str(zoo.resolve_model(zoo.DEFAULT_SVD)))
    cfg = QualityConfig(contenders=["tdd@4"], tdd_lora=str(zoo.default_student_lora()), tdd_lora_scale=-1.0,
                        progress=False, cache_dir=None)
    with pytest.raises(ConfigError, match="--tdd-lora-scale"):
        run_quality(cfg, family)


def test_tdd_grid_without_a_matching_contender_is_refused():
    import pytest

    from tdd_video.errors import ConfigError
    from tdd_video.eval.quality import run_quality
    family = load_family("svd", str(zoo.resolve_model(zoo.DEFAULT_SVD)))
    cfg = QualityConfig(contenders=["tdd@4"], tdd_lora=str(zoo.default_student_lora()), tdd_grid=[250, 125],
                        progress=False, cache_dir=None)
    with pytest.raises(ConfigError, match="--tdd-grid"):
        run_quality(cfg, family)
    cfg.contenders, cfg.tdd_grid = ["tdd@2"], [0, 5]          # bad levels: named by the flag, before any render
    with pytest.raises(ConfigError, match="'--tdd-grid'.*integers in"):
        run_quality(cfg, family)


def test_tdd_grid_is_used_by_the_matching_contender_only():
    """tdd@2 with grid [250, 125] gets exactly S_2's levels; [250, 63] other levels; tdd@4 and teacher keep S_K."""
    from tdd_video.sampling import make_sampler
    family = load_family("svd", str(zoo.resolve_model(zoo.DEFAULT_SVD)))
    lora_file = str(zoo.default_student_lora())
    sched = make_sampler(family, "tdd")
    sched.set_timesteps(2)
    s2 = sched.timesteps.tolist()
    got = {}
    for grid in (None, [250, 125], [250, 63]):
        cfg = QualityConfig(contenders=["tdd@2", "tdd@4"], tdd_lora=lora_file, tdd_grid=grid, progress=False)
        c = Contenders(family, cfg, [parse_contender(x) for x in cfg.contenders])
        got[str(grid)] = c.tdd_timesteps(parse_contender("tdd@2"), make_sampler(family, "tdd"))
        assert c.tdd_timesteps(parse_contender("tdd@4"), make_sampler(family, "tdd")) is None
        assert c.tdd_timesteps(parse_contender("teacher@2"), make_sampler(family, "tdd")) is None
    assert got["None"] is None
    assert torch.allclose(torch.tensor(got["[250, 125]"]), torch.tensor(s2))
    assert got["[250, 63]"][0] == got["[250, 125]"][0] and got["[250, 63]"][1] < got["[250, 125]"][1]


def test_fd_difference_is_paired_over_held_out_images():
    """Identical sets differ by exactly 0; a contender that is a small perturbation of another gets a paired SE far
    below the two FDs' own jackknife SEs combined (their shared noise cancels); the SE is the delete-one-image
    jackknife over all three sets."""
    import math

    import pytest

    from tdd_video.eval.fvd import frechet_distance, gaussian_stats
    from tdd_video.eval.quality import fd_difference_with_se, fd_with_se
    g = torch.Generator().manual_seed(0)
    ref, a = torch.randn(64, 6, generator=g), torch.randn(64, 6, generator=g) + 0.3
    b = a + 0.05 * torch.randn(64, 6, generator=g)
    groups = torch.arange(64) % 32                                   # 32 images x 2 seeds
    assert fd_difference_with_se(a, a, ref, groups, groups) == (0.0, 0.0)
    d, se = fd_difference_with_se(a, b, ref, groups, groups)
    fd = lambda x, r: frechet_distance(*gaussian_stats(x), *gaussian_stats(r))      # noqa: E731
    assert d == pytest.approx(fd(a, ref) - fd(b, ref), abs=1e-9)
    assert 0 < se < 0.1 * math.hypot(fd_with_se(a, ref)[1], fd_with_se(b, ref)[1])
    grp3 = torch.arange(9) % 3                                        # by hand: 3 groups
    a3, b3, r3 = a[:9], b[:9] * 1.5, ref[:9]
    loo = torch.tensor([fd(a3[grp3 != k], r3[grp3 != k]) - fd(b3[grp3 != k], r3[grp3 != k]) for k in range(3)],
                       dtype=torch.float64)
    want = math.sqrt(2 / 3 * float(((loo - loo.mean()) ** 2).sum()))
    assert fd_difference_with_se(a3, b3, r3, grp3, grp3)[1] == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="paired"):
        fd_difference_with_se(a, b[:10], ref, groups, groups)


def test_fd_versus_rows_and_refusal():
    import pytest

    from tdd_video.errors import ConfigError
    from tdd_video.eval.quality import run_quality
    family = load_family("svd", str(zoo.resolve_model(zoo.DEFAULT_SVD)))
    cfg = QualityConfig(contenders=["teacher@2", "tdd@1"], tdd_lora=str(zoo.default_student_lora()),
                        fd_versus="animatelcm@4", progress=False, cache_dir=None, num_images=3, seeds=[0], batch=3)
    with pytest.raises(ConfigError, match="--fd-versus"):
        run_quality(cfg, family)
    cfg.fd_versus = "teacher@2"
    rows = {r["contender"]: r for r in run_quality(cfg, family)}
    assert "fd_diff" not in rows["teacher@25"] and "fd_diff" not in rows["teacher@2"]
    tdd = rows["tdd@1"]
    assert tdd["fd_minus"] == "teacher@2" and tdd["fd_diff_se"] > 0
    assert tdd["fd_diff"] == pytest.approx(tdd["fd"] - rows["teacher@2"]["fd"], abs=1e-9)
