"""SVDFamily against diffusers' StableVideoDiffusionPipeline on the tiny random SVD (loaded from a
real diffusers folder through from_pretrained)."""
import numpy as np
import PIL.Image
import pytest
import torch

from tdd_video.core import framewise_scale
from tdd_video.errors import ConfigError
from tdd_video.families import load_family
from tdd_video.families.svd import SVDConditioning
from tdd_video.families.tiny import save_tiny_svd, tiny_sdxl_vae

F, PX = 8, 64


@pytest.fixture(scope="module")
def svd_dir(tmp_path_factory):
    return save_tiny_svd(tmp_path_factory.mktemp("tiny_svd"), seed=0)


@pytest.fixture(scope="module")
def fam(svd_dir):
    return load_family("svd", svd_dir)


def _image(seed=0):
    arr = np.random.default_rng(seed).integers(0, 256, (PX, PX, 3), dtype=np.uint8)
    frames = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    return PIL.Image.fromarray(arr), frames


def _record_steps(pipe):
    """Wrap scheduler.step to record (sigma, sample, pred_original_sample) of every step."""
    rec, orig = [], pipe.scheduler.step

    def step(model_output, timestep, sample, **kw):
        out = orig(model_output, timestep, sample, **kw)
        rec.append((pipe.scheduler.sigmas[pipe.scheduler.step_index - 1].item(), sample.clone(),
                    out.pred_original_sample.clone()))
        return out
    pipe.scheduler.step = step
    return rec


def test_denoise_matches_pipeline_with_framewise_cfg(fam):
    pipe = fam.pipeline()
    pipe.set_progress_bar_config(disable=True)
    img, frames = _image()
    rec = _record_steps(pipe)
    unet_inputs = []
    hook = fam.unet.register_forward_pre_hook(lambda m, a, k: unet_inputs.append(k), with_kwargs=True)
    lat = torch.randn(1, F, 4, PX // 4, PX // 4, generator=torch.Generator().manual_seed(1)) * 700.0
    pipe(img, height=PX, width=PX, num_frames=F, num_inference_steps=2, min_guidance_scale=1.0,
         max_guidance_scale=3.0, fps=7, motion_bucket_id=127, noise_aug_strength=0.02,
         generator=torch.Generator().manual_seed(0), latents=lat, output_type="latent")
    hook.remove()
    cond = fam.encode_conditioning({"first_frame": frames}, generator=torch.Generator().manual_seed(0), train=False,
                                   noise_aug=0.02, fps_id=6, motion_bucket_id=127)
    # the pipeline's negative branch is our null conditioning, its positive branch our cond
    null = fam.null_conditioning(cond)
    ehs = unet_inputs[0]["encoder_hidden_states"]
    assert torch.equal(ehs[:1], null.image_emb) and torch.allclose(ehs[1:], cond.image_emb, atol=1e-6)
    assert torch.allclose(unet_inputs[0]["added_time_ids"], torch.cat([cond.added_time_ids] * 2))
    w = framewise_scale(1.0, 3.0, F)
    assert len(rec) == 2
    with torch.no_grad():
        for sigma, sample, x0_pipe in rec:
            u = fam.schedule.u_of_sigma(torch.tensor([sigma], dtype=torch.float64))
            x0 = fam.denoise_cfg(sample, u, cond, w)
            assert (x0 - x0_pipe).abs().max() < 1e-4 * max(1.0, x0_pipe.abs().max().item())


def test_image_embedding_matches_pipeline(fam):
    img, frames = _image(3)
    ours = fam.encode_image_embedding(frames)
    ref = fam.pipeline()._encode_image(img, "cpu", 1, False)
    assert ours.shape == (1, 1, fam.image_encoder.config.projection_dim)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_per_sample_conditioning_is_per_sample(fam):
    _, f0 = _image(1)
    _, f1 = _image(2)
    batch = {"first_frame": torch.cat([f0, f1]), "fps_id": torch.tensor([3, 9]),
             "motion_bucket_id": torch.tensor([20, 200])}
    cond = fam.encode_conditioning(batch, generator=torch.Generator().manual_seed(0), train=False,
                                   noise_aug=torch.tensor([0.0, 0.1]))
    assert torch.allclose(cond.added_time_ids, torch.tensor([[3, 20, 0.0], [9, 200, 0.1]]))
    x = torch.randn(2, F, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    u = torch.tensor([0.3, 0.8], dtype=torch.float64)
    with torch.no_grad():
        both = fam.denoise(x, u, cond)
        each = torch.cat([fam.denoise(x[i:i + 1], u[i:i + 1], cond.index(slice(i, i + 1))) for i in range(2)])
        swapped = fam.denoise(x, u, cond.index(torch.tensor([1, 0])))
    assert torch.allclose(both, each, atol=1e-5)
    assert not torch.allclose(both, swapped, atol=1e-3)   # sample i really uses its own conditioning
    trained = fam.encode_conditioning(batch, generator=torch.Generator().manual_seed(0), train=True)
    aug = trained.added_time_ids[:, 2]
    assert (aug > 0).all() and aug[0] != aug[1]          # LogNormal(−3, 0.5) per sample


def test_latent_cache_batch_and_null(fam):
    _, f0 = _image(1)
    emb = torch.randn(1, 1, 32)
    cond = fam.encode_conditioning({"first_frame": f0, "image_emb": emb, "latents": torch.zeros(1, F, 4, 16, 16)},
                                   train=False)
    assert torch.equal(cond.image_emb, emb) and cond.cond_latent.shape == (1, 4, 16, 16)
    null = fam.null_conditioning(cond)
    assert isinstance(null, SVDConditioning)
    assert null.image_emb.abs().sum() == 0 and null.cond_latent.abs().sum() == 0
    assert torch.equal(null.added_time_ids, cond.added_time_ids)
    with pytest.raises(ConfigError, match="pixel_values"):
        fam.encode_conditioning({"fps_id": torch.tensor([6])})


def test_u0_returns_x_exactly_and_grads_finite(fam):
    _, f0 = _image(1)
    cond = fam.encode_conditioning({"first_frame": torch.cat([f0, f0])}, train=False)
    x = torch.randn(2, F, 4, 16, 16, requires_grad=True)
    out = fam.denoise(x, torch.tensor([0.0, 0.5], dtype=torch.float64), cond)
    assert torch.equal(out[0], x[0].detach())
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_bf16_unet_fp32_math_stays_finite(svd_dir):
    fam16 = load_family("svd", svd_dir, dtype=torch.bfloat16)
    fam32 = load_family("svd", svd_dir)
    assert next(fam16.unet.parameters()).dtype == torch.bfloat16
    _, f0 = _image(1)
    cond = fam32.encode_conditioning({"first_frame": f0}, train=False)
    x = torch.randn(1, F, 4, 16, 16) * 700
    for u in (1.0, 0.5, 1e-4):
        with torch.no_grad():
            a = fam16.denoise(x * fam16.schedule.sigma(u) / 700, u, cond)
            b = fam32.denoise(x * fam32.schedule.sigma(u) / 700, u, cond)
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert (a - b).abs().max() < 0.1 * (b.abs().max() + 1)


def test_encode_decode_latents_shapes_and_pipeline_decode(fam):
    pix = torch.rand(2, F, 3, PX, PX) * 2 - 1
    lat = fam.encode_latents({"pixel_values": pix}, generator=torch.Generator().manual_seed(0))
    assert lat.shape == (2, F, 4, 16, 16)
    out = fam.decode_latents(lat[:1])
    ref = fam.pipeline().decode_latents(lat[:1], F, F).permute(0, 2, 1, 3, 4)
    assert out.shape == (1, F, 3, PX, PX) and torch.allclose(out, ref, atol=1e-5)
    chunked = fam.decode_latents(lat, decode_chunk=4)
    assert chunked.shape == (2, F, 3, PX, PX) and torch.allclose(chunked[0], fam.decode_latents(lat[:1], 4)[0])


def test_plain_autoencoderkl_decodes(fam):
    vae = fam.vae
    try:
        fam.vae = tiny_sdxl_vae(0)
        out = fam.decode_latents(torch.randn(2, 3, 4, 16, 16), decode_chunk=2)
        assert out.shape == (2, 3, 3, PX, PX)
    finally:
        fam.vae = vae


def test_registry_errors(tmp_path, svd_dir):
    with pytest.raises(ConfigError, match="known families: sdxl, svd"):
        load_family("sd3")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text((svd_dir / "model_index.json").read_text())
    (broken / "unet").mkdir()
    with pytest.raises(ConfigError, match=r"missing component subfolder\(s\) vae/, image_encoder/"):
        load_family("svd", broken)
    with pytest.raises(ConfigError, match="tiny:<int seed>"):
        load_family("svd", "tiny:abc")
