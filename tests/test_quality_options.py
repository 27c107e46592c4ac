"""Quality bench option --tdd-lora-scale (tdd_video.eval.contenders): the tdd LoRA at a chosen strength."""
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
