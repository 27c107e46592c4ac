"""infer/compare.py on tiny models: every contender kind, shared noise, every table column filled (issue 6)."""
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tdd_video.errors import ConfigError
from tdd_video.eval.contenders import parse_contender
from tdd_video.eval.report import COLUMNS, grid_video

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from tdd_video import lora
    from tdd_video.families.tiny import tiny_svd_unet
    d = tmp_path_factory.mktemp("compare_inputs")
    unet = tiny_svd_unet(seed=0)
    lora.add_lora(unet, "student", rank=4, alpha=4, preset="attn")
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if ".student." in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
    lora_path = lora.save_lora(unet, d / "tdd.safetensors", adapter="student")
    alcm = d / "animatelcm_unet.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_svd_unet(seed=3).state_dict().items()}, str(alcm))

    class FakeI3D(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                    return_features: bool = False) -> torch.Tensor:
            return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)

    i3d = d / "i3d.pt"
    torch.jit.script(FakeI3D()).save(str(i3d))
    return {"lora": str(lora_path), "alcm": str(alcm), "i3d": str(i3d), "dir": d}


def test_parse_contenders():
    assert parse_contender("tdd@4+refine") == parse_contender(" tdd@4+refine ")
    c = parse_contender("animatelcm@8")
    assert (c.method, c.steps, c.refine) == ("animatelcm", 8, False)
    for bad in ("tdd", "tdd@0", "lcm@4", "teacher@25+refine", "animatelcm@41"):
        with pytest.raises(ConfigError, match="contender"):
            parse_contender(bad)


def test_grid_video_layout():
    a, b = torch.zeros(2, 3, 4, 5), torch.ones(2, 3, 4, 5) * -1
    g = grid_video([[a, b]], pad=1)
    assert g.shape == (2, 3, 6, 13)
    assert torch.equal(g[:, :, 1:5, 1:6], a) and torch.equal(g[:, :, 1:5, 7:12], b)


def test_compare_cli_every_column_filled(files, tmp_path, capsys):
    from tdd_video.cli import compare as cli
    out = tmp_path / "out"
    argv = ["teacher@3", "tdd@2", "tdd@2+refine", "animatelcm@2", "animatelcm@1", "--model", "tiny",
            "--tdd-lora", files["lora"], "--animatelcm-unet", files["alcm"], "--i3d", files["i3d"],
            "--seeds", "0", "--frames", "3", "--out", str(out), "--format", "gif", "--quiet",
            "--num-images", "1"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| teacher@3 (reference) |" in printed and "∞" in printed
    data = json.loads((out / "metrics.json").read_text())
    rows = {r["contender"]: r for r in data["table"]}
    assert list(rows) == ["teacher@3", "tdd@2", "tdd@2+refine", "animatelcm@2", "animatelcm@1"]
    for name, r in rows.items():
        for key, _, _ in COLUMNS:
            assert r[key] is not None, (name, key)
            assert r[key] == "inf" or math.isfinite(r[key]), (name, key, r[key])
    ref = rows["teacher@3"]
    assert ref["latent_mse"] == 0 and ref["psnr_db"] == "inf" and ref["ssim"] == pytest.approx(1.0)
    assert ref["temporal_ratio"] == 1.0 and ref["sharpness_ratio"] == 1.0 and ref["fvd"] == pytest.approx(0, abs=1e-9)
    # passes by the forward hook: teacher CFG (1→3) = 2/step; students g = 1 → 1/step; refine adds one CFG call
    assert ref["unet_passes"] == 6 and rows["tdd@2"]["unet_passes"] == 2
    assert rows["tdd@2+refine"]["unet_passes"] == 4 and rows["animatelcm@1"]["unet_passes"] == 1
    for name in ("tdd@2", "animatelcm@2"):
        assert rows[name]["latent_mse"] > 0 and rows[name]["psnr_db"] != "inf" and rows[name]["wall_s"] > 0
    assert len(data["per_sample"]) == 5
    for f in ("grid.gif", "strip.png", "metrics.md"):
        assert (out / f).is_file()
    md = (out / "metrics.md").read_text()
    assert md.count("\n| ") >= 6 and "FVD" in md
    from tdd_video.data.video_io import read_video_frames
    grid = read_video_frames(out / "grid.gif")
    assert grid.shape[0] == 3 and grid.shape[1] == 64 + 2 * 2 and grid.shape[2] == 5 * 64 + 6 * 2


def test_shared_noise_and_determinism(files, tmp_path):
    """Same seed → identical results; a contender whose weights equal the base's reproduces the base."""
    from tdd_video.eval.compare import CompareConfig, run_compare
    from tdd_video.families import load_family
    from tdd_video.families.tiny import tiny_svd_unet
    same = tmp_path / "base_as_animatelcm.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_svd_unet(seed=0).state_dict().items()}, str(same))
    fam = load_family("svd", "tiny")
    cfg = CompareConfig(contenders=["teacher@2", "animatelcm@1"], animatelcm_unet=str(same), seeds=[5],
                        frames=2, num_default_images=1, out=str(tmp_path / "a"), progress=False,
                        teacher_guidance=(1.0, 1.0))
    r1 = run_compare(cfg, family=fam)
    r2 = run_compare(CompareConfig(**{**vars(cfg), "out": str(tmp_path / "b")}), family=fam)
    assert [r["latent_mse"] for r in r1.per_sample] == [r["latent_mse"] for r in r2.per_sample]
    # animatelcm@1 with the base weights = one plain denoise of σ_max·ε; teacher@2's first step denoises
    # √(σ_max²+1)·ε at σ_max: both start from the same ε, so their x0 agree closely (not exactly)
    alcm = [r for r in r1.per_sample if r["contender"] == "animatelcm@1"][0]
    assert alcm["latent_mse"] < 1e-1


def test_lora_contender_twice_on_one_family(files, tmp_path):
    from tdd_video.eval.compare import CompareConfig, run_compare
    from tdd_video.families import load_family
    fam = load_family("svd", "tiny")
    kw = dict(contenders=["teacher@1", "tdd@1"], tdd_lora=files["lora"], seeds=[0], frames=2,
              num_default_images=1, progress=False, teacher_guidance=(1.0, 1.0))
    a = run_compare(CompareConfig(out=str(tmp_path / "a"), **kw), family=fam)
    b = run_compare(CompareConfig(out=str(tmp_path / "b"), **kw), family=fam)
    assert [r["latent_mse"] for r in a.per_sample] == [r["latent_mse"] for r in b.per_sample]
    assert a.per_sample[1]["latent_mse"] > 0          # the LoRA changes the output


def test_missing_weights_and_wrong_checkpoint_are_clear(files, tmp_path):
    from tdd_video.eval.compare import CompareConfig, run_compare
    from tdd_video.families import load_family
    from tdd_video.unet_checkpoint import CheckpointError
    fam = load_family("svd", "tiny")
    base = dict(seeds=[0], frames=2, num_default_images=1, out=str(tmp_path), progress=False)
    with pytest.raises(ConfigError, match="--tdd-lora"):
        run_compare(CompareConfig(contenders=["tdd@4"], **base), family=fam)
    with pytest.raises(ConfigError, match="--animatelcm-unet"):
        run_compare(CompareConfig(contenders=["animatelcm@4"], **base), family=fam)
    with pytest.raises(CheckpointError, match="not a full state dict"):
        run_compare(CompareConfig(contenders=["animatelcm@4"], animatelcm_unet=files["lora"], **base), family=fam)


def test_teacher_sampler_equals_svd_pipeline_euler():
    """The teacher contender's sampler (KarrasEulerSampler in the sampling loop) == StableVideoDiffusionPipeline
    with its own Euler scheduler."""
    from tdd_video.data.image_io import fit_image, image_to_tensor, load_image
    from tdd_video.families import load_family
    from tdd_video.sampling import KarrasEulerSampler, sample
    fam = load_family("svd", "tiny")
    image, _ = fit_image(load_image(None)[0], 64, 64)
    noise = torch.randn(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    pipe = fam.pipeline()
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(image, height=64, width=64, num_frames=3, num_inference_steps=5, min_guidance_scale=1.0,
               max_guidance_scale=3.0, fps=7, motion_bucket_id=127, noise_aug_strength=0.02, latents=noise,
               output_type="latent", generator=torch.Generator().manual_seed(0)).frames
    cond = fam.encode_conditioning({"first_frame": image_to_tensor(image)}, generator=torch.Generator().manual_seed(0),
                                   train=False, noise_aug=0.02, fps_id=6, motion_bucket_id=127)
    ours = sample(fam, cond, fam.null_conditioning(cond), steps=5, guidance=(1.0, 3.0), latents=noise, progress=False,
                  scheduler=KarrasEulerSampler(fam.schedule))
    scale = float(ref.abs().max())
    assert torch.allclose(ours, ref.float(), atol=2e-4 * scale, rtol=1e-3), float((ours - ref).abs().max())
