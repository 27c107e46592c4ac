"""SDXLFamily against diffusers' StableDiffusionXLPipeline on the tiny random SDXL (loaded from a
real diffusers folder with an offline tokenizer)."""
import pytest
import torch

from tdd_video.families import load_family
from tdd_video.families.sdxl import SDXLConditioning
from tdd_video.families.tiny import save_tiny_sdxl

PROMPTS = ["a red cat", "blue dog on the left"]


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    return save_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"), seed=0)


@pytest.fixture(scope="module")
def fam(sdxl_dir):
    return load_family("sdxl", sdxl_dir)


def _record_steps(pipe):
    rec, orig = [], pipe.scheduler.step

    def step(model_output, timestep, sample, **kw):
        return_dict = kw.pop("return_dict", True)
        out = orig(model_output, timestep, sample, return_dict=True, **kw)
        rec.append((int(timestep), pipe.scheduler.sigmas[pipe.scheduler.step_index - 1].item(), sample.clone(),
                    out.pred_original_sample.clone()))
        return out if return_dict else (out.prev_sample,)
    pipe.scheduler.step = step
    return rec


def test_tokenizer_offline_and_prompt_encoding_matches_pipeline(fam):
    assert fam.tokenizer.model_max_length == 77
    ids = fam.tokenizer("a red cat").input_ids
    assert ids[0] == fam.tokenizer.bos_token_id and ids[-1] == fam.tokenizer.eos_token_id and len(ids) == 5
    pe, pooled = fam.encode_prompt(PROMPTS)
    ref_pe, ref_neg, ref_pooled, ref_neg_pooled = fam.pipeline().encode_prompt(PROMPTS, device="cpu",
                                                                               do_classifier_free_guidance=True)
    assert pe.shape == (2, 77, 64) and pooled.shape == (2, 32)
    assert torch.allclose(pe, ref_pe) and torch.allclose(pooled, ref_pooled)
    cond = fam.encode_conditioning({"caption": PROMPTS})
    null = fam.null_conditioning(cond)
    assert isinstance(null, SDXLConditioning)
    assert torch.equal(null.prompt_embeds, ref_neg) and torch.equal(null.pooled, ref_neg_pooled)  # zeros
    assert torch.equal(null.add_time_ids, cond.add_time_ids)


def test_denoise_matches_pipeline_with_guidance(fam):
    pipe = fam.pipeline()
    pipe.set_progress_bar_config(disable=True)
    rec = _record_steps(pipe)
    lat = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1)) * pipe.scheduler.init_noise_sigma
    pipe(PROMPTS, height=64, width=64, num_inference_steps=2, guidance_scale=3.5, latents=lat,
         output_type="latent", original_size=(48, 40), crops_coords_top_left=(2, 4), target_size=(64, 64))
    cond = fam.encode_conditioning({"caption": PROMPTS, "original_size": [[48, 40]], "crop_coords": [[2, 4]],
                                    "target_size": [[64, 64]]})
    assert cond.add_time_ids[0].tolist() == [48, 40, 2, 4, 64, 64]
    assert len(rec) == 2
    with torch.no_grad():
        for t, sigma, sample, x0_pipe in rec:
            u = fam.schedule.u_of_timestep(torch.full((2,), t))
            assert fam.schedule.timestep(u).tolist() == [t, t]
            x_vp = sample / (sigma ** 2 + 1) ** 0.5          # Euler's scale_model_input = the VP x_t
            x0 = fam.denoise_cfg(x_vp, u, cond, 3.5)
            assert (x0 - x0_pipe).abs().max() < 1e-4 * max(1.0, x0_pipe.abs().max().item())


def test_per_sample_time_ids_and_u0(fam):
    batch = {"caption": PROMPTS, "original_size": torch.tensor([[64, 64], [32, 48]]),
             "crop_coords": torch.tensor([[0, 0], [8, 0]])}
    cond = fam.encode_conditioning(batch)
    assert cond.add_time_ids.tolist() == [[64, 64, 0, 0, 64, 64], [32, 48, 8, 0, 64, 64]]
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    u = torch.tensor([0.4, 0.9], dtype=torch.float64)
    with torch.no_grad():
        both = fam.denoise(x, u, cond)
        each = torch.cat([fam.denoise(x[i:i + 1], u[i:i + 1], cond.index(slice(i, i + 1))) for i in range(2)])
        at0 = fam.denoise(x, torch.zeros(2, dtype=torch.float64), cond)
    assert torch.allclose(both, each, atol=1e-5)
    assert torch.equal(at0, x)


def test_latents_roundtrip_shapes(fam):
    pix = torch.rand(3, 3, 64, 64) * 2 - 1
    lat = fam.encode_latents({"pixel_values": pix}, generator=torch.Generator().manual_seed(0))
    assert lat.shape == (3, 4, 16, 16)
    out = fam.decode_latents(lat, decode_chunk=2)
    assert out.shape == pix.shape and torch.isfinite(out).all()


def test_bf16_unet_fp32_math_stays_finite(sdxl_dir, fam):
    fam16 = load_family("sdxl", sdxl_dir, dtype=torch.bfloat16)
    assert next(fam16.unet.parameters()).dtype == torch.bfloat16
    cond = fam.encode_conditioning({"caption": PROMPTS[:1]})
    x = torch.randn(1, 4, 16, 16)
    for u in (1.0, 0.5, 0.004):
        with torch.no_grad():
            a, b = fam16.denoise(x, u, cond), fam.denoise(x, u, cond)
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert (a - b).abs().max() < 0.1 * (b.abs().max() + 1)
