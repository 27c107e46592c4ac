"""MODEL_CARD.md of the toy SDXL teacher, written from the measured build summary (no typed numbers)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

KEYS = ("colour", "shape", "layout", "all")


def _table(adh: dict, steps: int, data: dict | None = None) -> str:
    """Markdown table: one row per guidance scale (keys "guidance_<w>"), plus the training data's own score."""
    head = f"| {steps}-step Euler | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS) + "\n"
    rows = "".join(f"| {name.replace('guidance_', 'w = ')} | " + " | ".join(f"{v[k]:.3f}" for k in KEYS) + " |\n"
                   for name, v in adh.items())
    if data:
        rows += "| training data (held-out draws) | " + " | ".join(f"{data[k]:.3f}" for k in KEYS) + " |\n"
    return head + rows


def _best_guidance(adh: dict) -> str:
    """Which w scored best (by `all`, then `colour`), from the measured numbers."""
    if len(adh) < 2:
        return ""
    name, v = max(adh.items(), key=lambda kv: (kv[1]["all"], kv[1]["colour"]))
    return (f"Guidance tuning: of the scales measured, {name.replace('guidance_', 'w = ')} scores best "
            f"(all {v['all']:.3f}, colour {v['colour']:.3f}); same seed and captions in every row, only w changes.\n")


def _text_encoders(c: dict, u: dict) -> str:
    return textwrap.fill(_text_encoders_line(c, u), width=116, subsequent_indent="  ", break_on_hyphens=False)


def _text_encoders_line(c: dict, u: dict) -> str:
    if not c.get("text_train", False):
        return (f"- Text encoders: the tiny random CLIP pair of `tdd_video.families.tiny` (seed {c['seed']}), FROZEN "
                "(never trained).")
    layers = c.get("text_train_layers", "all")
    which = "all layers (token + position embeddings, every transformer layer, final norm, projection)" \
        if layers == "all" else f"the last {layers} transformer layer(s) + final norm + projection (the rest frozen)"
    moved = u.get("text_rel_change")
    moved_s = (f" The exported (EMA) weights moved ‖θ − θ₀‖/‖θ₀‖ = {moved[0]:.3f} (text_encoder) and "
               f"{moved[1]:.3f} (text_encoder_2) from the random initialisation.") if moved else ""
    return (f"- Text encoders: the tiny CLIP pair of `tdd_video.families.tiny` (CLIPTextModel + "
            f"CLIPTextModelWithProjection, 32-d, 3 layers, offline tokenizer), initialised randomly (seed {c['seed']}) "
            f"and TRAINED jointly with the UNet: {which}, {u.get('text_params_trained', 0):,} params "
            f"({u.get('text_params_with_grad', 0):,} of them receive gradients: SDXL reads text_encoder's "
            f"penultimate hidden states, so its last layer and final norm never do), through the same ε-loss "
            f"(the prompt embeddings are recomputed with gradients every step, exactly as the pipeline "
            f"encodes prompts: penultimate hidden states of both encoders concatenated, pooled projection of "
            f"encoder 2), own AdamW lr {c['text_lr']} (same warm-up + cosine), grad clip 1; exported weights are "
            f"their fp32 EMA (decay {c['ema_decay']}), so the stock pipeline encodes prompts with the trained "
            f"encoders.{moved_s}")


def write_sdxl_card(folder: Path, s: dict) -> Path:
    """Write folder/MODEL_CARD.md from the summary dict of tools.zoo.build_sdxl.build."""
    c, v, u = s["config"], s["vae"], s["unet"]
    adh = s.get("adherence", s.get("adherence_25step", {}))
    steps = c.get("eval_steps", 25)
    size_mb = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6
    sf = v.get("scaling_factor_exact", v["scaling_factor"])
    text = f"""# {c['name']} — a tiny, trained SDXL-architecture text-to-image teacher

A complete diffusers `StableDiffusionXLPipeline` folder (UNet2DConditionModel with SDXL's `text_time`
added conditioning, AutoencoderKL, two CLIP text encoders + offline tokenizers, EulerDiscreteScheduler with
SDXL's scheduler config, `force_zeros_for_empty_prompt=True`), trained from scratch on CPU by
`tools/zoo/build_sdxl.py`. A toy: {c['size']}×{c['size']} px, {u['params'] / 1e6:.2f} M-param UNet,
{size_mb:.1f} MB on disk. It exists so `train/distill_sdxl.py` and `infer/txt2img.py` run and can be measured
without the 7 GB SDXL weights; real and toy models take the same code paths.

- Load: `StableDiffusionXLPipeline.from_pretrained(tdd_video.zoo.resolve_model("{c['name']}"))`, or
  `--model {c['name']}` in `infer/txt2img.py`.
- Prompts: `a <red|green|blue|yellow> <circle|square> <above|below> a <colour> <shape>` (96 captions, colours
  differ). Anything else is out of distribution.
- Built {s['date_utc']}; training took {s['train_seconds'] / 60:.1f} min on {c['threads']} CPU thread(s)
  (VAE {s['vae_seconds'] / 60:.1f} min; times of this invocation, a resumed build counts only what it ran).

## Rebuild (one command, resumable)

```
{s['command'] or 'python -m tools.zoo.build_sdxl --config configs/toy/pretrain_sdxl.yaml'}
```
Work files (checkpoints, `log.jsonl`, `settings.json`, `summary.json`) go to `{c['work_dir']}/`; a killed build
resumes from the last checkpoint of the running stage. Seed {c['seed']}.

## Training
- Data: {c['num_images']} synthetic images (`tdd_video.data.synthetic_images.make_images`, seed {c['seed']}):
  two shapes on low-saturation gradient backgrounds, the subject in the top half for "above", bottom for "below".
- VAE: AutoencoderKL, channels {c['vae_channels']} (factor {2 ** (len(c['vae_channels']) - 1)}), {v['params']:,} params,
  {v['steps']} steps of batch {c['vae_batch']} (MSE + {c['kl_weight']}·KL, AdamW {c['vae_lr']}, cosine).
  Held-out reconstruction PSNR {v['heldout_psnr_db']} dB; measured latent std {v['latent_std']} →
  `scaling_factor` = {sf:.5f}.
{_text_encoders(c, u)}
- UNet: channels {c['unet_channels']} ({c.get('unet_transformer_layers', 1)} transformer layer(s) per cross-attention
  block), {u['params']:,} params, ε-prediction on SDXL's scaled-linear VP schedule,
  {u['steps']} steps of batch {c['unet_batch']} (AdamW {c['unet_lr']}, {c.get('unet_warmup', 30)} warm-up steps, cosine,
  grad clip 1), caption dropout
  {c['p_uncond']} to the null conditioning ∅ = zero prompt AND pooled embeds (what the pipeline uses for its
  negative branch), add_time_ids = ({c['size']}, {c['size']}, 0, 0, {c['size']}, {c['size']}); exported weights
  are the fp32 EMA (decay {c['ema_decay']}). Final smoothed loss {u['final_loss_smooth']}.

## Measured prompt adherence
Stock `StableDiffusionXLPipeline`, {steps} Euler steps, seed 1234, {c['eval_images']} renders (caption i =
`all_scenes()[i % 96]`) per guidance scale w, scored exactly by the rules that drew the data
(`tdd_video.data.synthetic_images.adherence`): `colour` = the expected palette colour dominates each half,
`shape` = it fills its box like the expected shape, `layout` = both halves right, `all` = layout and both shapes
right. The last row scores 256 held-out training-distribution images (the scorer's ceiling).

{_table(adh, steps, s.get('adherence_data'))}
{_best_guidance(adh)}
Raw summary: `{json.dumps({k: s[k] for k in ('vae', 'unet')})}`
"""
    path = Path(folder) / "MODEL_CARD.md"
    path.write_text(text)
    return path
