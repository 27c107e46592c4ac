"""Build what a recipe names: the model family and the data loader (with the laptop defaults).

* `model.path: null` → the tiny random SVD/SDXL is written once to <run>/tiny_model with
  tdd_video.families.tiny.save_tiny_* and loaded from that folder through the same
  `from_pretrained` path real weights take.
* `data.path: synthetic` → synthetic image-to-video clips (tdd_video.data.synthetic)
  are written once to <run>/synthetic_data and read through the normal video loader.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from tdd_video.data.dataset import build_video_loader
from tdd_video.data.images import build_image_loader
from tdd_video.data.synthetic import SyntheticConfig, write_dataset
from tdd_video.data.synthetic_images import write_folder
from tdd_video.errors import ConfigError
from tdd_video.families import load_family, tiny
from tdd_video.unet_checkpoint import CheckpointError, resolve_checkpoint_file
from tdd_video.zoo import is_zoo_name, resolve_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SYNTHETIC = ("synthetic",)


def check_init_unet(cfg) -> None:
    """Fail before any model loads when stage 2's `trainable.init_unet` does not exist yet."""
    path = cfg.trainable.init_unet
    if path is None:
        return
    try:
        resolve_checkpoint_file(path)
    except (CheckpointError, FileNotFoundError, OSError) as e:
        raise ConfigError("trainable.init_unet", f"{path!r}: {e} (run the earlier stage first; its trained UNet "
                                                 f"is <run>/export/unet)") from None


def build_family(cfg, backend, run_dir: Path):
    """The model family of `cfg.model`, on the backend's device."""
    m = cfg.model
    path = m.path
    if path is None:
        folder = run_dir / "tiny_model"
        if backend.is_main and not (folder / "model_index.json").is_file():
            save = tiny.save_tiny_svd if m.family == "svd" else tiny.save_tiny_sdxl
            save(folder, seed=m.tiny_seed)
        backend.barrier()
        path = str(folder)
    else:   # a toy-zoo name (e.g. toy-sdxl) -> its folder; local paths and hub ids pass through
        if is_zoo_name(path):
            path = str(resolve_model(path))
    if m.dtype == "fp16" and backend.device.type != "cuda":
        raise ConfigError("model.dtype", "fp16 weights need a CUDA GPU; on CPU use bf16 or fp32")
    return load_family(m.family, path, dtype=DTYPES[m.dtype], device=backend.device)


def synthetic_data(cfg, backend, run_dir: Path):
    """Data config pointing at synthetic clips written (once, rank 0) into the run dir."""
    d = cfg.data
    out = run_dir / "synthetic_data"
    manifest = out / "manifest.jsonl"
    if backend.is_main and not manifest.is_file():
        h, w = d.sizes()[0]
        write_dataset(out, num=max(16, 4 * d.batch_size * backend.world_size), seed=cfg.run.seed,
                      cfg=SyntheticConfig(num_frames=d.num_frames, height=h, width=w), progress=False)
    backend.barrier()
    return replace(d, path=str(manifest), source="manifest")


def synthetic_images(cfg, backend, run_dir: Path):
    """Image data config pointing at toy captioned images (tdd_video.data.synthetic_images), written once."""
    d = cfg.data
    out = run_dir / "synthetic_images"
    if backend.is_main and not (out / "done").is_file():
        write_folder(out, num=d.synthetic_num, size=max(d.sizes()[0]), seed=cfg.run.seed)
        (out / "done").write_text("ok\n")
    backend.barrier()
    return replace(d, path=str(out), source="folder")


def build_loader(cfg, backend, run_dir: Path):
    """This rank's VideoLoader (state_dict/load_state_dict for exact resume)."""
    if cfg.model.family == "sdxl":   # image-text pairs (tdd_video.data.images)
        data = cfg.data
        if not data.use_cache and data.path in SYNTHETIC + ("",):
            data = synthetic_images(cfg, backend, run_dir)
        return build_image_loader(data, rank=backend.rank, world_size=backend.world_size, seed=cfg.run.seed)
    data = cfg.data
    if not data.use_cache and data.path in SYNTHETIC:
        data = synthetic_data(cfg, backend, run_dir)
    return build_video_loader(data, rank=backend.rank, world_size=backend.world_size, seed=cfg.run.seed)
