"""Build the toy SDXL teacher "toy-sdxl": tiny AutoencoderKL + tiny text_time UNet2DConditionModel trained on
synthetic captioned images (tdd_video.data.synthetic_images), frozen tiny random CLIP text encoders with the
offline tokenizer (tdd_video.families.tiny), exported as a StableDiffusionXLPipeline folder.

    python -m tools.zoo.build_sdxl --config configs/toy/pretrain_sdxl.yaml      (resumable)

Stages (each resumable from work_dir/<stage>/ckpt.pt, skipped when done.json exists):
1. ``vae``: pixel MSE + kl_weight·KL on posterior samples; then scaling_factor = 1/std(latents) is stored.
2. ``unet``: SDXL's own objective through SDXLFamily: t ~ U{0..999}, x_t = √ᾱ x0 + √(1−ᾱ) ε, MSE on ε;
   caption dropout p_uncond → the SAME null conditioning as inference (zero prompt and pooled embeds,
   docs/math.md §1b); add_time_ids = (S, S, 0, 0, S, S). Latents are encoded once (posterior mean, std), text
   embeddings once per unique caption. fp32 EMA of the UNet is exported.
3. export + evaluation: teacher 25-step Euler (diffusers pipeline, guidance `eval_guidance`) on held-out
   seeds, prompt adherence (sdxl_synthetic.mean_adherence), written to MODEL_CARD.md.
"""
from __future__ import annotations

import argparse
import copy
import json
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
    unet_channels: list = field(default_factory=lambda: [32, 64])
    unet_layers_per_block: int = 1
    unet_steps: int = 900
    unet_batch: int = 32
    unet_lr: float = 1e-3
    p_uncond: float = 0.1
    ema_decay: float = 0.995
    checkpoint_every: int = 100
    eval_guidance: float = 4.5
    eval_images: int = 48

    def validate(self, p: str = "") -> "ToySDXLConfig":
        check_range("size", self.size, 16, 1024)
        check_range("num_images", self.num_images, 16, 10**7)
        check_range("p_uncond", self.p_uncond, 0.0, 1.0, hi_open=True)
        check_range("ema_decay", self.ema_decay, 0.0, 1.0, hi_open=True)
        return self


def text_encoders(seed: int):
    """Frozen tiny random CLIP text encoders + offline tokenizers (the same builders as tests use)."""
    from tdd_video.families.tiny import tiny_text_encoders, tiny_tokenizer
    e1, e2 = tiny_text_encoders(seed)
    return e1, e2, tiny_tokenizer(), tiny_tokenizer()


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


def build_unet(cfg: ToySDXLConfig, latent: int):
    from diffusers import UNet2DConditionModel
    ch = tuple(int(c) for c in cfg.unet_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return UNet2DConditionModel(
            sample_size=latent, in_channels=4, out_channels=4, layers_per_block=cfg.unet_layers_per_block,
            block_out_channels=ch, down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(ch) - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (len(ch) - 1) + ("UpBlock2D",),
            attention_head_dim=tuple(max(1, c // 16) for c in ch), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=1,
            projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64, norm_num_groups=16)


def to_pixels(imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(cfg: ToySDXLConfig, pix: torch.Tensor, log=print):
    stage, vae = StageDir(cfg.work_dir, "vae"), build_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = stage.load_checkpoint(model=vae, opt=opt)
    if stage.is_done():
        return vae, stage.done_info()
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
            stage.log(step=step + 1, loss=float(loss))
            log(f"vae step {step + 1}/{cfg.vae_steps} loss {float(loss):.5f}")
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
            "params": sum(p.numel() for p in vae.parameters()), "steps": cfg.vae_steps}
    stage.save_checkpoint(cfg.vae_steps, model=vae, opt=opt)
    stage.mark_done(info)
    return vae, info


def train_unet(cfg: ToySDXLConfig, family, pix: torch.Tensor, captions: list[str], log=print):
    """ε-prediction training of family.unet (in place); returns (ema unet, info)."""
    stage = StageDir(cfg.work_dir, "unet")
    unet = family.unet
    ema_unet = copy.deepcopy(unet).requires_grad_(False)    # the EMA weights as a module (export)
    ema = EMA(unet.named_parameters(), cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.0)
    lr_at = lr_multiplier(30, "cosine", cfg.unet_steps, 0.05)
    start = stage.load_checkpoint(model=unet, ema=ema, opt=opt)
    if stage.is_done():
        ema.copy_to(ema_unet.named_parameters())
        return ema_unet, stage.done_info()
    with torch.no_grad():   # encode once: posterior mean/std of every image, embeddings per unique caption
        posts = [family.vae.encode(pix[i:i + 256]).latent_dist for i in range(0, pix.shape[0], 256)]
        mean = torch.cat([p.mean for p in posts]) * family.scaling_factor
        std = torch.cat([p.std for p in posts]) * family.scaling_factor
        uniq = sorted(set(captions))
        pe, pooled = family.encode_prompt(uniq)
        cap_idx = torch.tensor([uniq.index(c) for c in captions])
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
        emb = torch.where(drop.view(-1, 1, 1), 0.0, pe[cap_idx[idx]])
        txt = torch.where(drop, 0.0, pooled[cap_idx[idx]])
        for group in opt.param_groups:
            group["lr"] = cfg.unet_lr * lr_at(step)
        out = unet(a * x0 + sg * eps, t, encoder_hidden_states=emb,
                   added_cond_kwargs={"text_embeds": txt, "time_ids": ids}).sample
        loss = torch.nn.functional.mse_loss(out, eps)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet.named_parameters(), cfg.ema_decay if step > 100 else 0.0)
        losses.append(float(loss))
        if (step + 1) % 25 == 0:
            sm = float(np.mean(losses[-25:]))
            stage.log(step=step + 1, loss_smooth=round(sm, 5))
            log(f"unet step {step + 1}/{cfg.unet_steps} loss {sm:.4f} ({time.time() - t0:.0f} s)")
        if (step + 1) % cfg.checkpoint_every == 0:
            stage.save_checkpoint(step + 1, model=unet, ema=ema, opt=opt)
    unet.eval()
    info = {"steps": cfg.unet_steps, "final_loss_smooth": round(float(np.mean(losses[-50:])), 5) if losses else None,
            "params": sum(p.numel() for p in unet.parameters())}
    stage.save_checkpoint(cfg.unet_steps, model=unet, ema=ema, opt=opt)
    stage.mark_done(info)
    ema.copy_to(ema_unet.named_parameters())
    return ema_unet, info


@torch.no_grad()
def evaluate_teacher(folder: Path, cfg: ToySDXLConfig) -> dict:
    """25-step Euler renders of the exported pipeline (stock diffusers) on every caption → adherence."""
    from diffusers import StableDiffusionXLPipeline

    from tdd_video.data.synthetic_images import all_scenes, mean_adherence
    pipe = StableDiffusionXLPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    caps = [sc.caption for sc in all_scenes()][: cfg.eval_images]
    out = {}
    for g in (1.0, cfg.eval_guidance):
        imgs = pipe(caps, height=cfg.size, width=cfg.size, num_inference_steps=25, guidance_scale=g,
                    generator=torch.Generator().manual_seed(1234), output_type="np").images
        out[f"guidance_{g:g}"] = mean_adherence((np.clip(imgs, 0, 1) * 255).round().astype(np.uint8), caps)
    return out


def build(cfg: ToySDXLConfig, log=print, command: str = "") -> Path:
    """Run all stages (resumable) and write the pipeline folder + MODEL_CARD.md; returns the folder."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from tdd_video.data.synthetic_images import make_images
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
    family = SDXLFamily(build_unet(cfg, latent), vae, e1, e2, tok1, tok2, dict(SDXL_SCHEDULER_CONFIG))
    ema, unet_info = train_unet(cfg, family, pix, caps, log)
    out = Path(cfg.output)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=e1, text_encoder_2=e2, tokenizer=tok1, tokenizer_2=tok2,
                                     unet=ema, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER_CONFIG),
                                     force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(out)
    t_train = time.time() - t_start
    adh = evaluate_teacher(out, cfg)
    from tools.zoo.sdxl_card import write_sdxl_card
    summary = {"config": asdict(cfg), "vae": vae_info, "unet": unet_info, "adherence_25step": adh,
               "train_seconds": round(t_train, 1), "vae_seconds": round(t_vae, 1), "command": command,
               "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (Path(cfg.work_dir) / "summary.json").write_text(json.dumps(summary, indent=1))
    write_sdxl_card(out, summary)
    log(f"wrote {out}; adherence (25 steps): {json.dumps(adh)}")
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
    build(cfg, command="python -m tools.zoo.build_sdxl " + " ".join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
