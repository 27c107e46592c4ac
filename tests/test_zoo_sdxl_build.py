"""The toy-SDXL build (tools/zoo/build_sdxl.py) with trainable text encoders, on micro budgets: the differentiable
prompt encoding is the pipeline's, caption dropout is the pipeline's null conditioning, the trained (EMA) text
encoders are exported to a folder stock diffusers loads, and a killed build resumes from its checkpoint."""
import json
from pathlib import Path

import pytest
import torch

from tdd_video.errors import ConfigError
from tools.zoo import build_sdxl
from tools.zoo.build_sdxl import (
    ToySDXLConfig,
    build,
    build_unet,
    build_vae,
    encode_prompt_trainable,
    text_encoders,
    tokenize_prompts,
    train_unet,
    trainable_text_params,
)
from tools.zoo.stage import StageDir

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "toy" / "pretrain_sdxl.yaml"
MICRO = ["size=16", "num_images=16", "vae_channels=[16, 16]", "vae_steps=2", "vae_batch=4", "unet_channels=[16, 32]",
         "unet_steps=4", "unet_batch=4", "unet_warmup=0", "checkpoint_every=2", "eval_images=2", "eval_steps=2",
         "eval_guidances=[1.0, 2.0]", "text_train=true", "text_lr=1.0e-2"]


def micro_cfg(tmp: Path, *extra: str) -> ToySDXLConfig:
    """The shipped recipe with a micro budget, writing only under `tmp`."""
    from tdd_video.engine.config import load_dataclass_recipe
    return load_dataclass_recipe(ToySDXLConfig, RECIPE, [f"work_dir={tmp / 'work'}", f"output={tmp / 'out'}",
                                                         *MICRO, *extra])


def micro_family(cfg: ToySDXLConfig):
    from tdd_video.families.sdxl import SDXLFamily
    e1, e2, t1, t2 = text_encoders(cfg.seed)
    latent = cfg.size // 2 ** (len(cfg.vae_channels) - 1)
    return SDXLFamily(build_unet(cfg, latent), build_vae(cfg), e1, e2, t1, t2)


def state(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trainable_prompt_encoding_equals_family_and_pipeline():
    from tdd_video.data.synthetic_images import all_scenes
    cfg = ToySDXLConfig(size=16, vae_channels=[16, 16], unet_channels=[16, 32])
    fam = micro_family(cfg)
    caps = [sc.caption for sc in all_scenes()[:5]] + ["", "a photo of a cat"]
    ref_pe, ref_pooled = fam.encode_prompt(caps)                     # no_grad, the family's own
    encoders = (fam.text_encoder, fam.text_encoder_2)
    for enc in encoders:
        enc.requires_grad_(True)
    pe, pooled = encode_prompt_trainable(encoders, tokenize_prompts((fam.tokenizer, fam.tokenizer_2), caps))
    assert pe.requires_grad and pooled.requires_grad
    assert pe.shape == (7, 77, 64) and pooled.shape == (7, 32)
    assert torch.equal(pe, ref_pe) and torch.equal(pooled, ref_pooled)
    pipe_pe, _, pipe_pooled, _ = fam.pipeline().encode_prompt(caps, do_classifier_free_guidance=False)
    assert torch.equal(pipe_pe, pe) and torch.equal(pipe_pooled, pooled)   # ... and what diffusers computes
    (pe.square().mean() + pooled.square().mean()).backward()
    e1, e2 = encoders
    assert e1.embeddings.token_embedding.weight.grad.abs().sum() > 0
    assert dict(e2.named_parameters())["text_projection.weight"].grad.abs().sum() > 0
    assert e1.final_layer_norm.weight.grad is None           # penultimate states only: text_encoder's top is unused


def test_trainable_layer_selection():
    e1, e2, _, _ = text_encoders(0)
    assert trainable_text_params(e1, "all") == list(e1.named_parameters())
    last = [n for n, _ in trainable_text_params(e2, 1)]
    assert last and all("layers.2." in n or "final_layer_norm." in n or n.startswith("text_projection.") for n in last)
    assert "text_projection.weight" in last and not any("layers.1." in n or "embeddings" in n for n in last)
    assert {n for n, _ in trainable_text_params(e1, 3)} >= {n for n, _ in e1.named_parameters() if "layers.0." in n}
    with pytest.raises(ConfigError, match="text_train_layers"):
        trainable_text_params(e1, 4)
    for bad in ("text_train_layers=0", "text_train_layers=some", "eval_guidances=[]", "unet_channels=[24, 32]"):
        with pytest.raises(ConfigError):
            micro_cfg(Path("/nonexistent"), bad)


def test_train_step_conditioning_is_pipeline_or_null(tmp_path):
    """Every UNet call in training gets, per sample, either the prompt's pipeline embeddings (at step 0, before any
    update) or the null conditioning: zero prompt embeds AND zero pooled embeds."""
    from tdd_video.data.synthetic_images import all_scenes, make_images
    cfg = micro_cfg(tmp_path, "p_uncond=0.5", "unet_batch=8", "unet_steps=1")
    fam = micro_family(cfg)
    imgs, caps = make_images(cfg.num_images, cfg.size, cfg.seed)
    ref_pe, ref_pooled = fam.encode_prompt([sc.caption for sc in all_scenes()])
    seen = []
    fam.unet.register_forward_pre_hook(lambda m, a, kw: seen.append((kw["encoder_hidden_states"].detach(),
                                                                     kw["added_cond_kwargs"]["text_embeds"].detach())),
                                       with_kwargs=True)
    train_unet(cfg, fam, build_sdxl.to_pixels(imgs), caps, log=lambda *a: None)
    pe, pooled = seen[0]
    dropped = pe.flatten(1).abs().amax(1) == 0
    assert torch.equal(dropped, pooled.abs().amax(1) == 0)      # prompt and pooled are dropped together
    assert 0 < int(dropped.sum()) < len(dropped)
    for row, prow in zip(pe[~dropped], pooled[~dropped]):
        match = ((ref_pe - row).flatten(1).abs().amax(1) < 1e-5) & ((ref_pooled - prow).abs().amax(1) < 1e-5)
        assert match.sum() == 1


def test_partial_and_frozen_text_training(tmp_path):
    from tdd_video.data.synthetic_images import make_images
    imgs, caps = make_images(16, 16, 0)
    pix = build_sdxl.to_pixels(imgs)
    e1_0, e2_0, _, _ = text_encoders(0)
    # last layer only: embeddings and lower layers keep their random values, encoder 2's top layer moves
    cfg = micro_cfg(tmp_path / "k1", "text_train_layers=1", "unet_steps=2")
    _, te1, te2, info = train_unet(cfg, micro_family(cfg), pix, caps, log=lambda *a: None)
    p2, p2_0 = dict(te2.named_parameters()), dict(e2_0.named_parameters())
    assert not torch.equal(p2["text_projection.weight"], p2_0["text_projection.weight"])
    assert torch.equal(p2["text_model.embeddings.token_embedding.weight"],
                       p2_0["text_model.embeddings.token_embedding.weight"])
    assert same(state(te1), state(e1_0))          # text_encoder's last layer + final norm get no gradient
    assert info["text_params_with_grad"] < info["text_params_trained"]
    # frozen (text_train=false): the random encoders are returned unchanged
    cfg = micro_cfg(tmp_path / "frozen", "text_train=false", "unet_steps=2")
    _, te1, te2, info = train_unet(cfg, micro_family(cfg), pix, caps, log=lambda *a: None)
    assert not info["text_trained"] and same(state(te1), state(e1_0)) and same(state(te2), state(e2_0))
    assert "text_encoder" not in torch.load(tmp_path / "frozen" / "work" / "unet" / "ckpt.pt", weights_only=True)


def test_micro_build_exports_trained_text_encoders(tmp_path):
    from diffusers import StableDiffusionXLPipeline
    cfg = micro_cfg(tmp_path)
    out = build(cfg, log=lambda *a: None, command="test")
    pipe = StableDiffusionXLPipeline.from_pretrained(str(out))       # stock diffusers, offline
    e1_0, e2_0, _, _ = text_encoders(cfg.seed)
    ck = torch.load(tmp_path / "work" / "unet" / "ckpt.pt", weights_only=True)
    assert {"model", "ema", "opt", "text_encoder", "text_encoder_2", "text_ema", "text_opt"} <= set(ck)
    assert ck["text_opt"]["state"], "the text encoders' AdamW state is checkpointed"
    shadow = ck["text_ema"]["shadow"]
    for tag, loaded, random in (("text_encoder", pipe.text_encoder, e1_0),
                                ("text_encoder_2", pipe.text_encoder_2, e2_0)):
        got = dict(loaded.named_parameters())
        assert not torch.equal(loaded.get_input_embeddings().weight, random.get_input_embeddings().weight)
        assert not same(state(loaded), state(random))
        for name, prm in got.items():                                   # exported = the EMA weights
            assert torch.equal(prm.detach(), shadow[f"{tag}.{name}"]), name
    summary = json.loads((tmp_path / "work" / "summary.json").read_text())
    assert list(summary["adherence"]) == ["guidance_1", "guidance_2"]
    assert summary["unet"]["text_trained"] and min(summary["unet"]["text_rel_change"]) > 0
    assert pipe.vae.config.scaling_factor == summary["vae"]["scaling_factor_exact"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "TRAINED jointly" in card and "FROZEN" not in card and "| w = 1 |" in card and "| w = 2 |" in card


def test_killed_build_resumes_from_checkpoint(tmp_path, monkeypatch):
    """Kill the UNet stage right after its step-2 checkpoint; the re-run continues at step 2 (it draws only steps
    2 and 3) and ends bit-identical to an uninterrupted build. A re-run with other settings is refused."""
    from diffusers import StableDiffusionXLPipeline
    ref = build(micro_cfg(tmp_path / "ref"), log=lambda *a: None)

    class Killed(Exception):
        pass

    save = StageDir.save_checkpoint

    def save_then_die(self, step, **st):
        save(self, step, **st)
        if self.name == "unet" and step == 2:
            raise Killed
    monkeypatch.setattr(StageDir, "save_checkpoint", save_then_die)
    cfg = micro_cfg(tmp_path / "run")
    with pytest.raises(Killed):
        build(cfg, log=lambda *a: None)
    unet_dir = tmp_path / "run" / "work" / "unet"
    assert not (unet_dir / "done.json").exists()
    assert torch.load(unet_dir / "ckpt.pt", weights_only=True)["step"] == 2
    monkeypatch.setattr(StageDir, "save_checkpoint", save)

    drawn, gen = [], build_sdxl.step_generator
    monkeypatch.setattr(build_sdxl, "step_generator", lambda seed, step, stream=0: (drawn.append((step, stream)),
                                                                                    gen(seed, step, stream))[1])
    out = build(cfg, log=lambda *a: None)
    assert [s for s, stream in drawn if stream == 2] == [2, 3]      # UNet steps 0-1 not redone
    assert not [s for s, stream in drawn if stream == 1]           # the finished VAE stage is not retrained
    assert json.loads((unet_dir / "done.json").read_text())["resumed_from_step"] == 2
    a, b = StableDiffusionXLPipeline.from_pretrained(str(ref)), StableDiffusionXLPipeline.from_pretrained(str(out))
    for name in ("unet", "text_encoder", "text_encoder_2", "vae"):
        assert same(state(getattr(a, name)), state(getattr(b, name))), name
    assert a.vae.config.scaling_factor == b.vae.config.scaling_factor

    with pytest.raises(ConfigError, match="unet_steps"):               # stale stage + other settings: refused
        build(micro_cfg(tmp_path / "run", "unet_steps=6"), log=lambda *a: None)
    assert build_sdxl.main(["--config", str(RECIPE), f"work_dir={tmp_path / 'run' / 'work'}",
                            f"output={tmp_path / 'run' / 'out'}", *MICRO, "text_lr=1.0e-3"]) == 2
