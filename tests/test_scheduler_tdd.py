"""TDDScheduler against docs/math.md §5–6 and diffusers' scheduler contract (modelled on diffusers' common
scheduler tests: config round trip, add_noise, scale_model_input, step shapes/dtypes, determinism)."""
import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from tdd_video.core import EDMSchedule, schedule_indices
from tdd_video.errors import ConfigError
from tdd_video.sampling import TDDScheduler

SVD_CFG = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, interpolation_type="linear",
               num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
               steps_offset=1, timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True)
SDXL_CFG = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, interpolation_type="linear",
                num_train_timesteps=1000, prediction_type="epsilon", steps_offset=1, timestep_spacing="leading",
                use_karras_sigmas=False)


def svd_sched(**kw):
    return TDDScheduler.from_config(EulerDiscreteScheduler(**SVD_CFG).config, **kw)


def sdxl_sched(**kw):
    return TDDScheduler.from_config(EulerDiscreteScheduler(**SDXL_CFG).config, **kw)


def test_family_detection_and_spec_vectors():
    vp, edm = sdxl_sched(), svd_sched()
    assert (vp.family, edm.family) == ("vp", "edm")
    vp.set_timesteps(4)
    assert vp.timesteps.tolist() == [999, 751, 499, 251]
    vp.set_timesteps(8)
    assert vp.timesteps.tolist() == [999, 875, 751, 627, 499, 375, 251, 127]
    edm.set_timesteps(4)
    assert torch.allclose(edm.sigmas[:4], torch.tensor([700.0, 136.87, 15.59, 0.6999]), rtol=1e-3)
    assert float(edm.sigmas[-1]) == 0.0
    # timesteps in the SVD UNet's units: c_noise = ¼ ln σ, as diffusers' Euler (continuous) does
    assert torch.allclose(edm.timesteps, 0.25 * edm.sigmas[:4].log(), atol=1e-6)
    assert edm.init_noise_sigma == pytest.approx(math.sqrt(700.0 ** 2 + 1))
    assert vp.init_noise_sigma == 1.0 and vp.order == 1
    assert "EulerDiscreteScheduler" in [c.__name__ for c in vp.compatibles]


@pytest.mark.parametrize("k", [5, 6, 7])
def test_nonuniform_points_lie_on_training_schedules(k):
    s = sdxl_sched(schedule="tdd-nonuniform")
    s.set_timesteps(k)
    idx = ((s.u[:-1] * 250).round()).long()
    assert len(idx) == k and bool((idx[1:] < idx[:-1]).all())
    union = set().union(*(set(schedule_indices(250, kk).tolist()) for kk in range(4, 9)))
    assert set(idx.tolist()) <= union
    full = torch.cat([idx, torch.zeros(1, dtype=torch.long)])
    hops = (full[:-1] - full[1:]).tolist()
    assert all(b >= a - 1 for a, b in zip(hops, hops[1:])) and hops[0] < hops[-1], "short hops early, long late"
    assert idx.tolist() != schedule_indices(250, k).tolist()


def test_config_round_trip(tmp_path):
    s = svd_sched(eta=0.2, schedule="tdd-nonuniform", clip_mode="dynamic", clip_value=2.5, clip_steps=2)
    s.save_pretrained(tmp_path)
    t = TDDScheduler.from_pretrained(tmp_path)
    for key in ("eta", "schedule", "clip_mode", "clip_value", "clip_steps", "sigma_max", "prediction_type"):
        assert t.config[key] == s.config[key]
    s.set_timesteps(5)
    t.set_timesteps(5)
    assert torch.equal(s.timesteps, t.timesteps) and t.family == "edm"
    # Euler keys are kept, so the saved config still describes the base model for diffusers' Euler
    e = EulerDiscreteScheduler.from_pretrained(tmp_path)
    assert e.config.timestep_type == "continuous" and e.config.use_karras_sigmas


def test_add_noise_matches_diffusers():
    x0, n = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    vp = sdxl_sched()
    t = torch.tensor([999, 500, 10])
    ddim = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    assert torch.allclose(vp.add_noise(x0, n, t), ddim.add_noise(x0, n, t), atol=1e-5)
    edm = svd_sched()
    edm.set_timesteps(4)
    noisy = edm.add_noise(x0, n, edm.timesteps[:3])
    assert torch.allclose(noisy, x0 + edm.sigmas[:3].reshape(3, 1, 1, 1) * n, rtol=1e-4, atol=1e-3)
    assert vp.add_noise(x0.bfloat16(), n.bfloat16(), t).dtype == torch.bfloat16


def test_scale_model_input():
    x = torch.randn(1, 2, 4, 8, 8)
    edm, euler = svd_sched(), EulerDiscreteScheduler(**SVD_CFG)
    edm.set_timesteps(4)
    euler.set_timesteps(25)
    assert float(euler.sigmas[0]) == pytest.approx(float(edm.sigmas[0]), rel=1e-5)
    a = edm.scale_model_input(x, edm.timesteps[0])
    b = euler.scale_model_input(x, euler.timesteps[0])
    assert torch.allclose(a, b, rtol=1e-5)
    vp = sdxl_sched()
    vp.set_timesteps(4)
    assert torch.equal(vp.scale_model_input(x, vp.timesteps[0]), x)


@pytest.mark.parametrize("make", [svd_sched, sdxl_sched])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_step_shapes_dtypes_and_last_step_returns_x0(make, dtype):
    s = make()
    s.set_timesteps(4)
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 4, 8, 8, generator=g) * s.init_noise_sigma).to(dtype)
    for i, t in enumerate(s.timesteps):
        out = s.step(torch.randn(x.shape, generator=g).to(dtype), t, s.scale_model_input(x, t) * 0 + x,
                     generator=torch.Generator().manual_seed(i))
        assert out.prev_sample.shape == x.shape and out.prev_sample.dtype == dtype
        assert out.pred_original_sample.dtype == dtype
        x = out.prev_sample
    assert torch.equal(out.prev_sample, out.pred_original_sample)
    tup = make().step(torch.zeros(1, 4, 8, 8), make().timesteps[0], torch.zeros(1, 4, 8, 8), return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 2


def _run(s, x, outputs, generator=None):
    s.set_timesteps(4)
    for t, m in zip(s.timesteps, outputs):
        x = s.step(m, t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("make", [svd_sched, sdxl_sched])
def test_determinism_with_generator_and_global_rng_untouched(make):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 8, 8, generator=g)
    outs = [torch.randn(1, 4, 8, 8, generator=g) for _ in range(4)]
    state = torch.get_rng_state()
    a = _run(make(eta=0.3), x, outs, torch.Generator().manual_seed(5))
    b = _run(make(eta=0.3), x, outs, torch.Generator().manual_seed(5))
    c = _run(make(eta=0.3), x, outs, torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state), "the sampler must never draw from the global RNG"
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # without a generator: the scheduler's own seeded generator, reproducible across runs
    assert torch.equal(_run(make(eta=0.3), x, outs), _run(make(eta=0.3), x, outs))
    # η = 0: deterministic whatever the generator
    d = _run(make(eta=0.0), x, outs, torch.Generator().manual_seed(5))
    e = _run(make(eta=0.0), x, outs, torch.Generator().manual_seed(6))
    assert torch.equal(d, e)


def test_eta0_edm_step_equals_euler_and_vp_step_equals_ddim():
    """With η = 0 a TDD step is the DDIM jump: in EDM that is exactly diffusers' Euler step on the
    same σ levels; in VP it is DDIM (η = 0) between the same timesteps."""
    g = torch.Generator().manual_seed(2)
    edm = svd_sched(eta=0.0)
    edm.set_timesteps(4)
    euler = EulerDiscreteScheduler(**SVD_CFG)
    euler.set_timesteps(sigmas=edm.sigmas.tolist())
    x = torch.randn(1, 2, 4, 8, 8, generator=g) * 700
    for t_ours, t_eu in zip(edm.timesteps, euler.timesteps):
        m = torch.randn(x.shape, generator=g)
        euler.scale_model_input(x, t_eu)
        a = edm.step(m, t_ours, x).prev_sample
        b = euler.step(m, t_eu, x).prev_sample
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(x.abs().max()))
        x = b
    vp = sdxl_sched(eta=0.0)
    vp.set_timesteps(timesteps=[999, 749, 499, 249])
    ddim = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False)
    ddim.set_timesteps(4)
    assert ddim.timesteps.tolist() == vp.timesteps.tolist()
    x = torch.randn(1, 4, 8, 8, generator=g)
    for t in vp.timesteps[:3]:
        m = torch.randn(x.shape, generator=g)
        a = vp.step(m, t, x).prev_sample
        b = ddim.step(m, t, x).prev_sample
        assert torch.allclose(a, b, atol=1e-4)
        x = b


def test_x0_clipping_only_in_first_steps():
    s = sdxl_sched(eta=0.0, clip_mode="static", clip_value=1.0, clip_steps=1, prediction_type="sample")
    s.set_timesteps(4)
    big = torch.full((1, 4, 4, 4), 5.0)
    out0 = s.step(big, s.timesteps[0], torch.zeros_like(big))
    assert float(out0.pred_original_sample.abs().max()) == pytest.approx(1.0)
    out1 = s.step(big, s.timesteps[1], out0.prev_sample)
    assert float(out1.pred_original_sample.max()) == pytest.approx(5.0)
    small = torch.full((1, 4, 4, 4), 0.5)
    s.set_timesteps(4)
    assert torch.equal(s.step(small, s.timesteps[0], torch.zeros_like(small)).pred_original_sample, small)


def test_custom_timesteps_and_sigmas():
    vp = sdxl_sched()
    vp.set_timesteps(timesteps=[999, 499])
    assert vp.num_inference_steps == 2 and vp.timesteps.tolist() == [999, 499]
    edm = svd_sched()
    edm.set_timesteps(sigmas=[700.0, 10.0, 0.0])
    assert edm.num_inference_steps == 2
    assert torch.allclose(edm.sigmas, torch.tensor([700.0, 10.0, 0.0]), rtol=1e-5)
    edm2 = svd_sched()
    edm2.set_timesteps(timesteps=edm.timesteps.tolist())
    assert torch.allclose(edm2.sigmas, edm.sigmas, rtol=1e-4)
    with pytest.raises(ConfigError, match="strictly decreasing"):
        vp.set_timesteps(timesteps=[499, 999])
    with pytest.raises(ConfigError, match="integers"):
        vp.set_timesteps(timesteps=[999.5])
    with pytest.raises(ConfigError, match="custom sigmas"):
        vp.set_timesteps(sigmas=[1.0, 0.0])


@pytest.mark.parametrize("kwargs,key", [(dict(eta=1.0), "eta"), (dict(eta=-0.1), "eta"),
                                        (dict(schedule="karras"), "schedule"),
                                        (dict(clip_mode="static"), "clip_value"),
                                        (dict(clip_mode="soft", clip_value=1.0), "clip_mode"),
                                        (dict(family="flow"), "family")])
def test_bad_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        sdxl_sched(**kwargs)


def test_bad_step_count():
    with pytest.raises(ConfigError, match="num_inference_steps"):
        sdxl_sched().set_timesteps(0)
    with pytest.raises(ConfigError, match="num_inference_steps"):
        sdxl_sched().set_timesteps(251)


def test_edm_schedule_consistency():
    """The scheduler's σ come from the core's Karras ramp, not a re-implementation."""
    s = svd_sched()
    s.set_timesteps(6)
    assert torch.allclose(s.sigmas.double(), EDMSchedule().sigma(s.u), rtol=1e-6)
