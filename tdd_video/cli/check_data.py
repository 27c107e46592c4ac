"""tdd-check-data: scan every video of a source and print a summary before training on it (tdd_video.data.check)."""
from __future__ import annotations

import argparse
import json
import sys

from tdd_video.data import check
from tdd_video.data.config import VideoDataConfig
from tdd_video.data.sources import ManifestError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tdd-check-data", description=check.__doc__.split("\n\n")[0],
                                epilog="Exit status: 0 all usable, 1 some rows unusable, 2 bad input.")
    p.add_argument("--data", required=True, help="folder of videos, CSV/JSONL manifest or WebVid CSV")
    p.add_argument("--video-root", default="", help="WebVid CSV: folder holding the videos")
    p.add_argument("--num-frames", type=int, default=14)
    p.add_argument("--target-fps", type=float, default=7.0)
    p.add_argument("--stride", type=int, help="fixed stride instead of --target-fps")
    p.add_argument("--short-policy", default="reduce_stride", choices=["skip", "reduce_stride"])
    p.add_argument("--min-stride", type=int, default=1)
    p.add_argument("--reader", default="auto", choices=["auto", "decord", "pyav", "imageio"])
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = p.parse_args(argv)
    try:
        cfg = VideoDataConfig(path=args.data, video_root=args.video_root, num_frames=args.num_frames,
                              target_fps=None if args.stride else args.target_fps, stride=args.stride,
                              short_policy=args.short_policy, min_stride=args.min_stride,
                              reader=args.reader).validate()
        report = check.check_source(cfg, progress=not args.json)
    except (ManifestError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict()) if args.json else check.format_report(report, cfg))
    return 0 if report.usable == report.total else 1

