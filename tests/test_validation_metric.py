"""Distillation distance during training (validation.metric_every): logged at step 0, every N steps
and at the end; at step 0 it equals the teacher's own K-step distance to its 25-step reference
computed independently here; it does not disturb training; its config keys are validated.
Stand-in family (tests/standin_family.py), full fine-tune (teacher = frozen copy): a few seconds."""
import json
import math

import pytest
import torch
from standin_family import ToyCond, ToyFamily

from tdd_video.engine.config import config_from_dict
from tdd_video.engine.trainer import train
from tdd_video.errors import ConfigError
from tdd_video.sampling import KarrasEulerSampler, sample


class IndexLoader:
    """Batch i is a deterministic function of i (position saved/restored like the real loader)."""

    def __init__(self, b=2):
        self.pos, self.b = 0, b

    def infinite(self):
        while True:
            yield self.batch(self.pos)
            self.pos += 1

    def batch(self, i):
        g = torch.Generator().manual_seed(i)
        return {"latents": torch.randn(self.b, 3, 4, 8, 8, generator=g), "emb": torch.randn(self.b, 8, generator=g)}

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, s):
        self.pos = s["pos"]


def _cfg(tmp_path, name, metric_every=2, steps=5, eta=0.0, **validation):
    return config_from_dict({
        "run": {"output_dir": str(tmp_path / name), "seed": 1},
        "trainable": {"kind": "full"},
        "method": {"guidance_min_range": [1.0, 1.5], "guidance_max_range": [2.0, 3.0]},
        "train": {"backend": "plain", "max_steps": steps, "lr": 3e-3, "warmup_steps": 1, "checkpoint_every": 0,
                  "tensorboard": True, "progress": False, "log_every": 1},
        "validation": {"metric_every": metric_every, "steps": [2, 4], "seeds": [0, 1], "eta": eta, **validation},
        "export": {"lora": False},
        "data": {"path": "synthetic", "batch_size": 2}})


def _metric_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if any(k.startswith("val/") for k in r)}


def _teacher_distance(k, eta, seeds=(0, 1)):
    """Independently: the untrained network's K-step TDD sample vs its 25-step Euler + CFG 1 → 3 sample."""
    from tdd_video.sampling import KarrasEulerSampler, sample
    fam = ToyFamily("edm")
    emb = IndexLoader().batch(0)["emb"]
    cond = ToyCond(emb=emb)
    null = fam.null_conditioning(cond)
    shape = (2, 3, 4, 8, 8)
    errs = []
    with torch.no_grad():
        for seed in seeds:
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
            ref = sample(fam, cond, null, steps=25, guidance=(1.0, 3.0), latents=noise, progress=False,
                         scheduler=KarrasEulerSampler(fam.schedule))
            few = sample(fam, cond, null, steps=k, eta=eta, guidance=1.0, progress=False,
                         generator=torch.Generator().manual_seed(seed), shape=shape)
            errs += ((few.double() - ref.double()) ** 2).flatten(1).mean(1).tolist()
    return sum(errs) / len(errs)


def _teacher_distance_se(k, eta, seeds=(0, 1)):
    """Standard error over the (image, seed) pairs of the same distance, computed like _teacher_distance."""
    fam = ToyFamily("edm")
    cond = ToyCond(emb=IndexLoader().batch(0)["emb"])
    null = fam.null_conditioning(cond)
    errs = []
    with torch.no_grad():
        for seed in seeds:
            noise = torch.randn((2, 3, 4, 8, 8), generator=torch.Generator().manual_seed(seed))
            ref = sample(fam, cond, null, steps=25, guidance=(1.0, 3.0), latents=noise, progress=False,
                         scheduler=KarrasEulerSampler(fam.schedule))
            few = sample(fam, cond, null, steps=k, eta=eta, guidance=1.0, progress=False,
                         generator=torch.Generator().manual_seed(seed), shape=(2, 3, 4, 8, 8))
            errs += ((few.double() - ref.double()) ** 2).flatten(1).mean(1).tolist()
    return float(torch.tensor(errs).std(unbiased=True) / len(errs) ** 0.5)


def test_metric_logged_at_0_every_n_and_end_and_equals_teacher_distance_at_step_0(tmp_path):
    out = train(_cfg(tmp_path, "m", eta=0.3), family=ToyFamily("edm"), loader=IndexLoader())
    rows = _metric_rows(tmp_path / "m")
    assert sorted(rows) == [0, 2, 4, 5]
    for r in rows.values():
        assert set(r) == {"step", "val/mse_to_teacher_k2", "val/mse_to_teacher_k4", "val/mse_to_teacher_k2_se",
                          "val/mse_to_teacher_k4_se"}
        assert all(math.isfinite(v) and v > 0 for k, v in r.items() if k != "step")
    for k in (2, 4):
        assert rows[0][f"val/mse_to_teacher_k{k}"] == pytest.approx(_teacher_distance(k, 0.3), rel=1e-6)
        assert rows[0][f"val/mse_to_teacher_k{k}_se"] == pytest.approx(_teacher_distance_se(k, 0.3), rel=1e-6)
        assert rows[5][f"val/mse_to_teacher_k{k}"] != pytest.approx(rows[0][f"val/mse_to_teacher_k{k}"], rel=1e-3)
    assert len(out["losses"]) == 5
    tb = list((tmp_path / "m" / "tensorboard").glob("events.*"))
    assert tb and any(b"val/mse_to_teacher_k4" in f.read_bytes() for f in tb)


def test_metric_does_not_disturb_training(tmp_path):
    on = train(_cfg(tmp_path, "on"), family=ToyFamily("edm"), loader=IndexLoader())
    off = train(_cfg(tmp_path, "off", metric_every=0), family=ToyFamily("edm"), loader=IndexLoader())
    assert on["losses"] == off["losses"]
    assert not _metric_rows(tmp_path / "off")


def test_image_family_needs_one_reference_guidance(tmp_path):
    class ImageLoader(IndexLoader):
        def batch(self, i):
            g = torch.Generator().manual_seed(i)
            return {"latents": torch.randn(self.b, 4, 8, 8, generator=g), "emb": torch.randn(self.b, 8, generator=g)}

    with pytest.raises(ConfigError, match="validation.reference_guidance"):
        train(_cfg(tmp_path, "img", steps=1), family=ToyFamily("vp"), loader=ImageLoader())
    train(_cfg(tmp_path, "img1", steps=1, reference_guidance=[2.0]), family=ToyFamily("vp"), loader=ImageLoader())
    assert sorted(_metric_rows(tmp_path / "img1")) == [0, 1]


@pytest.mark.parametrize("key,value", [("metric_every", -1), ("reference_steps", 0), ("reference_guidance", [1, 2, 3]),
                                       ("reference_guidance", []), ("reference_guidance", [1.0, -2.0]),
                                       ("metric_every", "often")])
def test_config_validation(tmp_path, key, value):
    with pytest.raises(ConfigError) as e:
        _cfg(tmp_path, "bad", **{key: value}) if key != "metric_every" else _cfg(tmp_path, "bad", metric_every=value)
    assert e.value.key == f"validation.{key}"


def test_animatelcm_metric_uses_its_own_sampler(tmp_path):
    """A method's own sampler is used for the metric: step-0 value = an independent AnimateLCM loop over the
    untrained network vs the same teacher reference."""
    from standin_family import animatelcm_reference

    from tdd_video.sampling import KarrasEulerSampler, sample
    cfg = _cfg(tmp_path, "alcm", steps=1)
    cfg.method_name = "animatelcm"
    cfg.method = config_from_dict({"method": {"name": "animatelcm"}}).method

    class DeviceFamily(ToyFamily):          # AnimateLCM's sampler reads family.device (real families have it)
        device = torch.device("cpu")

    train(cfg, family=DeviceFamily("edm"), loader=IndexLoader())
    got = _metric_rows(tmp_path / "alcm")[0]["val/mse_to_teacher_k4"]
    fam = DeviceFamily("edm")
    cond = ToyCond(emb=IndexLoader().batch(0)["emb"])
    null = fam.null_conditioning(cond)
    errs = []
    with torch.no_grad():
        for seed in (0, 1):
            noise = torch.randn(2, 3, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
            ref = sample(fam, cond, null, steps=25, guidance=(1.0, 3.0), latents=noise, progress=False,
                         scheduler=KarrasEulerSampler(fam.schedule))
            gen = torch.Generator().manual_seed(seed)
            start = torch.randn((2, 3, 4, 8, 8), generator=gen)
            few = animatelcm_reference(lambda x, u: fam.denoise(x, u, cond), start, 4, gen, fam.schedule)
            errs.append(float(((few.double() - ref.double()) ** 2).mean()))
    assert got == pytest.approx(sum(errs) / 2, rel=1e-6)
    assert got != pytest.approx(_teacher_distance(4, 0.0), rel=1e-3)      # not the TDD sampler


def test_heldout_images_condition_the_metric(tmp_path):
    """validation.images=heldout: the distance is measured on the held-out real photos (the quality bench's),
    and only for video families."""
    from tdd_video.eval.heldout import heldout_images
    with pytest.raises(ConfigError, match="validation.images"):
        config_from_dict({"model": {"family": "sdxl"}, "validation": {"images": "heldout"}})
    with pytest.raises(ConfigError, match="validation.num_images"):
        config_from_dict({"validation": {"images": "heldout", "num_images": 33}})
    imgs, names = heldout_images(32, 16)
    assert len(set(names)) == 32 and all(i.shape == (3, 16, 16) and i.abs().max() <= 1 for i in imgs)
    assert len({tuple(i.flatten()[:50].tolist()) for i in imgs}) == 32          # 32 distinct pictures
