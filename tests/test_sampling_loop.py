"""The family sampling loop (docs/math.md §5) agrees with diffusers' StableVideoDiffusionPipeline + TDDScheduler,
counts UNet passes, and Distillation++ (docs/math.md §7) behaves: λ = 0 is a no-op, the teacher is the base
with adapters disabled, a student without adapters is refused."""
import copy

import numpy as np
import pytest
import torch

from tdd_video.data.image_io import fit_image, image_to_tensor, load_image
from tdd_video.errors import ConfigError
from tdd_video.families.svd import SVDFamily
from tdd_video.sampling import TDDScheduler
from tdd_video.sampling.refine import RefineSettings, has_adapters
from tdd_video.sampling.sample import SamplingStats, sample

F, PX = 8, 64


@pytest.fixture(scope="module")
def family():
    return SVDFamily.tiny(seed=0)


@pytest.fixture(scope="module")
def image():
    img, _ = load_image(None)
    img, _ = fit_image(img, PX, PX)
    return img


def g(seed):
    return torch.Generator().manual_seed(seed)


def conditioning(family, image):
    return family.encode_conditioning({"first_frame": image_to_tensor(image)}, generator=g(0), train=False,
                                      noise_aug=0.02, fps_id=6, motion_bucket_id=127)


def noise():
    return torch.randn(1, F, 4, PX // 4, PX // 4, generator=g(1))


@pytest.mark.parametrize("guidance", [1.0, (1.0, 3.0)])
def test_loop_equals_pipeline_with_tdd_scheduler(family, image, guidance):
    stats = SamplingStats()
    ours = sample(family, conditioning(family, image), steps=4, eta=0.3, guidance=guidance, latents=noise(),
                  generator=g(2), progress=False, stats=stats)
    pipe = family.pipeline(scheduler=TDDScheduler.from_config(family.scheduler_config, eta=0.3))
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler.set_generator(g(2))
    g_min, g_max = guidance if isinstance(guidance, tuple) else (guidance, guidance)
    ref = pipe(image, height=PX, width=PX, num_frames=F, num_inference_steps=4, min_guidance_scale=g_min,
               max_guidance_scale=g_max, fps=7, motion_bucket_id=127, noise_aug_strength=0.02,
               generator=g(0), latents=noise(), output_type="latent").frames
    assert ours.shape == ref.shape == (1, F, 4, PX // 4, PX // 4)
    scale = float(ref.abs().max())
    assert torch.allclose(ours, ref.float(), atol=2e-4 * scale, rtol=1e-3), float((ours - ref).abs().max())
    assert stats.unet_passes == (4 if guidance == 1.0 else 8)
    assert stats.forward_calls == 4 and len(stats.step_seconds) == 4


def test_same_seed_same_latents_and_seed_matters(family, image):
    cond = conditioning(family, image)
    a = sample(family, cond, steps=2, eta=0.3, shape=(1, F, 4, 16, 16), generator=g(5), progress=False)
    b = sample(family, cond, steps=2, eta=0.3, shape=(1, F, 4, 16, 16), generator=g(5), progress=False)
    c = sample(family, cond, steps=2, eta=0.3, shape=(1, F, 4, 16, 16), generator=g(6), progress=False)
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.fixture(scope="module")
def lora_family():
    from peft import LoraConfig, inject_adapter_in_model
    fam = SVDFamily.tiny(seed=0)
    unet = copy.deepcopy(fam.unet)
    torch.manual_seed(0)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                       init_lora_weights=False), unet)
    fam.unet = unet
    return fam


def test_refine_lambda0_is_noop_and_counts_teacher_passes(lora_family, image):
    cond = conditioning(lora_family, image)
    base = dict(steps=3, eta=0.0, latents=noise(), progress=False)
    plain = sample(lora_family, cond, generator=g(3), **base)
    stats = SamplingStats()
    zero = sample(lora_family, cond, generator=g(3), refine=RefineSettings(strength=0.0, steps=2), stats=stats, **base)
    assert torch.equal(plain, zero)
    assert stats.refine_passes == 4 and stats.unet_passes == 3 + 4      # 2 refined steps × batched 2B teacher
    moved = sample(lora_family, cond, generator=g(3), refine=RefineSettings(strength=0.5, steps=1), **base)
    assert not torch.allclose(plain, moved)


def test_refine_teacher_is_base_with_adapters_disabled(lora_family, image):
    """Refining with the adapters-disabled student equals refining with an explicit copy of the base."""
    fam0 = SVDFamily.tiny(seed=0)
    cond = conditioning(lora_family, image)
    kw = dict(steps=2, eta=0.0, latents=noise(), progress=False)
    via_disable = sample(lora_family, cond, generator=g(4), refine=RefineSettings(0.3, 1, guidance=1.0), **kw)
    via_copy = sample(lora_family, cond, generator=g(4),
                      refine=RefineSettings(0.3, 1, guidance=1.0, teacher=fam0.unet), **kw)
    assert torch.allclose(via_disable, via_copy, atol=1e-5)
    assert has_adapters(lora_family.unet)
    # adapters are back on after refinement: the student's output differs from the base's again
    x = noise() * 10
    u = torch.tensor([0.5], dtype=torch.float64)
    assert not torch.allclose(lora_family.denoise(x, u, cond), fam0.denoise(x, u, cond))


def test_refine_needs_a_teacher(family, image):
    with pytest.raises(ConfigError, match="teacher_refine"):
        sample(family, conditioning(family, image), steps=2, latents=noise(), progress=False,
               refine=RefineSettings(0.05, 1), generator=g(0))
    with pytest.raises(ConfigError, match="teacher_refine"):
        RefineSettings(strength=1.5)


def test_clip_bounds_x0_in_loop(family, image):
    from tdd_video.sampling.sample import ClipSettings
    cond = conditioning(family, image)
    out = sample(family, cond, steps=1, eta=0.0, latents=noise(), progress=False,
                 clip=ClipSettings("static", 0.05, steps=1))
    assert float(out.abs().max()) <= 0.05 + 1e-6
    assert np.isfinite(out.numpy()).all()
