"""TDDScheduler drops into StableDiffusionXLPipeline (VP, ε-prediction) and the family loop gives the
same latents as the pipeline for the same noise and generator (which SDXL's pipeline passes to step)."""
import pytest
import torch

from tdd_video.families.sdxl import SDXLFamily
from tdd_video.sampling import TDDScheduler
from tdd_video.sampling.sample import SamplingStats, sample


@pytest.fixture(scope="module")
def family():
    return SDXLFamily.tiny(seed=0)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_sdxl_loop_equals_pipeline(family, guidance):
    px = family.unet.config.sample_size * family.vae_scale_factor
    cond = family.encode_conditioning({"caption": ["a red circle"]}, train=False)
    noise = torch.randn(family.latent_shape(1, px, px), generator=torch.Generator().manual_seed(0))
    stats = SamplingStats()
    ours = sample(family, cond, steps=4, eta=0.3, guidance=guidance, latents=noise,
                  generator=torch.Generator().manual_seed(7), progress=False, stats=stats)
    pipe = family.pipeline()
    pipe.scheduler = TDDScheduler.from_config(pipe.scheduler.config, eta=0.3)
    assert pipe.scheduler.family == "vp"
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a red circle", height=px, width=px, num_inference_steps=4, guidance_scale=guidance, latents=noise,
               eta=0.3, generator=torch.Generator().manual_seed(7), output_type="latent").images
    assert pipe.scheduler.timesteps.tolist() == [999, 751, 499, 251]
    assert torch.allclose(ours, ref.float(), atol=1e-4 * float(ref.abs().max()), rtol=1e-3), \
        float((ours - ref).abs().max())
    assert stats.unet_passes == (4 if guidance == 1.0 else 8)
