"""Adversarial TDD (docs/math.md §11) on the real tiny SVD / SDXL UNets with a LoRA student on the shared base:
the discriminator's features come from the frozen base, the generator step trains only the student, the
discriminator step trains only the heads, and a resumed run (heads + their optimizer) is exact."""
import pytest
import torch

from tdd_video.engine.config import config_from_dict
from tdd_video.engine.trainables import Trainables
from tdd_video.engine.trainer import train
from tdd_video.families import load_family
from tdd_video.methods import TDD, TDDConfig
from tdd_video.methods.adversarial import frozen_features
from tdd_video.methods.configs import AdversarialConfig

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def _batch(name, b=2):
    g = torch.Generator().manual_seed(0)
    if name == "svd":
        return {"pixel_values": torch.rand(b, 4, 3, 64, 64, generator=g) * 2 - 1,
                "fps_id": torch.tensor([6, 11][:b]), "motion_bucket_id": torch.tensor([127, 40][:b])}
    return {"pixel_values": torch.rand(b, 3, 64, 64, generator=g) * 2 - 1, "caption": ["a red ball", "a cat"][:b]}


def _setup(name):
    fam = load_family(name, "tiny")
    nets = Trainables(fam, "lora", lora_rank=4, lora_preset="attn")
    with torch.no_grad():
        for p in nets.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    g = torch.Generator().manual_seed(0)
    batch = _batch(name)
    x0 = fam.encode_latents(batch, g)
    cond = fam.encode_conditioning(batch, g, train=True)
    method = TDD(TDDConfig(adv=AdversarialConfig(weight=0.5)), fam)
    return fam, nets, method, x0, cond, g


def test_weight_schedule():
    a = AdversarialConfig(weight=0.4, start_step=10, ramp_steps=4)
    assert [a.weight_at(s) for s in (0, 9, 10, 11, 13, 20)] == [0.0, 0.0, 0.1, 0.2, 0.4, 0.4]
    assert AdversarialConfig(weight=0.0).weight_at(100) == 0.0


@pytest.mark.parametrize("name", ["svd", "sdxl"])
def test_generator_step_trains_student_only_and_discriminator_step_heads_only(name):
    fam, nets, method, x0, cond, g = _setup(name)
    base = {n: p.detach().clone() for n, p in fam.unet.named_parameters() if not p.requires_grad}
    out = method.training_step(x0, cond, nets, g)
    assert "adv/g_loss" in out.scalars and out.aux
    out.loss.backward()
    assert all(p.grad is not None for p in nets.parameters())
    assert all(p.grad is None for p in method.adv.heads.parameters())          # D frozen in the G step
    for p in nets.parameters():
        p.grad = None
    heads_before = [p.detach().clone() for p in method.adv.heads.parameters()]
    logs = method.aux_update([out.aux], nets, backend=None, generator=g)
    assert {"adv/d_loss", "adv/d_real", "adv/d_fake"} <= set(logs)
    assert all(p.grad is None for p in nets.parameters())                     # the student is untouched
    assert any(not torch.equal(a, b) for a, b in zip(heads_before, method.adv.heads.parameters()))
    assert all(torch.equal(v, dict(fam.unet.named_parameters())[n]) for n, v in base.items())
    assert (method.adv.heads.temporal is None) == (name == "sdxl")           # images: spatial heads only


def test_early_exit_gives_the_same_features_and_no_up_block_runs():
    fam, nets, method, x0, cond, g = _setup("svd")
    u = torch.full((x0.shape[0],), 0.3, dtype=torch.float64)
    ran = []
    h = fam.unet.up_blocks[0].register_forward_pre_hook(lambda m, a: ran.append(1))
    with torch.no_grad(), nets.teacher() as t:
        early = frozen_features(fam, t, x0, u, cond, early_exit=True)
        assert not ran
        full = frozen_features(fam, t, x0, u, cond, early_exit=False)
    h.remove()
    assert len(early) == len(full) == len(fam.unet.config.block_out_channels) + 1
    assert all(torch.equal(a, b) for a, b in zip(early, full))


class LatentLoader:
    """Real tiny-SVD batches from fixed pixels; resumable position."""

    def __init__(self):
        self.pos = 0

    def infinite(self):
        while True:
            g = torch.Generator().manual_seed(self.pos)
            self.pos += 1
            yield {"pixel_values": torch.rand(2, 4, 3, 64, 64, generator=g) * 2 - 1,
                   "fps_id": torch.tensor([6, 6]), "motion_bucket_id": torch.tensor([127, 127])}

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, s):
        self.pos = s["pos"]


def _cfg(tmp_path, name, steps, resume=None):
    cfg = config_from_dict({"run": {"output_dir": str(tmp_path / name), "seed": 1, "resume": resume},
                            "trainable": {"kind": "lora", "lora_rank": 4},
                            "method": {"adv": {"weight": 0.3, "start_step": 1, "ramp_steps": 2}},
                            "train": {"max_steps": steps, "lr": 1e-3, "checkpoint_every": 2, "tensorboard": False,
                                      "progress": False, "backend": "plain", "keep_last": 5},
                            "data": {"path": "synthetic", "batch_size": 2, "num_frames": 4}})
    return cfg


def test_resume_with_discriminator_is_exact(tmp_path):
    full = train(_cfg(tmp_path, "full", 4), family=load_family("svd", "tiny"), loader=LatentLoader())
    train(_cfg(tmp_path, "split", 2), family=load_family("svd", "tiny"), loader=LatentLoader())
    rest = train(_cfg(tmp_path, "split", 4, resume="auto"), family=load_family("svd", "tiny"), loader=LatentLoader())
    assert rest["losses"] == full["losses"][2:]
    a = torch.load(tmp_path / "full" / "checkpoints" / "step_000004" / "method.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "step_000004" / "method.pt", weights_only=True)
    ha, hb = a["discriminator"]["heads"], b["discriminator"]["heads"]
    assert ha.keys() == hb.keys() and all(torch.equal(ha[k], hb[k]) for k in ha)
    rows = [line for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines() if "adv/d_loss" in line]
    assert len(rows) == 3                                    # steps 2, 3, 4 (start_step 1)


def test_student_can_start_from_a_lora_file(tmp_path):
    """trainable.init_lora: the student adapter starts from a saved LoRA (e.g. a finished TDD student)."""
    from tdd_video import lora
    fam = load_family("svd", "tiny")
    nets = Trainables(fam, "lora", lora_rank=4, lora_preset="attn")
    with torch.no_grad():
        for p in nets.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    path = lora.save_lora(fam.unet, tmp_path / "l", adapter="student", family="svd")
    want = nets.state_dict()
    again = Trainables(load_family("svd", "tiny"), "lora", lora_rank=4, lora_preset="attn", init_lora=str(path))
    got = again.state_dict()
    assert got.keys() == want.keys() and all(torch.allclose(got[k], want[k]) for k in got)
    with pytest.raises(Exception, match="init_lora"):
        config_from_dict({"trainable": {"kind": "full", "init_lora": "x.safetensors"}})
    from tdd_video.engine.config import check_runnable
    from tdd_video.errors import ConfigError
    for ok in (path, path.parent):              # the file, or the export folder holding it
        cfg = config_from_dict({"data": {"path": "synthetic"}, "trainable": {"init_lora": str(ok)}})
        check_runnable(cfg)
    with pytest.raises(ConfigError, match="init_lora.*not found"):
        check_runnable(config_from_dict({"data": {"path": "synthetic"}, "trainable": {"init_lora": str(tmp_path)}}))
