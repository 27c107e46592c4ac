"""Recipe of a toy-zoo teacher build (configs/toy/pretrain_*.yaml): typed sections, dotted overrides.

Sections: ``data`` (synthetic clips), ``vae`` (AutoencoderKLTemporalDecoder), ``image_encoder``
(CLIPVisionModelWithProjection), ``unet`` (UNetSpatioTemporalConditionModel + the SVD EDM
objective, docs/math.md §1a), ``render`` (the fixed-seed reference render recorded in the model card).
Loaded with the engine's recipe loader: unknown keys and out-of-range values raise ConfigError
naming the dotted key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from tdd_video.engine.config import load_dataclass_recipe
from tdd_video.errors import ConfigError, check_range


@dataclass
class DataSection:
    num_clips: int = 1024            # synthetic clips rendered (the last `holdout` are held out)
    holdout: int = 64
    seed: int = 0
    num_frames: int = 8
    height: int = 32
    width: int = 32
    num_workers: int = 0             # loader workers for the one pass that reads the clips

    def validate(self, p):
        check_range(f"{p}.num_clips", self.num_clips, 8, 10**7)
        check_range(f"{p}.holdout", self.holdout, 1, self.num_clips - 4)
        check_range(f"{p}.num_frames", self.num_frames, 2, 64)
        for k in ("height", "width"):
            check_range(f"{p}.{k}", getattr(self, k), 16, 1024)
            if getattr(self, k) % 8:
                raise ConfigError(f"{p}.{k}", f"got {getattr(self, k)}, must be a multiple of 8")


@dataclass
class VAESection:
    block_out_channels: list = field(default_factory=lambda: [32, 32, 64])   # 3 levels = factor 4
    layers_per_block: int = 1
    latent_channels: int = 4
    steps: int = 3000
    window_frames: int = 2           # phase 1: random windows of this many consecutive frames ...
    window_batch_clips: int = 8      # ... from this many clips per step (content diversity per FLOP)
    full_clip_fraction: float = 0.15 # phase 2 (last fraction of steps): whole clips, decoded as one clip
    batch_clips: int = 2             # clips per step in phase 2 (each num_frames frames)
    lr: float = 2e-3
    lr_min: float = 5e-5
    warmup_steps: int = 50
    kl_weight: float = 1e-6          # on the per-element mean KL
    init_logvar: float = -8.0        # initial posterior log-variance (near-deterministic start)
    eval_every: int = 250
    checkpoint_every: int = 250

    def validate(self, p):
        if not self.block_out_channels or any(int(c) % 32 for c in self.block_out_channels):
            raise ConfigError(f"{p}.block_out_channels", "need >= 1 level, each a multiple of 32 "
                              f"(the temporal decoder's GroupNorm uses 32 groups), got {self.block_out_channels}")
        check_range(f"{p}.steps", self.steps, 0, 10**7)
        check_range(f"{p}.batch_clips", self.batch_clips, 1, 4096)
        check_range(f"{p}.window_frames", self.window_frames, 1, 1024)
        check_range(f"{p}.window_batch_clips", self.window_batch_clips, 1, 4096)
        check_range(f"{p}.full_clip_fraction", self.full_clip_fraction, 0.0, 1.0)
        check_range(f"{p}.lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range(f"{p}.lr_min", self.lr_min, 0.0, self.lr)
        check_range(f"{p}.kl_weight", self.kl_weight, 0.0, 1.0)


@dataclass
class ImageEncoderSection:
    hidden_size: int = 32
    intermediate_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    projection_dim: int = 32
    image_size: int = 224            # what StableVideoDiffusionPipeline resizes to
    patch_size: int = 32

    def validate(self, p):
        check_range(f"{p}.hidden_size", self.hidden_size, 8, 4096)
        check_range(f"{p}.projection_dim", self.projection_dim, 4, 4096)
        if self.image_size % self.patch_size:
            raise ConfigError(f"{p}.patch_size", f"image_size {self.image_size} must be a multiple of it")


@dataclass
class UNetSection:
    block_out_channels: list = field(default_factory=lambda: [64, 96])
    layers_per_block: int = 1
    num_attention_heads: list = field(default_factory=lambda: [2, 3])
    addition_time_embed_dim: int = 32
    transformer_layers_per_block: int = 1
    steps: int = 3000
    batch_clips: int = 8
    lr: float = 5e-4
    lr_min: float = 2e-5
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_mean: float = 0.0              # ln σ ~ N(p_mean, p_std²) (EDM lognormal training density)
    p_std: float = 1.6
    cond_drop_prob: float = 0.1      # image_emb AND cond_latent -> ∅ together (docs/math.md §1a null cond.)
    noise_aug_mean: float = -3.0     # σ_aug ~ LogNormal(-3, 0.5): SVDFamily.encode_conditioning(train=True)
    noise_aug_std: float = 0.5
    eval_every: int = 500
    checkpoint_every: int = 250

    def validate(self, p):
        if len(self.num_attention_heads) != len(self.block_out_channels):
            raise ConfigError(f"{p}.num_attention_heads", "needs one entry per level of block_out_channels")
        check_range(f"{p}.steps", self.steps, 0, 10**7)
        check_range(f"{p}.batch_clips", self.batch_clips, 1, 4096)
        check_range(f"{p}.lr", self.lr, 0.0, 1.0, lo_open=True)
        check_range(f"{p}.lr_min", self.lr_min, 0.0, self.lr)
        check_range(f"{p}.ema_decay", self.ema_decay, 0.0, 1.0, hi_open=True)
        check_range(f"{p}.p_std", self.p_std, 0.0, 10.0, lo_open=True)
        check_range(f"{p}.cond_drop_prob", self.cond_drop_prob, 0.0, 1.0, hi_open=True)
        if (self.noise_aug_mean, self.noise_aug_std) != (-3.0, 0.5):
            raise ConfigError(f"{p}.noise_aug_mean", "the SVD recipe's LogNormal(-3, 0.5) is implemented by "
                              "SVDFamily.encode_conditioning(train=True); other values are not supported")


@dataclass
class RenderSection:
    image: str = "tdd_video/assets/sample_image.png"   # relative to the repository root
    seed: int = 1234
    num_inference_steps: int = 25
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 3.0
    fps: int = 7                      # the pipeline passes fps - 1 to the UNet (docs/math.md §1a)
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02

    def validate(self, p):
        check_range(f"{p}.num_inference_steps", self.num_inference_steps, 1, 1000)
        check_range(f"{p}.fps", self.fps, 1, 240)


@dataclass
class PretrainConfig:
    name: str = "toy-svd"                       # zoo entry written to tdd_video/zoo/<name>/
    output: str = "tdd_video/zoo/toy-svd"       # the diffusers folder (relative to the repo root)
    work_dir: str = "runs/pretrain_toy_svd"     # data, checkpoints, logs (resumable)
    seed: int = 0
    threads: int = 2                            # torch.set_num_threads
    data: DataSection = field(default_factory=DataSection)
    vae: VAESection = field(default_factory=VAESection)
    image_encoder: ImageEncoderSection = field(default_factory=ImageEncoderSection)
    unet: UNetSection = field(default_factory=UNetSection)
    render: RenderSection = field(default_factory=RenderSection)

    def validate(self, p: str = "") -> "PretrainConfig":
        """The top-level keys (each section is validated when it is built)."""
        check_range("seed", self.seed, 0, None)
        check_range("threads", self.threads, 1, 512)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_pretrain_config(path: str | Path | None, overrides: list[str] | None = None) -> PretrainConfig:
    """YAML file (or None = defaults) + dotted `section.key=value` overrides (values parsed as YAML), built and
    validated by the engine's recipe loader (unknown keys and out-of-range values name the dotted key)."""
    return load_dataclass_recipe(PretrainConfig, path, overrides)
