"""Trainable layouts (LoRA on the shared base, spatial/temporal partial, full), gradient
checkpointing, the fp32 EMA target, and the TensorBoard histograms of the target-selection stats."""
import pytest
import torch

from tdd_video.engine.ema import EMA
from tdd_video.engine.logging import MetricsLogger
from tdd_video.engine.trainables import Trainables
from tdd_video.errors import ConfigError


def _family():
    from tdd_video.families import load_family
    return load_family("svd", "tiny")


@pytest.mark.parametrize("kind", ["spatial", "temporal", "full"])
def test_partial_and_full_layouts_select_the_right_blocks_and_copy_the_teacher(kind):
    fam = _family()
    nets = Trainables(fam, kind, gradient_checkpointing=True)
    names = [n for n, _ in nets.named_parameters()]
    assert names and fam.unet.is_gradient_checkpointing
    if kind == "spatial":
        assert all("temporal" not in n and "time_mixer" not in n for n in names)
        assert any(".transformer_blocks." in n for n in names) and any("spatial_res_block" in n for n in names)
    if kind == "temporal":
        assert all(("temporal" in n) or ("time_mixer" in n) or ("time_pos_embed" in n) for n in names)
        assert any("temporal_transformer_blocks" in n for n in names)
    if kind == "full":
        assert len(names) == len(list(fam.unet.parameters()))
    # the teacher is a frozen copy, not the module being trained
    with nets.teacher() as t:
        assert t is not fam.unet and not any(p.requires_grad for p in t.parameters())
    with torch.no_grad():
        nets.parameters()[0].add_(1.0)
    with nets.teacher() as t:
        n0 = names[0]
        assert not torch.equal(dict(t.named_parameters())[n0], dict(fam.unet.named_parameters())[n0])


def test_lora_layout_shares_the_base():
    pytest.importorskip("tdd_video.lora")
    fam = _family()
    total = sum(p.numel() for p in fam.unet.parameters())
    nets = Trainables(fam, "lora", lora_rank=4)
    assert nets.teacher_module is None and 0 < nets.num_trainable() < 0.2 * total
    assert all(".student." in n for n, _ in nets.named_parameters())
    with nets.teacher() as t:
        assert t is fam.unet


def test_unsupported_choices_are_config_errors():
    from standin_family import ToyFamily
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        Trainables(ToyFamily(), "full", gradient_checkpointing=True)
    with pytest.raises(ConfigError, match="selects no parameter"):
        Trainables(ToyFamily(), "temporal")


def test_ema_is_fp32_and_swap_restores():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    ema = EMA([("w", p)], 0.9)
    with torch.no_grad():
        p.fill_(2.0)
    ema.update([("w", p)])
    assert ema.shadow["w"].dtype == torch.float32 and torch.allclose(ema.shadow["w"], torch.full((3,), 1.1))
    with ema.swapped_in([("w", p)]):
        assert torch.allclose(p.float(), torch.full((3,), 1.1), atol=1e-2)
    assert torch.equal(p, torch.full((3,), 2.0, dtype=torch.bfloat16))


def test_target_selection_histograms_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    log = MetricsLogger(tmp_path, enabled=True, tensorboard=True)
    g = torch.Generator().manual_seed(0)
    log.add_stats({"k": torch.randint(4, 9, (16,), generator=g), "tau": torch.rand(16, generator=g),
                   "eta": torch.rand(16, generator=g) * 0.3, "t": torch.rand(16, generator=g),
                   "loss": torch.rand(16, generator=g)})
    log.step(1, {"loss": 0.5, "lr": 1e-4, "grad_norm": 1.0, "samples_per_s": 3.0})
    bins = log.flush(1)
    log.close()
    assert bins and all(k.startswith("loss_by_noise/u_") for k in bins)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"target/k", "target/tau", "target/eta", "loss/per_sample"} <= set(tags["histograms"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s"} <= set(tags["scalars"])
