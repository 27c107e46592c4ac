"""infer/img2vid.py and the Python API: default run, determinism (frame hashes), bad input, LoRA
refusal, Distillation++ through the CLI, pipeline export that loads with plain diffusers."""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tdd_video.apps.img2vid import Img2VidSettings, render_img2vid
from tdd_video.errors import ConfigError
from tdd_video.sampling.sample import ClipSettings

ROOT = Path(__file__).resolve().parents[1]
from tdd_video.cli import img2vid as cli  # noqa: E402


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TDD_VIDEO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def fast(tmp_path, **kw):
    base = dict(model="tiny", steps=2, frames=2, progress=False, out=str(tmp_path / "out.gif"))
    base.update(kw)
    return Img2VidSettings(**base)


def frame_hash(frames) -> str:
    u8 = ((frames.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return hashlib.sha256(u8.tobytes()).hexdigest()


def test_default_render_is_deterministic_and_creates_output_folder(tmp_path):
    logs = []
    out = tmp_path / "missing" / "sub" / "clip.mp4"
    a = render_img2vid(fast(tmp_path, out=str(out), steps=4, eta=0.3), log=logs.append)
    assert out.exists() and out.stat().st_size > 0
    assert any("RANDOM weights" in n for n in a.notes) and any("created output folder" in n for n in a.notes)
    assert {"load", "image", "conditioning", "denoise", "decode", "write"} <= set(a.timings)
    assert any(line.startswith("wrote ") for line in logs)
    assert a.stats.unet_passes == 4 and a.frames.shape == (2, 3, 64, 64)
    b = render_img2vid(fast(tmp_path, out=str(tmp_path / "frames"), steps=4, eta=0.3))
    assert frame_hash(a.frames) == frame_hash(b.frames)
    assert len(list((tmp_path / "frames").glob("*.png"))) == 2
    c = render_img2vid(fast(tmp_path, steps=4, eta=0.3, seed=1))
    assert frame_hash(a.frames) != frame_hash(c.frames)


def test_default_is_the_zoo_student(tmp_path):
    """No --model: the trained toy teacher with its shipped TDD LoRA; `--model toy-svd` is the bare teacher."""
    from tdd_video import zoo
    if not zoo.is_zoo_name(zoo.DEFAULT_SVD) or zoo.default_student_lora() is None:
        pytest.skip("toy zoo weights not installed")
    a = render_img2vid(fast(tmp_path, model=None, frames=None, steps=4))
    assert any("toy zoo" in n for n in a.notes)
    assert a.stats.unet_passes == 4 and a.frames.shape == (8, 3, 32, 32)
    teacher = render_img2vid(fast(tmp_path, model="toy-svd", frames=None, steps=4))
    assert not any("toy zoo" in n for n in teacher.notes)
    assert frame_hash(a.frames) != frame_hash(teacher.frames)   # the student LoRA is really applied


@pytest.mark.parametrize("kw,key", [(dict(steps=0), "steps"), (dict(eta=1.0), "eta"), (dict(eta=-0.5), "eta"),
                                    (dict(out="x.avi"), "out"), (dict(guidance_min=1.0), "guidance_min"),
                                    (dict(fuse=True), "fuse"), (dict(fps=0), "fps"),
                                    (dict(teacher_refine=0.05), "teacher_refine"),
                                    (dict(teacher_refine=0.05, lora="x.safetensors", fuse=True), "teacher_refine"),
                                    (dict(guidance=2.0, guidance_min=1.0, guidance_max=2.0), "guidance")])
def test_bad_settings_are_named(tmp_path, kw, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        render_img2vid(fast(tmp_path, **kw))


def test_bad_images(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        render_img2vid(fast(tmp_path, image=str(tmp_path / "nope.png")))
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(ConfigError, match="cannot read"):
        render_img2vid(fast(tmp_path, image=str(junk)))


def test_odd_images_and_sizes_are_converted_with_notes(tmp_path):
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 4200, 4), dtype=np.uint8), "RGBA").save(rgba)
    r = render_img2vid(fast(tmp_path, image=str(rgba), steps=1, height=66, width=70))
    text = " | ".join(r.notes)
    assert "alpha" in text and "huge" in text and "not divisible" in text
    assert r.frames.shape[-2:] == (64, 68)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((48, 48), 128, np.uint8), "L").save(gray)
    r = render_img2vid(fast(tmp_path, image=str(gray), steps=1))
    assert any("converted to RGB" in n for n in r.notes)


def _save_lora_for(unet, path, seed=0):
    from tdd_video import lora
    lora.add_lora(unet, "student", rank=4, preset="attn")
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return lora.save_lora(unet, path)


def test_lora_refine_export_and_foreign_lora(tmp_path):
    from diffusers import StableVideoDiffusionPipeline

    from tdd_video.apps.api import default_model_dir, load_img2vid
    from tdd_video.families.tiny import tiny_svd_unet
    from tdd_video.sampling import TDDScheduler
    model = default_model_dir()
    unet = StableVideoDiffusionPipeline.from_pretrained(model).unet
    good = _save_lora_for(unet, tmp_path / "good.safetensors")
    # Distillation++ through the CLI: refine passes are extra batched teacher forwards
    r = render_img2vid(fast(tmp_path, lora=str(good), teacher_refine=0.1, refine_steps=1, eta=0.0))
    assert r.stats.refine_passes == 2 and r.stats.unet_passes == 2 + 2
    # a LoRA made for a different base is refused by name
    other = tiny_svd_unet(seed=0, num_frames=4)
    bad = _save_lora_for(other, tmp_path / "bad.safetensors")
    with pytest.raises(ConfigError, match="lora"):
        render_img2vid(fast(tmp_path, lora=str(bad)))
    # export: plain diffusers loads it; with our scheduler it renders what the LoRA pipeline renders
    out = tmp_path / "export"
    a = render_img2vid(fast(tmp_path, lora=str(good), export_pipeline=str(out), eta=0.0))
    plain = StableVideoDiffusionPipeline.from_pretrained(out)
    assert type(plain.scheduler).__name__ == "EulerDiscreteScheduler"
    assert not any("lora" in k for k in plain.unet.state_dict())
    plain.scheduler = TDDScheduler.from_pretrained(out, subfolder="scheduler")
    assert plain.scheduler.config.eta == 0.0
    lora_pipe = load_img2vid(model, lora=good, eta=0.0)
    kw = dict(height=64, width=64, num_frames=2, num_inference_steps=2, min_guidance_scale=1.0,
              max_guidance_scale=1.0, output_type="latent", latents=torch.randn(1, 2, 4, 16, 16, generator=g0()))
    img = Image.open(ROOT / "tdd_video/assets/sample_image.png").resize((64, 64))
    ref = lora_pipe(img, generator=g0(), **kw).frames
    got = plain(img, generator=g0(), **kw).frames
    assert torch.allclose(ref, got, atol=1e-4), float((ref - got).abs().max())
    assert a.exported == out


def g0():
    return torch.Generator().manual_seed(0)


def test_cli_help_and_error_exit(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    assert "--teacher-refine" in capsys.readouterr().out
    assert cli.main(["--steps", "0", "--out", str(tmp_path / "o.gif"), "--no-progress"]) == 2
    assert "steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["--clip-x0", "static"])     # static clipping needs a bound


def test_cli_end_to_end_subprocess(tmp_path):
    import os
    out = tmp_path / "cli.gif"
    env = {"TDD_VIDEO_CACHE": os.environ["TDD_VIDEO_CACHE"], "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, str(ROOT / "infer/img2vid.py"), "--steps", "1", "--frames", "2",
                          "--clip-x0", "dynamic:2.0", "--schedule", "tdd-nonuniform", "--out", str(out),
                          "--no-progress"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.exists() and "wrote" in res.stdout and "[denoise]" in res.stdout


def test_import_is_cheap_and_api_is_lazy():
    code = ("import sys, tdd_video; assert 'torch' not in sys.modules and 'diffusers' not in sys.modules; "
            "assert callable(tdd_video.load_img2vid) and callable(tdd_video.export_pipeline)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr[-1500:]


def test_unet_file_with_animatelcm_sampler(tmp_path, capsys):
    """--unet loads a full UNet state dict strictly (e.g. the released AnimateLCM-SVD-xt-1.1 file) and
    --sampler animatelcm renders it with docs/math.md §8's sampler: equal to an independent family loop."""
    from safetensors.torch import save_file
    from standin_family import animatelcm_reference

    from tdd_video.apps.api import default_model_dir
    from tdd_video.families import load_family
    from tdd_video.sampling import AnimateLCMScheduler
    model = str(default_model_dir())
    fam = load_family("svd", model)
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        for p in fam.unet.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    path = tmp_path / "animatelcm_unet.safetensors"
    save_file({k: v.contiguous() for k, v in fam.unet.state_dict().items()}, str(path))

    r = render_img2vid(fast(tmp_path, unet=str(path), sampler="animatelcm", steps=4, out=str(tmp_path / "a.gif"),
                            export_pipeline=str(tmp_path / "export")))
    assert r.stats.unet_passes == 4
    # independent: the same draws in the same order (noise aug, start noise, re-noising) through the family
    gen = torch.Generator().manual_seed(0)
    from tdd_video.data.image_io import fit_image, image_to_tensor, load_image
    photo, _ = load_image(None)
    image, _ = fit_image(photo, 64, 64)
    cond = fam.encode_conditioning({"first_frame": image_to_tensor(image), "embedding_image": image_to_tensor(photo)},
                                   generator=gen, train=False, noise_aug=0.02, fps_id=6, motion_bucket_id=127)
    noise = torch.randn(r.latents.shape, generator=gen)
    ref = animatelcm_reference(lambda x, u: fam.denoise(x, u, cond), noise, 4, gen, fam.schedule)
    assert torch.allclose(r.latents, ref, atol=1e-4), float((r.latents - ref).abs().max())
    base = render_img2vid(fast(tmp_path, sampler="animatelcm", steps=4, out=str(tmp_path / "b.gif")))
    assert not torch.allclose(base.latents, r.latents, atol=1e-3)        # the file's weights were really used
    assert AnimateLCMScheduler.from_pretrained(tmp_path / "export", subfolder="scheduler").config.num_grid == 40

    # a file for another UNet is refused with the offending keys; sampler-specific flags are checked
    save_file({"down_blocks.9.weight": torch.zeros(2)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ConfigError, match="'unet'.*missing key"):
        render_img2vid(fast(tmp_path, unet=str(tmp_path / "wrong.safetensors")))
    with pytest.raises(ConfigError, match="'clip'"):
        render_img2vid(fast(tmp_path, sampler="animatelcm", clip=ClipSettings(mode="static", value=2.0, steps=1)))
    with pytest.raises(ConfigError, match="'steps'"):
        render_img2vid(fast(tmp_path, sampler="animatelcm", steps=41))
    with pytest.raises(ConfigError, match="'sampler'"):
        render_img2vid(fast(tmp_path, sampler="lcm"))
    with pytest.raises(ConfigError, match="'unet'.*not found"):
        Img2VidSettings(unet=str(tmp_path / "missing.safetensors")).validate()   # before any model loads
    from tdd_video.apps.api import load_img2vid
    with pytest.raises(ConfigError, match="'sampler'"):               # the Python API refuses it too
        load_img2vid("tiny", sampler="lcm")
    with pytest.raises(ConfigError, match="'teacher_refine'"):
        render_img2vid(fast(tmp_path, unet=str(path), lora="x.safetensors", teacher_refine=0.05))
    assert cli.main(["--sampler", "animatelcm", "--eta", "0.2", "--no-progress", "--out", str(tmp_path / "c.gif")]) == 2
    assert "eta" in capsys.readouterr().err


def test_cli_render_equals_stock_pipeline_on_a_non_square_photo(tmp_path, monkeypatch):
    """The CLI render embeds the ORIGINAL photo with CLIP (as StableVideoDiffusionPipeline._encode_image does)
    and VAE-encodes the frame fitted to the output size: the same latents as the stock pipeline with our
    TDDScheduler, same seed and settings (one generator for noise augmentation, start noise and γ noise)."""
    import tdd_video.apps.img2vid as app
    from tdd_video.apps.api import default_model_dir, load_img2vid
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(photo)   # 128 wide, 64 high
    got = {}

    def spy(settings, log=print):
        got["result"] = render_img2vid(settings, log=log)
        return got["result"]

    monkeypatch.setattr(app, "render_img2vid", spy)
    assert cli.main(["--model", "tiny", "--image", str(photo), "--height", "32", "--width", "64", "--frames", "2",
                     "--steps", "2", "--eta", "0.3", "--seed", "5", "--out", str(tmp_path / "o.gif"),
                     "--no-progress"]) == 0
    ours = got["result"].latents
    pipe = load_img2vid(default_model_dir(), steps=2, eta=0.3)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(5)
    pipe.scheduler.set_generator(gen)
    ref = pipe(Image.open(photo), height=32, width=64, num_frames=2, num_inference_steps=2, min_guidance_scale=1.0,
               max_guidance_scale=1.0, fps=7, motion_bucket_id=127, noise_aug_strength=0.02, generator=gen,
               output_type="latent").frames
    assert ours.shape == ref.shape == (1, 2, 4, 8, 16)
    scale = float(ref.abs().max())
    assert torch.allclose(ours, ref.float(), atol=2e-4 * scale, rtol=1e-3), float((ours - ref).abs().max())


def test_euler_sampler_is_the_teacher_run(tmp_path):
    """--sampler euler renders the teacher's run (Karras Euler, frame-wise CFG, one batched 2B forward per step; the
    sampler itself equals the stock pipeline's Euler: tests/test_compare.py)."""
    r = render_img2vid(fast(tmp_path, sampler="euler", steps=3, guidance_min=1.0, guidance_max=3.0))
    assert r.stats.unet_passes == 6
    with pytest.raises(ConfigError, match="schedule"):
        render_img2vid(fast(tmp_path, sampler="euler", schedule="tdd-nonuniform"))


def test_default_size_without_sample_size_in_the_unet_config():
    """A UNet config built from diffusers' defaults has no sample_size: the render falls back to SVD's full size
    instead of crashing (it used to fail with int(None) even when --height/--width were given)."""
    from types import SimpleNamespace

    from PIL import Image

    from tdd_video.apps.img2vid import default_size
    fam = lambda size: SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(sample_size=size)),  # noqa: E731
                                       vae_scale_factor=8)
    land, port = Image.new("RGB", (64, 32)), Image.new("RGB", (32, 64))
    assert default_size(fam(None), land) == (576, 1024) and default_size(fam(None), port) == (1024, 576)
    assert default_size(fam(96), land) == (576, 1024) and default_size(fam(4), land) == (32, 32)
