#!/usr/bin/env python
"""TDD distillation (SVD by default): a thin wrapper of `tdd-distill` (tdd_video/cli/distill.py). Run with --help."""
import sys
from pathlib import Path

from tdd_video.cli.distill import main

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "toy" / "tdd_svd_tiny.yaml"

if __name__ == "__main__":
    sys.exit(main(default_config=DEFAULT_CONFIG))
