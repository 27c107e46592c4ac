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
