#!/usr/bin/env python
"""Few-step image-to-video with a TDD student (SVD): a thin wrapper of `tdd-img2vid`
(tdd_video/cli/img2vid.py). Run with --help."""
import sys

from tdd_video.cli.img2vid import main

if __name__ == "__main__":
    sys.exit(main())
