"""Engine: resume equivalence, atomic checkpoints, NaN stop, warmup, resolved config in the run dir.
Uses a stand-in family (tests/standin_family.py) with full fine-tuning, so it needs no LoRA code."""
import json
import math

import pytest
import torch
from standin_family import ToyFamily

from tdd_video.engine import checkpoint as ckpt_mod
from tdd_video.engine.checkpoint import latest_checkpoint, list_checkpoints
from tdd_video.engine.config import config_from_dict
from tdd_video.engine.trainer import NonFiniteLoss, train


class IndexLoader:
    """Batch i is a deterministic function of i; position saved/restored like the real VideoLoader."""

    def __init__(self, b=2, nan_at=None):
        self.pos, self.b, self.nan_at = 0, b, nan_at

    def infinite(self):
        while True:
            g = torch.Generator().manual_seed(self.pos)
            lat = torch.randn(self.b, 3, 4, 8, 8, generator=g)
            if self.nan_at is not None and self.pos == self.nan_at:
                lat[0, 0, 0, 0, 0] = float("nan")
            self.pos += 1
            yield {"latents": lat, "emb": torch.randn(self.b, 8, generator=g)}

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, s):
        self.pos = s["pos"]


def _cfg(tmp_path, name="run", **train):
    t = {"max_steps": 6, "lr": 1e-3, "warmup_steps": 2, "checkpoint_every": 3, "keep_last": 2, "log_every": 2,
         "tensorboard": False, "progress": False, "backend": "plain", **train}
    return config_from_dict({"run": {"output_dir": str(tmp_path / name), "seed": 3},
                             "trainable": {"kind": "full"},
                             "method": {"target_ema": 0.9, "guidance_min_range": [1.0, 1.5],
                                        "guidance_max_range": [2.0, 3.0]},
                             "train": t, "data": {"path": "synthetic", "batch_size": 2}})


def test_resume_gives_identical_losses_and_config_saved(tmp_path):
    full = train(_cfg(tmp_path, "full"), family=ToyFamily("edm"), loader=IndexLoader())
    assert len(full["losses"]) == 6 and all(math.isfinite(v) for v in full["losses"])
    cfg_a = _cfg(tmp_path, "split", max_steps=3)
    first = train(cfg_a, family=ToyFamily("edm"), loader=IndexLoader())
    cfg_b = _cfg(tmp_path, "split")
    cfg_b.run.resume = "auto"
    second = train(cfg_b, family=ToyFamily("edm"), loader=IndexLoader())
    assert first["losses"] + second["losses"] == full["losses"]
    run = tmp_path / "split"
    assert "max_steps: 6" in (run / "config.yaml").read_text()
    assert [p.name for p in list_checkpoints(run)] == ["step_000003", "step_000006"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(k.startswith("loss_by_noise/") for r in rows for k in r)
    assert {"loss", "lr", "grad_norm", "samples_per_s"} <= set(rows[0])


def test_warmup_really_warms_up(tmp_path):
    train(_cfg(tmp_path, "w", warmup_steps=4, max_steps=6, checkpoint_every=0), family=ToyFamily("vp"),
          loader=IndexLoader())
    rows = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
    lrs = [r["lr"] for r in rows]
    assert lrs == pytest.approx([1e-3 * f for f in (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)])


@pytest.mark.parametrize("kind,expected", [
    # warmup 2, then from 1 at step 2 to the floor 0.1 at the last step (5): p = 0, 1/3, 2/3, 1
    ("cosine", (0.5, 1.0, 1.0, 0.1 + 0.9 * 0.75, 0.1 + 0.9 * 0.25, 0.1)),
    ("linear", (0.5, 1.0, 1.0, 0.1 + 0.9 * 2 / 3, 0.1 + 0.9 / 3, 0.1))])
def test_lr_decay_schedules(tmp_path, kind, expected):
    train(_cfg(tmp_path, kind, warmup_steps=2, max_steps=6, checkpoint_every=0, lr_schedule=kind, lr_min_ratio=0.1),
          family=ToyFamily("vp"), loader=IndexLoader())
    rows = [json.loads(line) for line in (tmp_path / kind / "metrics.jsonl").read_text().splitlines()
            if '"lr"' in line]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3 * f for f in expected])
    with pytest.raises(Exception, match="train.lr_schedule"):
        _cfg(tmp_path, "bad", lr_schedule="step")


class NaNLoader(IndexLoader):
    """Every batch from `start` on carries a NaN (a run that cannot recover)."""

    def __init__(self, start=0, **kw):
        super().__init__(**kw)
        self.start = start

    def infinite(self):
        for batch in super().infinite():
            if self.pos - 1 >= self.start:
                batch["latents"][0, 0, 0, 0, 0] = float("nan")
            yield batch


def _weights(run, step):
    return torch.load(run / "checkpoints" / f"step_{step:06d}" / "trainable.pt", weights_only=True)


def test_nonfinite_loss_skips_the_step_and_is_counted(tmp_path):
    """Batch 4 (0-based) carries a NaN: optimizer step 5 is skipped (weights unchanged), counted, and the run
    goes on; the summary losses ignore the skipped step."""
    out = train(_cfg(tmp_path, "nan", max_steps=6, checkpoint_every=1, keep_last=10), family=ToyFamily("edm"),
                loader=IndexLoader(nan_at=4))
    run = tmp_path / "nan"
    assert math.isnan(out["losses"][4]) and all(math.isfinite(v) for i, v in enumerate(out["losses"]) if i != 4)
    assert out["nonfinite_steps"] == 1 and math.isfinite(out["loss_last_10pct"])
    w4, w5, w6 = _weights(run, 4), _weights(run, 5), _weights(run, 6)
    assert all(torch.equal(w4[k], w5[k]) for k in w4) and any(not torch.equal(w5[k], w6[k]) for k in w5)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    counts = {r["step"]: r["nonfinite_steps"] for r in rows if "nonfinite_steps" in r}
    assert counts[4] == 0 and counts[5] == 1 and counts[6] == 1


def test_nonfinite_steps_in_a_row_stop_the_run_and_checkpoints_stay_finite(tmp_path):
    with pytest.raises(NonFiniteLoss, match="3 optimizer steps in a row"):
        train(_cfg(tmp_path, "nan", max_steps=8, checkpoint_every=2, keep_last=10, max_nonfinite_steps=3),
              family=ToyFamily("edm"), loader=NaNLoader(start=3))
    run = tmp_path / "nan"
    assert [p.name for p in list_checkpoints(run)] == ["step_000002", "step_000004"]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert all(torch.isfinite(v).all() for v in _weights(run, 4).values())


def test_nonfinite_gradient_with_finite_loss_skips_the_update(tmp_path):
    fam = ToyFamily("edm")
    calls = {"n": 0}

    def poison(grad):                      # the 3rd backward (optimizer step 3) gets an infinite gradient
        calls["n"] += 1
        return torch.full_like(grad, float("inf")) if calls["n"] == 3 else grad

    next(fam.unet.parameters()).register_hook(poison)
    out = train(_cfg(tmp_path, "inf", max_steps=4, checkpoint_every=1, keep_last=10, grad_clip=1.0), family=fam,
                loader=IndexLoader())
    run = tmp_path / "inf"
    assert out["nonfinite_steps"] == 1
    w2, w3 = _weights(run, 2), _weights(run, 3)
    assert all(torch.equal(w2[k], w3[k]) for k in w2)
    assert all(torch.isfinite(v).all() for v in _weights(run, 4).values())


def test_checkpoint_with_nonfinite_weights_is_refused(tmp_path):
    from tdd_video.engine.checkpoint import NonFiniteCheckpoint
    train(_cfg(tmp_path, "run", max_steps=2, checkpoint_every=1), family=ToyFamily("edm"), loader=IndexLoader())
    f = tmp_path / "run" / "checkpoints" / "step_000002" / "trainable.pt"
    w = torch.load(f, weights_only=True)
    next(iter(w.values())).view(-1)[0] = float("nan")
    torch.save(w, f)
    cfg = _cfg(tmp_path, "run", max_steps=4, checkpoint_every=1)
    cfg.run.resume = "auto"
    with pytest.raises(NonFiniteCheckpoint, match="non-finite"):
        train(cfg, family=ToyFamily("edm"), loader=IndexLoader())


def test_checkpoint_in_an_unsafe_pickle_format_is_refused_with_one_message(tmp_path):
    """A checkpoint file weights_only loading refuses (here: numpy objects pickled, as an older format of our RNG
    file did) is refused by name, with what to do instead, not with an unpickling stack trace."""
    import numpy as np

    from tdd_video.engine.checkpoint import CheckpointError
    train(_cfg(tmp_path, "run", max_steps=2, checkpoint_every=1), family=ToyFamily("edm"), loader=IndexLoader())
    f = tmp_path / "run" / "checkpoints" / "step_000002" / "rng_rank0.pt"
    torch.save({"numpy": np.random.get_state()}, f)
    cfg = _cfg(tmp_path, "run", max_steps=4, checkpoint_every=1)
    cfg.run.resume = "auto"
    with pytest.raises(CheckpointError, match=r"rng_rank0.pt cannot be read safely.*init_lora"):
        train(cfg, family=ToyFamily("edm"), loader=IndexLoader())


def test_interrupted_save_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "crash", max_steps=6, checkpoint_every=3)
    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, path, *a, **k):
        if ".tmp-step_000006" in str(path):
            calls["n"] += 1
            if calls["n"] == 2:   # die half way through writing the second checkpoint
                raise KeyboardInterrupt("simulated crash")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, family=ToyFamily("edm"), loader=IndexLoader())
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    good = latest_checkpoint(tmp_path / "crash")
    assert good.name == "step_000003"
    assert (tmp_path / "crash" / "checkpoints" / ".tmp-step_000006").exists()
    state = torch.load(good / "trainable.pt")
    assert state and all(torch.isfinite(v).all() for v in state.values())
    # resuming from the intact checkpoint finishes the run and cleans up the partial folder
    cfg.run.resume = "auto"
    out = train(cfg, family=ToyFamily("edm"), loader=IndexLoader())
    assert len(out["losses"]) == 3
    assert not (tmp_path / "crash" / "checkpoints" / ".tmp-step_000006").exists()


def test_gradient_accumulation_consumes_micro_batches_and_clips(tmp_path):
    loader = IndexLoader()
    out = train(_cfg(tmp_path, "ga", max_steps=3, grad_accum=2, grad_clip=1e-6, checkpoint_every=0),
                family=ToyFamily("vp"), loader=loader)
    assert len(out["losses"]) == 3 and loader.pos == 6
    rows = [json.loads(line) for line in (tmp_path / "ga" / "metrics.jsonl").read_text().splitlines()
            if '"grad_norm"' in line]
    assert all(r["grad_norm"] > 1e-6 for r in rows)   # the pre-clip norm is what gets logged


def test_skipped_samples_are_logged(tmp_path, caplog):
    """A loader that reports skipped samples (VideoLoader.data_stats) shows up in metrics.jsonl and a warning."""
    import logging

    class SkippingLoader(IndexLoader):
        def data_stats(self):
            return {"attempts": 3 * self.pos, "skipped": self.pos, "skipped_unreadable": self.pos}

    with caplog.at_level(logging.WARNING, logger="tdd_video.engine"):
        train(_cfg(tmp_path, "skips", max_steps=4, log_every=2), family=ToyFamily("edm"), loader=SkippingLoader())
    rows = [json.loads(line) for line in (tmp_path / "skips" / "metrics.jsonl").read_text().splitlines()]
    data = [r for r in rows if "data/skipped" in r]
    assert [(r["step"], r["data/skipped"], r["data/attempts"]) for r in data] == [(2, 2, 6), (4, 4, 12)]
    assert "4 of 12 samples could not be loaded" in caplog.text


def test_export_ema_is_the_ema_of_the_student_and_resumes_exactly(tmp_path):
    """export.ema = d: the exported weights are d·w0 + (1−d)·w1 after one step (w0 the initial, w1 the trained
    weights of the same run without EMA); a resumed run exports exactly what an uninterrupted one does."""
    def run(name, max_steps=1, ema=0.0, resume=None):
        cfg = _cfg(tmp_path, name, max_steps=max_steps, warmup_steps=0, checkpoint_every=1)
        cfg.export.ema = ema
        cfg.run.resume = resume
        train(cfg, family=ToyFamily("edm"), loader=IndexLoader())
        return torch.load(tmp_path / name / "export" / "unet.pt")

    w0 = ToyFamily("edm").unet.state_dict()
    w1 = run("plain")
    e1 = run("ema", ema=0.75)
    for k in w1:
        assert torch.allclose(e1[k], 0.75 * w0[k] + 0.25 * w1[k], atol=1e-6), k
    assert any(not torch.equal(e1[k], w1[k]) for k in w1)
    full = run("ema_full", max_steps=4, ema=0.75)
    run("ema_split", max_steps=2, ema=0.75)
    split = run("ema_split", max_steps=4, ema=0.75, resume="auto")
    assert all(torch.equal(full[k], split[k]) for k in full)
    with pytest.raises(Exception, match="export.ema"):
        config_from_dict({"export": {"ema": 1.0}})
