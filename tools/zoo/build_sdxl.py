"""Build the toy SDXL teacher "toy-sdxl": tiny AutoencoderKL + tiny text_time UNet2DConditionModel + the tiny CLIP
text-encoder pair (tdd_video.families.tiny, offline tokenizer) trained on synthetic captioned images
(tdd_video.data.synthetic_images), exported as a StableDiffusionXLPipeline folder.

    python -m tools.zoo.build_sdxl --config configs/toy/pretrain_sdxl.yaml      (resumable)

Stages (each resumable from work_dir/<stage>/ckpt.pt, skipped when done.json exists; work_dir/<stage>/settings.json
records the config keys the stage depends on, and a re-run with other values is refused instead of silently
reusing or mixing stale weights):
1. ``vae``: pixel MSE + kl_weight·KL on posterior samples; then scaling_factor = 1/std(latents) is stored
   (and restored when the finished stage is reloaded).
2. ``unet``: SDXL's own objective through SDXLFamily: t ~ U{0..999}, x_t = √ᾱ x0 + √(1−ᾱ) ε, MSE on ε;
   caption dropout p_uncond → the SAME null conditioning as inference (zero prompt and pooled embeds,
   docs/math.md §1b); add_time_ids = (S, S, 0, 0, S, S). Latents are encoded once (posterior mean, std).
   With ``text_train`` the two text encoders (all layers, or the last ``text_train_layers`` layers + final norm +
   projection) train jointly with the UNet (own AdamW at ``text_lr``): the prompt embeddings are recomputed
   every step with gradients by `encode_prompt_trainable`, which computes exactly what
   SDXLFamily.encode_prompt / the diffusers pipeline compute. Without it the embeddings are computed once per
   unique caption (frozen random encoders). fp32 EMAs of the UNet and of the trained text encoders are exported.
3. export + evaluation: teacher ``eval_steps``-step Euler (stock diffusers pipeline) on every guidance scale of
   ``eval_guidances``, prompt adherence (synthetic_images.mean_adherence), written to MODEL_CARD.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tdd_video.engine.config import load_dataclass_recipe
from tdd_video.engine.ema import EMA
from tdd_video.engine.lr import lr_multiplier
from tdd_video.errors import ConfigError, check_range
from tools.zoo.stage import StageDir, step_generator


@dataclass
class ToySDXLConfig:
    name: str = "toy-sdxl"
    output: str = "tdd_video/zoo/toy-sdxl"
    work_dir: str = "runs/pretrain_toy_sdxl"
    seed: int = 0
    threads: int = 1
    size: int = 32                       # pixels
    num_images: int = 4096
    vae_channels: list = field(default_factory=lambda: [32, 32])
    vae_steps: int = 500
    vae_batch: int = 16
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6
    unet_channels: list = field(default_factory=lambda: [32, 64, 64])
    unet_layers_per_block: int = 1
    unet_transformer_layers: int = 1     # transformer blocks per cross-attention block
    unet_steps: int = 3000
    unet_batch: int = 32
    unet_lr: float = 1e-3
    unet_warmup: int = 30
    text_train: bool = True              # train both text encoders jointly with the UNet (else frozen random)
    text_lr: float = 5e-4                # their AdamW lr (same warm-up + cosine as the UNet)
    text_train_layers: str | int = "all"  # "all", or k: the last k layers + final norm + projection
    p_uncond: float = 0.1
    ema_decay: float = 0.995
    checkpoint_every: int = 100
    eval_guidances: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.5, 7.5])
    eval_steps: int = 25
    eval_images: int = 96

    def validate(self, p: str = "") -> "ToySDXLConfig":
        check_range("size", self.size, 16, 1024)
        check_range("num_images", self.num_images, 16, 10**7)
        check_range("p_uncond", self.p_uncond, 0.0, 1.0, hi_open=True)
        check_range("ema_decay", self.ema_decay, 0.0, 1.0, hi_open=True)
        for key in ("vae_steps", "vae_batch", "unet_steps", "unet_batch", "unet_layers_per_block",
                    "unet_transformer_layers", "checkpoint_every", "eval_steps", "eval_images", "threads"):
            check_range(key, getattr(self, key), 1, None)
        check_range("unet_warmup", self.unet_warmup, 0, None)
        for key in ("vae_lr", "unet_lr", "text_lr"):
            check_range(key, getattr(self, key), 0.0, None, lo_open=True)
        if not self.unet_channels or any(int(c) % 16 for c in self.unet_channels):
            raise ConfigError("unet_channels", f"got {self.unet_channels!r}; non-empty, multiples of 16 (GroupNorm)")
        if self.size % 2 ** (len(self.unet_channels) - 1 + len(self.vae_channels) - 1):
            raise ConfigError("size", f"{self.size} px is not divisible by the VAE × UNet downsampling")
        if not (self.text_train_layers == "all" or (isinstance(self.text_train_layers, int)
                                                    and not isinstance(self.text_train_layers, bool)
                                                    and self.text_train_layers >= 1)):
            raise ConfigError("text_train_layers", f"got {self.text_train_layers!r}; 'all' or an integer >= 1")
        if not self.eval_guidances:
            raise ConfigError("eval_guidances", "give at least one guidance scale, e.g. [1.0, 4.5]")
        for n, g in enumerate(self.eval_guidances):
            check_range(f"eval_guidances[{n}]", g, 0.0, None, lo_open=True)
        return self


# The config keys each stage's weights depend on (settings.json); a finished/partial stage with other values is
# refused rather than reused. work_dir, output, threads, checkpoint_every and eval_* do not change the weights.
VAE_KEYS = ("seed", "size", "num_images", "vae_channels", "vae_steps", "vae_batch", "vae_lr", "kl_weight")
UNET_KEYS = VAE_KEYS + ("unet_channels", "unet_layers_per_block", "unet_transformer_layers", "unet_steps",
                        "unet_batch", "unet_lr", "unet_warmup", "text_train", "text_lr", "text_train_layers",
                        "p_uncond", "ema_decay")


def check_stage_settings(stage: StageDir, cfg: ToySDXLConfig, keys: tuple[str, ...]) -> None:
    """Record the stage's settings, or refuse to continue a stage that was started with other settings."""
    want = {k: getattr(cfg, k) for k in keys}
    path = stage.dir / "settings.json"
    if not ((stage.dir / "ckpt.pt").is_file() or stage.is_done()):     # nothing trained yet: (re)record
        path.write_text(json.dumps(want, indent=1))
        return
    if not path.is_file():
        raise ConfigError("work_dir", f"{stage.dir} holds a stage from a build without settings.json (older "
                                      "version); use another work_dir= or delete it to retrain")
    have = json.loads(path.read_text())
    diff = sorted(k for k in set(want) | set(have) if have.get(k) != want.get(k))
    if diff:
        raise ConfigError(diff[0], f"{stage.dir} was trained with {diff[0]}={have.get(diff[0])!r}, the config "
                                   f"says {want.get(diff[0])!r} (differing: {diff}); use another work_dir= "
                                   f"or delete {stage.dir} to retrain")


def text_encoders(seed: int):
    """The tiny random CLIP text encoders + offline tokenizers (the same builders as tests use)."""
    from tdd_video.families.tiny import tiny_text_encoders, tiny_tokenizer
    e1, e2 = tiny_text_encoders(seed)
    return e1, e2, tiny_tokenizer(), tiny_tokenizer()


def tokenize_prompts(tokenizers, prompts: list[str]) -> list[torch.Tensor]:
    """Token ids [B, L] per tokenizer, padded/truncated exactly like SDXLFamily.encode_prompt (and the pipeline)."""
    return [tok(list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True,
                return_tensors="pt").input_ids for tok in tokenizers]


def encode_prompt_trainable(encoders, ids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds [B, L, D1+D2], pooled [B, P]) WITH gradients: the penultimate hidden states of both encoders
    concatenated, and the pooled (projected) output of the first encoder returning a 2-D output (encoder 2) —
    the same computation as SDXLFamily.encode_prompt / StableDiffusionXLPipeline.encode_prompt.
    `ids` from tokenize_prompts."""
    hidden, pooled = [], None
    for enc, tok_ids in zip(encoders, ids):
        out = enc(tok_ids.to(enc.device), output_hidden_states=True)
        if pooled is None and out[0].ndim == 2:
            pooled = out[0]
        hidden.append(out.hidden_states[-2])
    return torch.cat(hidden, dim=-1).float(), pooled.float()


def trainable_text_params(encoder, layers: str | int) -> list[tuple[str, torch.nn.Parameter]]:
    """The (name, parameter) pairs of a CLIP text encoder that train: all, or the last k encoder layers + the final
    layer norm + the projection (if any). Note the SDXL conditioning reads the PENULTIMATE hidden states, so the
    last layer and final norm of text_encoder (1) never receive a gradient; of text_encoder_2 they feed the pooled
    embedding only."""
    named = list(encoder.named_parameters())
    if layers == "all":
        return named
    n_layers = int(encoder.config.num_hidden_layers)
    if int(layers) > n_layers:
        raise ConfigError("text_train_layers", f"got {layers}; the text encoders have {n_layers} layers")
    first = n_layers - int(layers)        # names: [text_model.]encoder.layers.<i>. ... (the prefix varies by version)

    def keep(name: str) -> bool:
        m = re.search(r"(?:^|\.)encoder\.layers\.(\d+)\.", name)
        return (m is not None and int(m.group(1)) >= first) or "final_layer_norm." in name \
            or name.startswith("text_projection.")
    return [(n, p) for n, p in named if keep(n)]


def build_vae(cfg: ToySDXLConfig):
    from diffusers import AutoencoderKL
    ch = tuple(int(c) for c in cfg.vae_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(ch),
                            up_block_types=("UpDecoderBlock2D",) * len(ch), block_out_channels=ch, layers_per_block=1,
                            latent_channels=4, norm_num_groups=16, sample_size=cfg.size, force_upcast=False)
    with torch.no_grad():                # start with a small posterior variance (log σ² = −8)
        vae.quant_conv.weight[4:].zero_()
        vae.quant_conv.bias[4:].fill_(-8.0)
    return vae


def build_unet(cfg: ToySDXLConfig, latent: int, cross_attention_dim: int = 64, pooled_dim: int = 32):
    """cross_attention_dim = D1 + D2 and pooled_dim = P are fixed by the text encoders (64 and 32 for the tiny pair)."""
    from diffusers import UNet2DConditionModel
    ch = tuple(int(c) for c in cfg.unet_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return UNet2DConditionModel(
            sample_size=latent, in_channels=4, out_channels=4, layers_per_block=cfg.unet_layers_per_block,
            block_out_channels=ch, down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(ch) - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (len(ch) - 1) + ("UpBlock2D",),
            attention_head_dim=tuple(max(1, c // 16) for c in ch), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8,
            transformer_layers_per_block=cfg.unet_transformer_layers,
            projection_class_embeddings_input_dim=6 * 8 + pooled_dim, cross_attention_dim=cross_attention_dim,
            norm_num_groups=16)


def to_pixels(imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(cfg: ToySDXLConfig, pix: torch.Tensor, log=print):
    stage, vae = StageDir(cfg.work_dir, "vae"), build_vae(cfg)
    check_stage_settings(stage, cfg, VAE_KEYS)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = stage.load_checkpoint(model=vae, opt=opt)
    if stage.is_done():
        info = stage.done_info()
        vae.register_to_config(scaling_factor=info["scaling_factor_exact"])   # the config is not in ckpt.pt
        vae.eval()
        return vae, info
    vae.train()
    for step in range(start, cfg.vae_steps):
        g = step_generator(cfg.seed, step, 1)
        idx = torch.randint(0, pix.shape[0], (cfg.vae_batch,), generator=g)
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * lr_multiplier(20, "cosine", cfg.vae_steps, 0.05)(step)
        post = vae.encode(pix[idx]).latent_dist
        rec = vae.decode(post.sample(g)).sample
        loss = torch.nn.functional.mse_loss(rec, pix[idx]) + cfg.kl_weight * post.kl().mean() / post.mean[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0:
            stage.log(step=step + 1, loss=float(loss.detach()))
            log(f"vae step {step + 1}/{cfg.vae_steps} loss {float(loss.detach()):.5f}")
        if (step + 1) % cfg.checkpoint_every == 0:
            stage.save_checkpoint(step + 1, model=vae, opt=opt)
    vae.eval()
    with torch.no_grad():   # held out: 256 fresh images from another seed (never trained on)
        from tdd_video.data.synthetic_images import make_images
        hold = to_pixels(make_images(256, cfg.size, cfg.seed + 999)[0])
        rec = vae.decode(vae.encode(hold).latent_dist.mode()).sample.clamp(-1, 1)
        psnr = float(10 * torch.log10(4.0 / (rec - hold).pow(2).mean()))
        std = float(torch.cat([vae.encode(pix[i:i + 256]).latent_dist.mode()
                               for i in range(0, min(1024, pix.shape[0]), 256)]).std())
    vae.register_to_config(scaling_factor=1.0 / std)
    info = {"heldout_psnr_db": round(psnr, 2), "latent_std": round(std, 4), "scaling_factor": round(1.0 / std, 5),
            "scaling_factor_exact": 1.0 / std, "params": sum(p.numel() for p in vae.parameters()),
            "steps": cfg.vae_steps}
    stage.save_checkpoint(cfg.vae_steps, model=vae, opt=opt)
    stage.mark_done(info)
    return vae, info


@torch.no_grad()
def _ema_copy(module, shadow: dict[str, torch.Tensor], prefix: str):
    """A frozen copy of `module` holding the EMA weights shadow[prefix + name] (untracked parameters, i.e. the
    frozen ones, keep their values)."""
    out = copy.deepcopy(module).requires_grad_(False).eval()
    for n, prm in out.named_parameters():
        if prefix + n in shadow:
            prm.copy_(shadow[prefix + n].to(prm.dtype))
    return out


def _params_reaching_loss(encoders, named: list[tuple[str, torch.nn.Parameter]], ids: list[torch.Tensor]) -> int:
    """How many of the trainable text parameters get a gradient from the conditioning (one probe backward)."""
    pe, pooled = encode_prompt_trainable(encoders, [i[:1] for i in ids])
    grads = torch.autograd.grad(pe.sum() + pooled.sum(), [p for _, p in named], allow_unused=True)
    return sum(p.numel() for (_, p), gr in zip(named, grads) if gr is not None)


def _rel_change(new, ref) -> float:
    """‖θ − θ₀‖ / ‖θ₀‖ over all parameters of two modules with the same layout."""
    num = sum(float((a.detach() - b.detach()).pow(2).sum()) for a, b in zip(new.parameters(), ref.parameters()))
    den = sum(float(b.detach().pow(2).sum()) for b in ref.parameters())
    return (num / den) ** 0.5


def train_unet(cfg: ToySDXLConfig, family, pix: torch.Tensor, captions: list[str], log=print):
    """ε-prediction training of family.unet (and, with text_train, of family.text_encoder / text_encoder_2), in place.
    Returns (ema unet, ema text_encoder, ema text_encoder_2, info); without text_train the text encoders returned
    are family's own (frozen) ones."""
    stage = StageDir(cfg.work_dir, "unet")
    check_stage_settings(stage, cfg, UNET_KEYS)
    unet, encoders = family.unet, (family.text_encoder, family.text_encoder_2)
    initial_encoders = [copy.deepcopy(e) for e in encoders]
    ema_unet = copy.deepcopy(unet).requires_grad_(False)    # the EMA weights as a module (export)
    ema = EMA(unet.named_parameters(), cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.0)
    ckpt = {"model": unet, "ema": ema, "opt": opt}
    text_named: list[tuple[str, torch.nn.Parameter]] = []
    if cfg.text_train:
        for tag, enc in (("text_encoder", encoders[0]), ("text_encoder_2", encoders[1])):
            chosen = trainable_text_params(enc, cfg.text_train_layers)
            for _, prm in chosen:
                prm.requires_grad_(True)
            text_named += [(f"{tag}.{n}", prm) for n, prm in chosen]
        text_ema = EMA(text_named, cfg.ema_decay)
        text_opt = torch.optim.AdamW([prm for _, prm in text_named], lr=cfg.text_lr, weight_decay=0.0)
        ckpt.update(text_encoder=encoders[0], text_encoder_2=encoders[1], text_ema=text_ema, text_opt=text_opt)
    lr_at = lr_multiplier(cfg.unet_warmup, "cosine", cfg.unet_steps, 0.05)
    start = stage.load_checkpoint(**ckpt)

    def exported():
        ema.copy_to(ema_unet.named_parameters())
        if not cfg.text_train:
            return ema_unet, encoders[0], encoders[1]
        return (ema_unet, _ema_copy(encoders[0], text_ema.shadow, "text_encoder."),
                _ema_copy(encoders[1], text_ema.shadow, "text_encoder_2."))

    if stage.is_done():
        return (*exported(), stage.done_info())
    tokenizers = (family.tokenizer, family.tokenizer_2)
    with torch.no_grad():   # encode once: posterior mean/std of every image; token ids (and frozen embeds) per caption
        posts = [family.vae.encode(pix[i:i + 256]).latent_dist for i in range(0, pix.shape[0], 256)]
        mean = torch.cat([p.mean for p in posts]) * family.scaling_factor
        std = torch.cat([p.std for p in posts]) * family.scaling_factor
        uniq = sorted(set(captions))
        cap_idx = torch.tensor([uniq.index(c) for c in captions])
        tok_ids = tokenize_prompts(tokenizers, uniq)
        if not cfg.text_train:
            pe_all, pooled_all = encode_prompt_trainable(encoders, tok_ids)
    s = cfg.size
    ids = torch.tensor([[s, s, 0, 0, s, s]], dtype=torch.float32).expand(cfg.unet_batch, 6)
    sched, losses, t0 = family.schedule, [], time.time()
    unet.train()
    for step in range(start, cfg.unet_steps):
        g = step_generator(cfg.seed, step, 2)
        idx = torch.randint(0, pix.shape[0], (cfg.unet_batch,), generator=g)
        x0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)
        t = torch.randint(0, 1000, (cfg.unet_batch,), generator=g)
        a, sg = (v.float().view(-1, 1, 1, 1) for v in sched.alpha_sigma((t + 1).double() / 1000.0))
        eps = torch.randn(x0.shape, generator=g)
        drop = (torch.rand(cfg.unet_batch, generator=g) < cfg.p_uncond).view(-1, 1)
        if cfg.text_train:      # with gradients, once per caption present in the batch
            present, where = torch.unique(cap_idx[idx], return_inverse=True)
            pe_u, pooled_u = encode_prompt_trainable(encoders, [i[present] for i in tok_ids])
            pe, pooled = pe_u[where], pooled_u[where]
        else:
            pe, pooled = pe_all[cap_idx[idx]], pooled_all[cap_idx[idx]]
        emb = torch.where(drop.view(-1, 1, 1), 0.0, pe)     # caption dropout → the pipeline's null conditioning
        txt = torch.where(drop, 0.0, pooled)
        for group in opt.param_groups:
            group["lr"] = cfg.unet_lr * lr_at(step)
        out = unet(a * x0 + sg * eps, t, encoder_hidden_states=emb,
                   added_cond_kwargs={"text_embeds": txt, "time_ids": ids}).sample
        loss = torch.nn.functional.mse_loss(out, eps)
        opt.zero_grad()
        if cfg.text_train:
            text_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet.named_parameters(), cfg.ema_decay if step > 100 else 0.0)
        if cfg.text_train:
            torch.nn.utils.clip_grad_norm_([prm for _, prm in text_named], 1.0)
            for group in text_opt.param_groups:
                group["lr"] = cfg.text_lr * lr_at(step)
            text_opt.step()
            text_ema.update(text_named, cfg.ema_decay if step > 100 else 0.0)
        losses.append(float(loss.detach()))
        if (step + 1) % 25 == 0:
            sm = float(np.mean(losses[-25:]))
            stage.log(step=step + 1, loss_smooth=round(sm, 5))
            log(f"unet step {step + 1}/{cfg.unet_steps} loss {sm:.4f} ({time.time() - t0:.0f} s)")
        if (step + 1) % cfg.checkpoint_every == 0:
            stage.save_checkpoint(step + 1, **ckpt)
    unet.eval()
    info = {"steps": cfg.unet_steps, "final_loss_smooth": round(float(np.mean(losses[-50:])), 5) if losses else None,
            "params": sum(p.numel() for p in unet.parameters()), "resumed_from_step": start,
            "text_trained": bool(cfg.text_train), "text_params_trained": sum(p.numel() for _, p in text_named)}
    if cfg.text_train:
        info["text_params_with_grad"] = _params_reaching_loss(encoders, text_named, tok_ids)
    stage.save_checkpoint(cfg.unet_steps, **ckpt)
    result = exported()
    if cfg.text_train:      # how far the exported (EMA) text encoders moved from their random initialisation
        info["text_rel_change"] = [round(_rel_change(e, e0), 4) for e, e0 in zip(result[1:], initial_encoders)]
    stage.mark_done(info)
    return (*result, info)


@torch.no_grad()
def evaluate_teacher(folder: Path, cfg: ToySDXLConfig) -> dict:
    """`eval_steps`-step Euler renders of the exported pipeline (stock diffusers) of the first `eval_images` captions,
    at every guidance scale of `eval_guidances` (same seed, so only w changes) → adherence per scale."""
    from diffusers import StableDiffusionXLPipeline

    from tdd_video.data.synthetic_images import all_scenes, mean_adherence
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    scenes = all_scenes()
    caps = [scenes[i % len(scenes)].caption for i in range(cfg.eval_images)]
    out = {}
    for g in cfg.eval_guidances:
        imgs = pipe(caps, height=cfg.size, width=cfg.size, num_inference_steps=cfg.eval_steps, guidance_scale=g,
                    generator=torch.Generator().manual_seed(1234), output_type="np").images
        out[f"guidance_{g:g}"] = mean_adherence((np.clip(imgs, 0, 1) * 255).round().astype(np.uint8), caps)
    return out


def build(cfg: ToySDXLConfig, log=print, command: str = "") -> Path:
    """Run all stages (resumable) and write the pipeline folder + MODEL_CARD.md; returns the folder."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from tdd_video.data.synthetic_images import make_images, mean_adherence
    from tdd_video.families.sdxl import SDXLFamily
    from tdd_video.families.tiny import SDXL_SCHEDULER_CONFIG
    torch.set_num_threads(cfg.threads)
    t_start = time.time()
    imgs, caps = make_images(cfg.num_images, cfg.size, cfg.seed)
    pix = to_pixels(imgs)
    vae, vae_info = train_vae(cfg, pix, log)
    t_vae = time.time() - t_start
    latent = cfg.size // 2 ** (len(cfg.vae_channels) - 1)
    e1, e2, tok1, tok2 = text_encoders(cfg.seed)
    unet = build_unet(cfg, latent, e1.config.hidden_size + e2.config.hidden_size, e2.config.projection_dim)
    family = SDXLFamily(unet, vae, e1, e2, tok1, tok2, dict(SDXL_SCHEDULER_CONFIG))
    ema, te1, te2, unet_info = train_unet(cfg, family, pix, caps, log)
    out = Path(cfg.output)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2,
                                     unet=ema, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
                                     force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(out)
    t_train = time.time() - t_start
    adh = evaluate_teacher(out, cfg)
    t_eval = time.time() - t_start - t_train
    hold_imgs, hold_caps = make_images(256, cfg.size, cfg.seed + 999)     # the scorer on real data (its ceiling)
    from tools.zoo.sdxl_card import write_sdxl_card
    summary = {"config": asdict(cfg), "vae": vae_info, "unet": unet_info, "adherence": adh,
               "adherence_data": mean_adherence(hold_imgs, hold_caps), "eval_seconds": round(t_eval, 1),
               "train_seconds": round(t_train, 1), "vae_seconds": round(t_vae, 1), "command": command,
               "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (Path(cfg.work_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    write_sdxl_card(out, summary)
    log(f"wrote {out}; adherence ({cfg.eval_steps} steps): {json.dumps(adh)}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build the toy SDXL teacher of the zoo (resumable).")
    p.add_argument("--config", default="configs/toy/pretrain_sdxl.yaml", help="YAML with ToySDXLConfig keys")
    p.add_argument("overrides", nargs="*", help="key=value overrides (YAML values), e.g. unet_steps=100")
    a = p.parse_args(argv)
    try:
        cfg = load_dataclass_recipe(ToySDXLConfig, a.config, a.overrides)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        build(cfg, command="python -m tools.zoo.build_sdxl " + shlex.join(sys.argv[1:] if argv is None else argv))
    except ConfigError as e:         # e.g. a work_dir stage trained with other settings
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
