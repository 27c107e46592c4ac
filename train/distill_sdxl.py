#!/usr/bin/env python
"""TDD distillation of SDXL (text-to-image) — the same engine, method and CLI as train/distill_svd.py.

  python train/distill_sdxl.py                                  # laptop: toy SDXL teacher (zoo), toy images, CPU
  python train/distill_sdxl.py --config configs/toy/tdd_sdxl_tiny.yaml train.max_steps=20 model.path=null
  deepspeed --num_gpus 8 train/distill_sdxl.py --config configs/sdxl/tdd_sdxl.yaml data.path='shards/{0000..0999}.tar'
  python train/distill_sdxl.py --config configs/sdxl/tdd_sdxl.yaml --dry-run   # print the resolved config and exit

A recipe with `model.family: sdxl` selects the SDXL family adapter (tdd_video.families.sdxl) and the
image-text loader (tdd_video.data.images: folders with .txt captions, CSV/JSONL manifests, webdataset
.tar shards); the TDD step (tdd_video.methods.tdd) is the one SVD uses. Overrides are dotted
`section.key=value` pairs after the options. The exported LoRA (<output_dir>/export/lora) loads in stock
diffusers: `StableDiffusionXLPipeline.load_lora_weights(path)`.
"""
import sys
from pathlib import Path

from tdd_video.cli.distill import main as distill

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "toy" / "tdd_sdxl_tiny.yaml"


def main(argv=None) -> int:
    """The shared training CLI with the toy SDXL recipe as the default config."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
    return distill(argv, default_config=DEFAULT_CONFIG)


if __name__ == "__main__":
    sys.exit(main())
