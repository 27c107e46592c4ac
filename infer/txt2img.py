#!/usr/bin/env python
"""Few-step text-to-image with a TDD student (SDXL): a thin wrapper of `tdd-txt2img`
(tdd_video/cli/txt2img.py). Run with --help."""
import sys

from tdd_video.cli.txt2img import main

if __name__ == "__main__":
    sys.exit(main())
