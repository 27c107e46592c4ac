"""TDDScheduler against docs/math.md §5–6 and diffusers' scheduler contract (modelled on diffusers' common
scheduler tests: config round trip, add_noise, scale_model_input, step shapes/dtypes, determinism)."""
import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

import tdd_video.sampling.scheduler as scheduler_module
from tdd_video.core import EDMSchedule, VPSchedule, schedule_indices
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


@pytest.mark.parametrize("make", [svd_sched, sdxl_sched])
def test_grid_indices_give_the_levels_of_s_k(make):
    """timesteps_of_grid(S_K as indices) reproduces set_timesteps(K) exactly; a subset of S_16 lands on its points."""
    ref, custom = make(), make()
    ref.set_timesteps(4)
    custom.set_timesteps(timesteps=custom.timesteps_of_grid(schedule_indices(250, 4)).tolist())
    assert torch.allclose(custom.u, ref.u) and torch.allclose(custom.sigmas, ref.sigmas, rtol=1e-5)
    fine = make()
    fine.set_timesteps(16)
    pick = make()
    pick.set_timesteps(timesteps=pick.timesteps_of_grid([250, 157, 94, 47]).tolist())
    assert torch.allclose(pick.u[:-1], fine.u[[0, 6, 10, 13]])    # S_16 = 250, 235, 219, ..., 16


@pytest.mark.parametrize("bad", [[], [251, 100], [100, 100], [50, 100], [0], [100.0, 50.0]])
def test_bad_grid_indices_name_the_key(bad):
    with pytest.raises(ConfigError, match="'grid'"):
        svd_sched().timesteps_of_grid(bad)
    with pytest.raises(ConfigError, match="'--my-flag'"):
        svd_sched().timesteps_of_grid(bad, key="--my-flag")


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


# -- γ-sampling targets on VP: floor((1 − η)·t_{i+1}) in integer timesteps, as the official TDD scheduler --------
def _targets(monkeypatch, sched, steps, eta_call=None, denoised=True):
    """Run a full sampling pass and return the target levels s the scheduler jumps to (as VP timesteps or u)."""
    seen = []
    real_jump = scheduler_module.jump

    def spy(schedule, x, x0, u_t, u_s):
        seen.append(float(u_s))
        return real_jump(schedule, x, x0, u_t, u_s)

    monkeypatch.setattr(scheduler_module, "jump", spy)
    sched.set_timesteps(steps)
    x = torch.zeros(1, 4, 4, 4)
    for t in sched.timesteps:
        kw = {} if eta_call is None else {"eta": eta_call}
        if denoised:
            x = sched.step_denoised(torch.zeros_like(x), t, x, generator=torch.Generator().manual_seed(0),
                                    **kw).prev_sample
        else:
            x = sched.step(torch.zeros_like(x), t, x, generator=torch.Generator().manual_seed(0), **kw).prev_sample
    return seen


# hand-computed from s = floor((1 − η)·t_next), t_next the next S_K timestep (docs/math.md §1c table, N = 250)
OFFICIAL_VP_TARGETS = [
    (0.2, 8, [999, 875, 751, 627, 499, 375, 251, 127], [700, 600, 501, 399, 300, 200, 101]),
    (0.2, 4, [999, 751, 499, 251], [600, 399, 200]),
    (0.3, 4, [999, 751, 499, 251], [525, 349, 175]),
    (0.4, 6, [999, 835, 667, 499, 335, 167], [501, 400, 299, 201, 100]),
    (0.3, 7, [999, 859, 715, 571, 431, 287, 143], [601, 500, 399, 301, 200, 100]),
    (0.2, 3, [999, 667, 335], [533, 268]),
    # (1 − 0.32)·375 = 254.99999999999997 in float64, as the official numpy scheduler computes it
    (0.32, 8, [999, 875, 751, 627, 499, 375, 251, 127], [595, 510, 426, 339, 254, 170, 86]),
]


@pytest.mark.parametrize("denoised", [True, False], ids=["step_denoised", "step"])
@pytest.mark.parametrize("eta,k,timesteps,want", OFFICIAL_VP_TARGETS)
def test_vp_gamma_targets_match_official_scheduler(monkeypatch, eta, k, timesteps, want, denoised):
    s = sdxl_sched(eta=eta, prediction_type="sample")
    seen = _targets(monkeypatch, s, k, denoised=denoised)
    assert s.timesteps.tolist() == timesteps
    assert VPSchedule().timestep(torch.tensor(seen)).tolist() == want
    # the official code's formula on the same timesteps (float64, numpy-style)
    assert want == [math.floor((1 - eta) * float(t)) for t in timesteps[1:]]


def test_vp_gamma_targets_nonuniform_schedule(monkeypatch):
    s = sdxl_sched(eta=0.2, schedule="tdd-nonuniform", prediction_type="sample")
    seen = _targets(monkeypatch, s, 5)
    assert s.timesteps.tolist() == [999, 875, 751, 499, 251]
    assert VPSchedule().timestep(torch.tensor(seen)).tolist() == [700, 600, 399, 200]


def test_vp_gamma_step_equals_official_update():
    """One step 999 → 875 at η = 0.2: DDIM to s = 700, then re-noise 700 → 875 with the caller's z
    (official: x = √(ᾱ_875/ᾱ_700)·x_s + √(1 − ᾱ_875/ᾱ_700)·z)."""
    from diffusers import DDPMScheduler
    abar = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod.double()
    s = sdxl_sched(eta=0.2, prediction_type="sample")
    s.set_timesteps(8)
    g = torch.Generator().manual_seed(3)
    x, x0 = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    out = s.step(x0, s.timesteps[0], x, generator=torch.Generator().manual_seed(11)).prev_sample
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(11))
    eps = (x.double() - abar[999].sqrt() * x0) / (1 - abar[999]).sqrt()
    x_s = abar[700].sqrt() * x0 + (1 - abar[700]).sqrt() * eps
    r = abar[875] / abar[700]
    want = r.sqrt() * x_s + (1 - r).sqrt() * z
    assert torch.allclose(out.double(), want, atol=1e-5), float((out - want).abs().max())


def test_edm_gamma_target_is_bit_identical_shrink_of_u(monkeypatch):
    """EDM keeps s = (1 − η)·u_{i+1} on the continuous axis, bit for bit."""
    s = svd_sched(eta=0.3)
    seen = _targets(monkeypatch, s, 4)
    u = s.u.tolist()
    assert seen[:3] == [(1.0 - 0.3) * u_next for u_next in u[1:4]]
    assert seen[0] == pytest.approx(0.5264)


# -- per-call η (diffusers pipelines pass their `eta` to any step that accepts it) -------------------------------
def test_per_call_eta_overrides_config(monkeypatch):
    vp = VPSchedule()
    s = sdxl_sched(eta=0.3, prediction_type="sample")
    assert vp.timestep(torch.tensor(_targets(monkeypatch, s, 4, eta_call=0.2))).tolist() == [600, 399, 200]
    assert vp.timestep(torch.tensor(_targets(monkeypatch, s, 4, eta_call=None))).tolist() == [525, 349, 175]
    assert vp.timestep(torch.tensor(_targets(monkeypatch, s, 4, eta_call=0.0, denoised=False))).tolist() == \
        [751, 499, 251]
    assert s.config.eta == 0.3, "a per-call eta must not change the config"
    import inspect
    params = inspect.signature(s.step).parameters
    assert list(params)[:6] == ["model_output", "timestep", "sample", "eta", "generator", "return_dict"]
    assert params["eta"].default is None


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
@pytest.mark.parametrize("method", ["step", "step_denoised"])
def test_bad_per_call_eta_names_the_key(bad, method):
    s = sdxl_sched(prediction_type="sample")
    s.set_timesteps(4)
    x = torch.zeros(1, 4, 4, 4)
    with pytest.raises(ConfigError, match="'eta'"):
        getattr(s, method)(x, s.timesteps[0], x, eta=bad)
    assert s.step_index is None, "a rejected call must not advance the scheduler"


def test_stock_sdxl_pipeline_honours_per_call_eta():
    """StableDiffusionXLPipeline passes its `eta` (default 0.0) and `generator` to our `step`: pipe(eta=0.2)
    equals the family loop at η = 0.2 with the same noise and generator, whatever the config's η."""
    from tdd_video.families.sdxl import SDXLFamily
    from tdd_video.sampling.sample import sample
    family = SDXLFamily.tiny(seed=0)
    px = family.unet.config.sample_size * family.vae_scale_factor
    noise = torch.randn(family.latent_shape(1, px, px), generator=torch.Generator().manual_seed(0))
    pipe = family.pipeline()
    pipe.scheduler = TDDScheduler.from_config(pipe.scheduler.config, eta=0.3)
    pipe.set_progress_bar_config(disable=True)

    def run(**kw):
        return pipe("a red circle", height=px, width=px, num_inference_steps=4, guidance_scale=1.0, latents=noise,
                    generator=torch.Generator().manual_seed(7), output_type="latent", **kw).images.float()

    with_eta, zero, default = run(eta=0.2), run(eta=0.0), run()
    assert pipe.scheduler.timesteps.tolist() == [999, 751, 499, 251] and pipe.scheduler.config.eta == 0.3
    cond = family.encode_conditioning({"caption": ["a red circle"]}, train=False)
    ours = {eta: sample(family, cond, steps=4, eta=eta, guidance=1.0, latents=noise,
                        generator=torch.Generator().manual_seed(7), progress=False) for eta in (0.2, 0.0)}
    tol = dict(atol=1e-4 * float(with_eta.abs().max()), rtol=1e-3)
    assert (with_eta - zero).abs().max() > 1e-2, "the pipeline's eta must reach the scheduler"
    assert torch.allclose(ours[0.2], with_eta, **tol), float((ours[0.2] - with_eta).abs().max())
    assert torch.allclose(ours[0.0], zero, **tol)
    assert torch.equal(default, zero), "the pipeline's default eta = 0.0 wins over the config's η"
