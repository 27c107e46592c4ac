"""AnimateLCM sampler (docs/math.md §8) and recipe step on the tiny SVD (issue 6)."""
import math
from pathlib import Path

import pytest
import torch
from standin_family import animatelcm_reference

from tdd_video.core import EDMSchedule, animatelcm_step_indices, karras_grid_u
from tdd_video.errors import ConfigError
from tdd_video.sampling.animatelcm import AnimateLCMScheduler, animatelcm_grid_sigmas


def _karras(i, n=40, smin=0.002, smax=700.0, rho=7.0):
    """Independent Karras formula: ramp i/(N−1) from σ_max to σ_min."""
    a, b = smax ** (1 / rho), smin ** (1 / rho)
    return (a + i / (n - 1) * (b - a)) ** rho


@pytest.mark.parametrize("k,expected", [(1, [0]), (2, [0, 20]), (4, [0, 10, 20, 30]),
                                        (8, [0, 5, 10, 15, 20, 25, 30, 35])])
def test_timesteps_match_spec(k, expected):
    sched = AnimateLCMScheduler()
    sched.set_timesteps(k)
    assert sched.step_grid_indices.tolist() == expected
    sig = torch.tensor([_karras(i) for i in expected] + [0.0], dtype=torch.float64)
    assert torch.allclose(sched.sigmas.double(), sig, rtol=1e-5)
    assert torch.allclose(sched.timesteps.double(), 0.25 * sig[:-1].log(), atol=1e-5)
    assert sched.sigmas[0] == pytest.approx(700.0) and sched.init_noise_sigma == pytest.approx(700.0, rel=1e-6)


def test_grid_endpoints():
    s = animatelcm_grid_sigmas()
    assert s.shape == (41,)
    assert (float(s[0]) == pytest.approx(700.0) and float(s[39]) == pytest.approx(0.002, rel=1e-8)
            and float(s[40]) == 0.0)
    assert torch.allclose(s[:40], torch.tensor([_karras(i) for i in range(40)], dtype=torch.float64), rtol=1e-9)
    assert bool((s.diff() < 0).all())
    assert karras_grid_u(40)[-1] == 0.0
    with pytest.raises(ConfigError, match="steps"):
        animatelcm_step_indices(41)


def test_from_svd_euler_config_round_trip(tmp_path):
    from diffusers import EulerDiscreteScheduler

    from tdd_video.families.tiny import SVD_SCHEDULER_CONFIG
    euler = EulerDiscreteScheduler.from_config(SVD_SCHEDULER_CONFIG)
    sched = AnimateLCMScheduler.from_config(euler.config)
    assert (sched.config.num_grid == 40 and sched.config.sigma_max == 700.0
            and sched.config.prediction_type == "v_prediction")
    sched.save_config(tmp_path)
    again = AnimateLCMScheduler.from_pretrained(tmp_path)
    def strip(c):
        return {k: v for k, v in dict(c).items() if not k.startswith("_")}
    assert strip(again.config) == strip(sched.config)
    back = EulerDiscreteScheduler.from_config(sched.config)      # and back again
    assert back.config.sigma_max == 700.0


def _run(sched, x, outputs, generator=None):
    for t, out in zip(sched.timesteps, outputs):
        x = sched.step(out, t, x, generator=generator).prev_sample
    return x


def test_step_math_shapes_dtypes_and_determinism():
    sched = AnimateLCMScheduler()
    sched.set_timesteps(4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 8, 8, generator=g) * sched.init_noise_sigma
    outs = [torch.randn(2, 3, 4, 8, 8, generator=g) for _ in range(4)]
    # the first step: x0 = c_skip·x + c_out·F, then x0 + σ_10·z with z from the generator
    sched.set_timesteps(4)
    s0, s1 = float(sched.sigmas[0]), float(sched.sigmas[1])
    inp = sched.scale_model_input(x, sched.timesteps[0])
    assert torch.allclose(inp, x / math.sqrt(s0 ** 2 + 1), rtol=1e-6)
    step = sched.step(outs[0], sched.timesteps[0], x, generator=torch.Generator().manual_seed(7))
    x0 = x / (s0 ** 2 + 1) - s0 / math.sqrt(s0 ** 2 + 1) * outs[0]
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(step.pred_original_sample, x0, atol=1e-4)
    assert torch.allclose(step.prev_sample, x0 + s1 * z, atol=1e-3)
    # a whole run: shape/dtype kept, last step returns x0, reproducible with a generator
    sched.set_timesteps(4)
    a = _run(sched, x, outs, torch.Generator().manual_seed(1))
    sched.set_timesteps(4)
    b = _run(sched, x, outs, torch.Generator().manual_seed(1))
    sched.set_timesteps(4)
    c = _run(sched, x, outs, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    # set_generator (the pipeline path, whose step has no generator) is equally reproducible
    sched.set_timesteps(4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(_run(sched, x, outs), a)
    # bf16 in, bf16 out
    sched.set_timesteps(2)
    y = _run(sched, x.bfloat16(), [o.bfloat16() for o in outs[:2]])
    assert y.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="set_timesteps"):
        sched.step(outs[0], sched.timesteps[0], x)


def test_loop_sampler_matches_scheduler():
    """An independent loop over a denoise(x, u) equals the scheduler driven by the same denoiser."""
    schedule = EDMSchedule()
    target = torch.randn(1, 2, 4, 4, 4, generator=torch.Generator().manual_seed(3))

    def denoise(x, u):                     # analytic denoiser of a point mass at `target`
        return target.expand_as(x) + 0 * x

    noise = torch.randn(1, 2, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    loop = animatelcm_reference(denoise, noise, 4, torch.Generator().manual_seed(5), schedule)
    assert torch.allclose(loop, target)
    sched = AnimateLCMScheduler()
    sched.set_timesteps(4, generator=torch.Generator().manual_seed(5))
    x = noise * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps):
        x = sched.step_denoised(denoise(x, None), t, x).prev_sample
    assert torch.allclose(x, loop)


def test_drop_in_svd_pipeline_equals_family_loop():
    """StableVideoDiffusionPipeline + AnimateLCMScheduler == the family sampling loop with the same scheduler."""
    from tdd_video.data.image_io import fit_image, image_to_tensor, load_image
    from tdd_video.families import load_family
    from tdd_video.sampling.sample import SamplingStats, sample
    fam = load_family("svd", "tiny")
    image, _ = fit_image(load_image(None)[0], 64, 64)
    noise = torch.randn(1, 4, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    sched = AnimateLCMScheduler.from_config(fam.scheduler_config)
    pipe = fam.pipeline(scheduler=sched)
    pipe.set_progress_bar_config(disable=True)

    def run(seed):
        sched.set_generator(torch.Generator().manual_seed(seed))
        return pipe(image, height=64, width=64, num_frames=4, num_inference_steps=3, min_guidance_scale=1.0,
                    max_guidance_scale=1.2, fps=7, motion_bucket_id=127, noise_aug_strength=0.02, latents=noise,
                    output_type="latent", generator=torch.Generator().manual_seed(0)).frames

    a, b, c = run(2), run(2), run(3)
    assert a.shape == (1, 4, 4, 16, 16) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    cond = fam.encode_conditioning({"first_frame": image_to_tensor(image)}, generator=torch.Generator().manual_seed(0),
                                   train=False, noise_aug=0.02, fps_id=6, motion_bucket_id=127)
    stats = SamplingStats()
    ours = sample(fam, cond, steps=3, guidance=(1.0, 1.2), latents=noise, generator=torch.Generator().manual_seed(2),
                  progress=False, stats=stats, scheduler=AnimateLCMScheduler.from_config(fam.scheduler_config))
    scale = float(a.abs().max())
    assert torch.allclose(ours, a.float(), atol=2e-4 * scale, rtol=1e-3), float((ours - a).abs().max())
    assert stats.unet_passes == 6


# --------------------------------------------------------------------------- the training recipe
@pytest.fixture(scope="module")
def tiny_svd():
    from tdd_video.families import load_family
    return load_family("svd", "tiny")


def _batch(fam, b=2, f=4):
    g = torch.Generator().manual_seed(11)
    pix = torch.rand(b, f, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        x0 = fam.encode_latents({"pixel_values": pix}, g)
        cond = fam.encode_conditioning({"pixel_values": pix}, g, train=True)
    return x0, cond


def test_recipe_step_matches_hand_computation(tiny_svd):
    """One AnimateLCM step on the tiny SVD equals an independent re-computation of docs/math.md §8."""
    import copy

    from tdd_video.methods import AnimateLCMConfig, StaticRoles, build_method
    fam = tiny_svd
    x0, cond = _batch(fam)
    student = fam.unet
    teacher = copy.deepcopy(student).requires_grad_(False)
    ema = copy.deepcopy(student).requires_grad_(False)
    with torch.no_grad():                                   # make the three roles distinguishable
        for p in teacher.parameters():
            p.mul_(1.05)
        for p in ema.parameters():
            p.mul_(0.97)
    cfg = AnimateLCMConfig()
    cfg.validate()
    method = build_method("animatelcm", cfg, fam)
    out = method.training_step(x0, cond, StaticRoles(student, teacher, ema), torch.Generator().manual_seed(5))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and out.loss.requires_grad

    # independent re-computation with the same random draws (order: n, ε, w_min, w_max)
    g = torch.Generator().manual_seed(5)
    b, f = x0.shape[:2]
    n = torch.randint(0, 40, (b,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    w_min = torch.tensor([1.0, 1.25, 1.5])[torch.randint(0, 3, (b,), generator=g)]
    w_max = torch.tensor([2.0, 2.25, 2.5])[torch.randint(0, 3, (b,), generator=g)]
    sig = torch.tensor([_karras(i) for i in range(40)] + [0.0], dtype=torch.float64)
    sched = EDMSchedule()
    u = [sched.u_of_sigma(s).clamp_min(1e-12) if s > 0 else torch.tensor(0.0, dtype=torch.float64) for s in sig]
    losses = []
    null = fam.null_conditioning(cond)
    with torch.no_grad():
        for i in range(b):
            k = int(n[i])
            s_n, s_next = float(sig[k]), float(sig[k + 1])
            x_n = x0[i:i + 1] + s_n * eps[i:i + 1]
            c_i, null_i = cond.index(slice(i, i + 1)), null.index(slice(i, i + 1))
            ui = u[k].reshape(1)
            d_c = fam.denoise(x_n, ui, c_i, unet=teacher)
            d_u = fam.denoise(x_n, ui, null_i, unet=teacher)
            w = (w_min[i] + (w_max[i] - w_min[i]) * torch.linspace(0, 1, f)).view(1, f, 1, 1, 1)
            x0_t = d_u + w * (d_c - d_u)
            x_next = x0_t + (s_next / s_n) * (x_n - x0_t)            # Euler n -> n+1
            target = fam.denoise(x_next, u[k + 1].reshape(1), c_i, unet=ema) if s_next > 0 else x_next
            pred = fam.denoise(x_n, ui, c_i, unet=student)
            hub = (torch.sqrt((pred - target) ** 2 + 1e-6) - 1e-3).mean()
            losses.append(float(hub) * (s_n - s_next) ** -0.1)
    assert float(out.loss.detach()) == pytest.approx(sum(losses) / b, rel=2e-3)
    assert out.stats["n"].tolist() == n.tolist()
    assert torch.allclose(out.stats["w_min"], w_min) and torch.allclose(out.stats["w_max"], w_max)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters()) and all(p.grad is None for p in ema.parameters())
    student.zero_grad(set_to_none=True)


def test_recipe_configs_validate_and_match_tdd_budget():
    from pathlib import Path

    from tdd_video.engine.config import load_config
    root = Path(__file__).resolve().parents[1]
    toy = load_config(root / "configs/toy/animatelcm_svd_tiny.yaml")
    tdd = load_config(root / "configs/toy/tdd_svd_tiny.yaml")
    assert toy.method_name == "animatelcm" and toy.method.target_ema == 0.95 and toy.method.num_grid == 40
    assert toy.train.max_steps * toy.data.batch_size * toy.train.grad_accum == \
        tdd.train.max_steps * tdd.data.batch_size * tdd.train.grad_accum
    assert (toy.trainable.kind, toy.trainable.lora_rank) == (tdd.trainable.kind, tdd.trainable.lora_rank)
    zoo_alcm = load_config(root / "configs/toy/animatelcm_svd_zoo.yaml")
    zoo_tdd = load_config(root / "configs/toy/tdd_svd_zoo.yaml")
    assert zoo_alcm.method_name == "animatelcm"
    for key in ("max_steps", "grad_accum", "lr"):
        assert getattr(zoo_alcm.train, key) == getattr(zoo_tdd.train, key), key
    assert (zoo_alcm.data.batch_size, zoo_alcm.data.path, zoo_alcm.model.path, zoo_alcm.trainable.lora_rank) == \
        (zoo_tdd.data.batch_size, zoo_tdd.data.path, zoo_tdd.model.path, zoo_tdd.trainable.lora_rank)
    real = load_config(root / "configs/svd/animatelcm_svd_xt_1_1.yaml")
    assert real.method_name == "animatelcm" and real.train.lr == 1e-6 and real.data.num_frames == 25
    with pytest.raises(ConfigError, match="method.guidance_min_choices"):
        load_config(root / "configs/toy/animatelcm_svd_tiny.yaml", ["method.guidance_min_choices=[]"])


def test_validation_renders_with_animatelcm_sampler(tiny_svd):
    """The method names its sampler; the validation loop (sampling.sample + make_sampler) runs it."""
    from tdd_video.methods import AnimateLCMConfig, build_method
    from tdd_video.sampling import make_sampler, sample
    fam = tiny_svd
    _, cond = _batch(fam, b=1, f=2)
    null = fam.null_conditioning(cond)
    method = build_method("animatelcm", AnimateLCMConfig(), fam)
    a = sample(fam, cond, null, steps=2, generator=torch.Generator().manual_seed(0), shape=(1, 2, 4, 16, 16),
               progress=False, scheduler=make_sampler(fam, method.sampler))
    noise = torch.randn((1, 2, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    torch.randn((1, 2, 4, 16, 16), generator=gen)          # the draw the loop made for its noise
    b = animatelcm_reference(lambda x, u: fam.denoise(x, u, cond), noise, 2, gen)
    assert a.shape == (1, 2, 4, 16, 16) and torch.allclose(a, b)


# --------------------------------------------------------------------------- on the engine
class _Loader:
    """Deterministic latent batches with a resumable position (like the real VideoLoader)."""

    def __init__(self):
        self.pos = 0

    def infinite(self):
        while True:
            g = torch.Generator().manual_seed(self.pos)
            self.pos += 1
            yield {"latents": torch.randn(2, 3, 4, 8, 8, generator=g), "emb": torch.randn(2, 8, generator=g)}

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, s):
        self.pos = s["pos"]


def test_engine_trains_animatelcm_and_resumes_exactly(tmp_path):
    """The shared engine runs the recipe (full fine-tune, fp32 EMA target 0.95); 4 steps == 2 + resumed 2."""
    sys_path = str(Path(__file__).resolve().parent)
    import sys
    if sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    from standin_family import ToyFamily

    from tdd_video.engine.config import config_from_dict
    from tdd_video.engine.trainer import train

    def cfg(name, steps, resume=None):
        return config_from_dict({
            "run": {"output_dir": str(tmp_path / name), "seed": 1, "resume": resume},
            "trainable": {"kind": "full"}, "method": {"name": "animatelcm"},
            "train": {"max_steps": steps, "lr": 1e-3, "warmup_steps": 0, "checkpoint_every": 2, "keep_last": 3,
                      "log_every": 1, "tensorboard": False, "progress": False, "backend": "plain"},
            "data": {"path": "synthetic", "batch_size": 2}})

    full = train(cfg("full", 4), family=ToyFamily("edm"), loader=_Loader())
    assert len(full["losses"]) == 4 and all(math.isfinite(v) for v in full["losses"])
    assert "name: animatelcm" in (tmp_path / "full" / "config.yaml").read_text()
    train(cfg("split", 2), family=ToyFamily("edm"), loader=_Loader())
    second = train(cfg("split", 4, resume="auto"), family=ToyFamily("edm"), loader=_Loader())
    assert second["losses"] == pytest.approx(full["losses"][2:], rel=1e-6)


def test_target_forward_runs_on_the_boundary_too():
    """Rows whose next grid point is σ_N = 0 need no target network (D(x, 0) = x), but the forward still
    runs on the whole batch: a data-dependent skip would desynchronise ZeRO-3 ranks."""
    import copy
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from standin_family import ToyFamily

    from tdd_video.methods import AnimateLCMConfig, StaticRoles, build_method

    class Counting(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.calls = net, 0

        def forward(self, *a):
            self.calls += 1
            return self.net(*a)

    fam = ToyFamily("edm")
    method = build_method("animatelcm", AnimateLCMConfig(), fam)
    method.grid_u = torch.zeros_like(method.grid_u)
    method.grid_u[0] = 1.0                                 # every n: u_{n+1} = 0 (the boundary)
    teacher, student = Counting(fam.unet), Counting(copy.deepcopy(fam.unet))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 3, 4, 8, 8, generator=g)
    cond = fam.encode_conditioning({"emb": torch.randn(3, 8, generator=g)})
    out = method.training_step(x0, cond, StaticRoles(student, teacher), torch.Generator().manual_seed(1))
    assert out.stats["target_skipped"].all() and torch.isfinite(out.loss)
    assert teacher.calls == 1 and student.calls == 2       # target (online student here) + prediction
