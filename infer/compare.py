#!/usr/bin/env python
"""TDD vs AnimateLCM vs the many-step teacher, side by side: a thin wrapper of `tdd-compare`
(tdd_video/cli/compare.py). Run with --help."""
import sys

from tdd_video.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
