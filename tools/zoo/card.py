"""MODEL_CARD.md of a toy-zoo teacher, generated from the build summary (numbers are measured, not typed)."""
from __future__ import annotations

import json
from pathlib import Path


def _fmt_eval(ev: dict) -> str:
    sig = list(ev["mse_cond"])
    head = "| σ | " + " | ".join(sig) + " |\n|---|" + "---|" * len(sig) + "\n"
    rows = "".join(f"| {label} | " + " | ".join(f"{ev[k][s]:.4f}" for s in sig) + " |\n"
                   for k, label in (("mse_cond", "x0-MSE, conditioned"), ("mse_null", "x0-MSE, ∅ (null cond.)")))
    return head + rows


def write_model_card(folder: Path, s: dict) -> Path:
    """Write folder/MODEL_CARD.md from the summary dict produced by tools.zoo.pretrain.run."""
    from tdd_video.data.synthetic import PHOTOS, TEXTURES, available_photos, available_textures
    c, vae, enc, unet, ref, tm = s["config"], s["vae"], s["image_encoder"], s["unet"], s["reference"], s["timings"]
    d, v, e, u, _ = c["data"], c["vae"], c["image_encoder"], c["unet"], c["render"]
    photos = ("\n".join(f"  - `skimage/data/{n}` — {PHOTOS[n]}" for n in available_photos())
              or "  - none (scikit-image absent)")
    textures = "\n".join(f"  - `skimage/data/{n}` — {TEXTURES[n]}" for n in available_textures()) or "  - none"
    hist_vae = ", ".join(f"{h['step']}: {h['heldout_psnr_db']} dB" for h in vae.get("history", []))
    hist_unet = ", ".join(f"{h['step']}: {h['loss_smooth']}" for h in unet.get("history", []))
    text = f"""# {s['name']} — a tiny, trained Stable-Video-Diffusion-architecture teacher

**What it is.** A complete diffusers `StableVideoDiffusionPipeline` folder (UNetSpatioTemporalConditionModel +
AutoencoderKLTemporalDecoder + CLIPVisionModelWithProjection + EulerDiscreteScheduler with SVD's scheduler
config), trained from scratch on CPU on synthetic clips by this project's own script. It exists so every command of
the project runs, and quality can be *measured*, on a laptop without the 10 GB SVD weights. It is a toy:
{d['height']}×{d['width']} px, {d['num_frames']} frames, {unet['params']/1e6:.2f} M-param UNet. Real and toy models go
through exactly the same code paths.

- Load: `StableVideoDiffusionPipeline.from_pretrained(tdd_video.zoo.resolve_model("{s['name']}"))` \
or `--model {s['name']}`.
- Size on disk: {s['size_mb']} MB (fp32 safetensors). Built {s['date_utc']} on {s['machine']}.

## Rebuild (one command, resumable)

```
{s['command'] or 'python -m tools.zoo.build_svd --config configs/toy/pretrain_svd.yaml'}
```
Seed {c['seed']}; work files (clips, checkpoints, logs) in `{c['work_dir']}/`; re-running resumes/skips finished stages.
Wall time of this build: data {tm.get('data_s')} s, VAE {tm.get('vae_s')} s, latent cache {tm.get('latent_cache_s')} s,
UNet {tm.get('unet_s')} s, export + reference render {tm.get('export_s')} s \
(total {tm.get('total_this_run_s')} s for the
run that finished the build, on a CPU shared with other jobs; an earlier interrupted run's time is not included).
`threads: 1` because on a shared 2-core machine two OpenMP threads ran 4–8× slower per step than one (measured
here); on an idle machine `threads=2` is faster.

## Training data
`tdd_video.data.synthetic` (seed {d['seed']}): {d['num_clips']} mp4 clips ({d['num_clips'] - d['holdout']} train,
{d['holdout']} held out), {d['num_frames']} frames at {d['height']}×{d['width']}, fps ∈ {{6, 8, 10, 12}} (motion is
specified per second, so fps matters), motion_bucket_id computed from the true per-frame displacement. Kinds: moving,
bouncing, rotating circles/squares/triangles over gradients and faint textures; camera pans/zooms over photos; shapes
over slowly panning photos. Read through the project's `build_video_loader` (stride 1). Photos and textures used
(they ship inside the scikit-image wheel; licences from its `skimage.data` docstrings):
{photos}
{textures}

## VAE (AutoencoderKLTemporalDecoder)
block_out_channels {v['block_out_channels']}, layers_per_block {v['layers_per_block']}, {v['latent_channels']} latent
channels (factor {2 ** (len(v['block_out_channels']) - 1)}), {vae['params']/1e6:.2f} M params. \
Adam, lr {v['lr']} → {v['lr_min']}
cosine ({v['warmup_steps']} warm-up), {v['steps']} steps: first windows of {v['window_frames']} consecutive frames from
{v['window_batch_clips']} clips per step, then for the last {v['full_clip_fraction']:.0%} of the steps \
{v['batch_clips']} whole clips
per step (each decoded as one clip with `num_frames={d['num_frames']}`); loss = MSE + {v['kl_weight']}·KL, posterior
log-variance initialised at {v['init_logvar']}.
**Held-out reconstruction PSNR: {vae['heldout_psnr_db']} dB** \
(whole held-out clips decoded with `num_frames={d['num_frames']}`,
mode latents, pixels in [−1, 1], peak-to-peak 2). Progress: {hist_vae} — the jump at the end is the whole-clip phase:
the temporal decoder trained on short windows decodes full clips poorly until it sees them. \
Latent std {vae['latent_std']:.4f} → `scaling_factor` = {vae['scaling_factor']:.4f} (stored in
vae/config.json). {vae['sec_per_step']} s/step.

## Image encoder (CLIPVisionModelWithProjection)
hidden {e['hidden_size']}, {e['num_hidden_layers']} layers, patch {e['patch_size']} at {e['image_size']} px, projection
{e['projection_dim']}. **Random init (seed {c['seed'] + 2}), frozen** — \
SVD's CLIP is frozen too; here it is a fixed random
feature extractor. Measured information: first-frame → last-frame retrieval among {enc['num_clips']} held-out clips,
top-1 = {enc['retrieval_top1_first_to_last_frame']} (chance {enc['chance']}). The spatial content reaches the UNet
mainly through the concatenated first-frame latent, as in SVD.

## UNet (UNetSpatioTemporalConditionModel), SVD EDM objective
block_out_channels {u['block_out_channels']}, layers_per_block {u['layers_per_block']}, \
heads {u['num_attention_heads']},
addition_time_embed_dim {u['addition_time_embed_dim']}, cross_attention_dim {e['projection_dim']}, num_frames
{d['num_frames']}; {unet['params']/1e6:.2f} M params. Trained through `SVDFamily` (the code that samples and
distills it): ln σ ~ N({u['p_mean']}, {u['p_std']}²) (EDM's lognormal density; EDM's image default is N(−1.2, 1.2²),
SVD shifts it towards more noise — we use the values shown), v-preconditioning of `core.EDMSchedule.precondition`,
loss weight (σ²+1)/σ², conditioning dropout {u['cond_drop_prob']} of image embedding AND concatenated latent together
(→ ∅, the pipeline's CFG branch), pixel noise augmentation of the conditioning frame σ_aug ~ LogNormal(−3, 0.5),
added_time_ids = [fps−1, motion_bucket_id, σ_aug] per sample. AdamW lr {u['lr']} → {u['lr_min']} cosine,
{u['steps']} steps × {u['batch_clips']} clips, grad clip {u['grad_clip']}, EMA {u['ema_decay']} (exported).
Final smoothed training loss {unet['final_loss_smooth']:.4f}; progress (smoothed loss): {hist_unet}.
{unet['sec_per_step']} s/step.

Held-out x0-MSE of the exported EMA UNet by noise level (fixed noise, 32 held-out clips):

{_fmt_eval(unet['final_eval_ema'])}
## Reference render (what `tests/test_zoo.py` re-checks)
`reference.json`: image `{ref['image']}`, seed {ref['seed']}, {ref['num_inference_steps']} Euler steps, guidance
{ref['min_guidance_scale']}→{ref['max_guidance_scale']} (frame-wise), fps {ref['fps']}, motion bucket
{ref['motion_bucket_id']}, noise_aug {ref['noise_aug_strength']}. SHA-256 of the uint8 frames:
`{ref['sha256_uint8_frames']}` (rendered with torch threads = {ref['torch_threads']}; other thread counts may differ
by float rounding, so the test compares against `samples/reference_frames.png` with a tolerance).

![reference](samples/reference_strip.png)

## Limitations
A toy: tiny resolution, synthetic data, minutes of CPU training. Good for testing code paths and measuring
distillation (teacher 25 steps vs 4 steps vs a student) — not for pictures anyone would want.
"""
    path = Path(folder) / "MODEL_CARD.md"
    path.write_text(text)
    (Path(folder) / "build_summary.json").write_text(json.dumps({k: s[k] for k in s if k != "config"}, indent=1,
                                                                default=str))
    return path
