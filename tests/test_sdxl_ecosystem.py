"""The SDXL case end to end on the tiny model: train/distill_sdxl.py trains a TDD LoRA through the shared engine
and the image loader; the saved LoRA works in stock diffusers — load_lora_weights at the trained strength
(alpha/rank kept), combined with a second LoRA through set_adapters(adapter_weights=...), and in
StableDiffusionXLControlNetPipeline with our TDDScheduler; infer/txt2img.py renders with it."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """2 TDD steps on the tiny random SDXL (rank 4, alpha 2: scale 0.5) via the real CLI; returns the run dir."""
    from tdd_video.cli import distill
    out = tmp_path_factory.mktemp("tdd_sdxl")
    rc = distill.main(default_config=ROOT / "configs/toy/tdd_sdxl_tiny.yaml",
                      argv=["model.path=null", f"run.output_dir={out}", "train.max_steps=2", "train.lr=0.05",
                            "train.warmup_steps=0", "train.checkpoint_every=0", "train.progress=false",
                            "trainable.lora_rank=4", "trainable.lora_alpha=2", "data.synthetic_num=8",
                            "data.batch_size=2", "data.height=64", "data.width=64"])
    assert rc == 0
    return out


def manual_fuse(unet, lora_file: Path, weight: float) -> None:
    """W += weight · (alpha/r) · B·A for every module of a diffusers-format LoRA file (independent of peft)."""
    import json

    from safetensors import safe_open
    with safe_open(str(lora_file), "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    scale = weight * meta["unet.lora_alpha"] / meta["unet.r"]
    state = load_file(str(lora_file))
    mods = dict(unet.named_modules())
    with torch.no_grad():
        for key, a in state.items():
            if not key.endswith(".lora_A.weight"):
                continue
            name = key[len("unet."):-len(".lora_A.weight")]
            b = state[key.replace("lora_A", "lora_B")]
            w = mods[name].weight
            w += scale * (b.flatten(1) @ a.flatten(1)).view(w.shape)


def unet_out(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 16, 16, generator=g)
    emb = torch.randn(2, 77, 64, generator=g)
    kw = {"text_embeds": torch.randn(2, 32, generator=g), "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]] * 2)}
    with torch.no_grad():
        return unet(x, torch.tensor([999, 499]), encoder_hidden_states=emb, added_cond_kwargs=kw).sample


def pipeline(run: Path):
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(str(run / "tiny_model"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_trained_lora_stock_strength_and_adapter_weights(trained, tmp_path):
    from tdd_video import lora as lora_lib
    lora_file = trained / "export" / "lora" / "pytorch_lora_weights.safetensors"
    assert (trained / "config.yaml").read_text().count("family: sdxl") == 1
    pipe = pipeline(trained)
    base = copy.deepcopy(pipe.unet)
    ref_base = unet_out(base)
    expected = copy.deepcopy(base)
    manual_fuse(expected, lora_file, 1.0)
    pipe.load_lora_weights(str(lora_file), adapter_name="tdd")
    got = unet_out(pipe.unet)
    want = unet_out(expected)
    delta = (want - ref_base).abs().max()
    assert delta > 1e-3, "the trained LoRA should change the UNet"
    assert torch.allclose(got, want, atol=delta * 1e-3), float((got - want).abs().max())

    # a second LoRA (alpha 8, rank 8) combined with diffusers' adapter weights
    other = copy.deepcopy(base)
    lora_lib.add_lora(other, "student", rank=8, alpha=8, preset="attn")
    with torch.no_grad():
        for n, p in other.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    style_file = lora_lib.save_lora(other, tmp_path / "style", adapter="student", family="sdxl")
    pipe.load_lora_weights(str(style_file), adapter_name="style")
    pipe.set_adapters(["tdd", "style"], adapter_weights=[1.0, 0.5])
    combo = copy.deepcopy(base)
    manual_fuse(combo, lora_file, 1.0)
    manual_fuse(combo, Path(style_file), 0.5)
    got, want = unet_out(pipe.unet), unet_out(combo)
    assert torch.allclose(got, want, atol=(want - ref_base).abs().max() * 1e-3)
    pipe.set_adapters(["tdd", "style"], adapter_weights=[0.0, 0.0])
    assert torch.allclose(unet_out(pipe.unet), ref_base, atol=1e-5)


def test_controlnet_pipeline_with_tdd_scheduler_and_lora(trained):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

    from tdd_video.sampling import TDDScheduler
    lora_file = trained / "export" / "lora" / "pytorch_lora_weights.safetensors"
    pipe = pipeline(trained)
    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(8, 16, 16))
    pipe.load_lora_weights(str(lora_file))
    pipe.scheduler = TDDScheduler.from_config(pipe.scheduler.config, eta=0.2)
    cn = StableDiffusionXLControlNetPipeline(**pipe.components, controlnet=controlnet)
    cn.set_progress_bar_config(disable=True)
    noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    control = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    common = dict(prompt="a red circle above a blue square", height=64, width=64, num_inference_steps=4,
                  guidance_scale=1.0, latents=noise, output_type="latent")
    ref = pipe(**common, generator=torch.Generator().manual_seed(3)).images
    assert pipe.scheduler.timesteps.tolist() == [999, 751, 499, 251]
    off = cn(**common, image=control, controlnet_conditioning_scale=0.0,
             generator=torch.Generator().manual_seed(3)).images
    assert torch.allclose(off, ref, atol=1e-4 * float(ref.abs().max())), "ControlNet at scale 0 must not change TDD"
    with torch.no_grad():   # give the zero-initialised ControlNet outputs some weight: the control must act
        for m in list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block]:
            m.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(4))
    on = cn(**common, image=control, controlnet_conditioning_scale=1.0,
            generator=torch.Generator().manual_seed(3)).images
    assert torch.isfinite(on).all() and (on - ref).abs().max() > 1e-3


def test_txt2img_cli_renders_with_trained_lora_deterministically(trained, tmp_path):
    from tdd_video.cli import txt2img
    args = ["--model", str(trained / "tiny_model"), "--lora",
            str(trained / "export" / "lora" / "pytorch_lora_weights.safetensors"), "--steps", "4", "--batch", "2",
            "--height", "32", "--width", "32",
            "--prompt", "a red circle above a blue square", "--prompt", "a green square below a yellow circle",
            "--guidance", "1.5", "--teacher-refine", "0.1", "--schedule", "tdd-nonuniform", "--clip-x0", "dynamic:2",
            "--no-progress", "--seed", "5"]
    assert txt2img.main(args + ["--out", str(tmp_path / "a.png")]) == 0
    assert txt2img.main(args + ["--out", str(tmp_path / "b")]) == 0
    from PIL import Image
    grid = np.asarray(Image.open(tmp_path / "a.png"))
    assert grid.shape == (64, 64, 3)                    # 2 prompts x 2 images of 32 px
    singles = [np.asarray(Image.open(tmp_path / "b" / f"img_{i:03d}.png")) for i in range(4)]
    assert np.array_equal(grid[:32, :32], singles[0]) and np.array_equal(grid[32:, 32:], singles[3])
    assert not np.array_equal(singles[0], singles[2])   # different prompts, different images
    assert txt2img.main(["--model", "tiny", "--teacher-refine", "0.1", "--out", str(tmp_path / "c.png")]) == 2
    assert txt2img.main(["--model", "tiny", "--steps", "0"]) == 2
