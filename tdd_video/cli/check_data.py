"""tdd-check-data: scan every video of a source and print a summary before training on it (tdd_video.data.check)."""
from __future__ import annotations

import json
import sys

from tdd_video.cli.flags import Parser, data_flag_error
from tdd_video.data.config import VideoDataConfig
from tdd_video.errors import ConfigError

DESCRIPTION = "Scan a video dataset before training on it (tdd_video.data.check)."


def main(argv=None) -> int:
    p = Parser(prog="tdd-check-data", description=DESCRIPTION,
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
    m = p.add_argument_group("motion (docs/math.md §13)")
    m.add_argument("--motion", action="store_true",
                   help="also measure each video's motion (as data.motion_bucket: estimate does) and report the raw "
                        "motion's percentiles and the motion_bucket_id histogram")
    m.add_argument("--height", type=int, default=320, help="clip height the motion is measured at (data.height)")
    m.add_argument("--width", type=int, default=576, help="clip width the motion is measured at (data.width)")
    m.add_argument("--motion-calibration", default="", metavar="FILE",
                   help="use this fixed calibration for the bucket histogram (default: the data's own)")
    m.add_argument("--motion-percentiles", type=float, nargs=3, metavar=("P5", "P50", "P95"),
                   help="fixed calibration: raw motion at the 5th/50th/95th percentiles")
    m.add_argument("--write-calibration", nargs="?", const="auto", default=None, metavar="FILE",
                   help="store the calibration as JSON: in FILE, or (no FILE) where training looks for the data's "
                        "own calibration (next to the manifest / in the folder)")
    m.add_argument("--num-workers", type=int, default=0, help="decoding processes for --motion")
    args = p.parse_args(argv)
    fixed = bool(args.motion_calibration or args.motion_percentiles)
    if (fixed or args.write_calibration) and not args.motion:
        p.error("--motion-calibration / --motion-percentiles / --write-calibration need --motion")
    try:
        cfg = VideoDataConfig(path=args.data, video_root=args.video_root, num_frames=args.num_frames,
                              target_fps=None if args.stride else args.target_fps, stride=args.stride,
                              short_policy=args.short_policy, min_stride=args.min_stride,
                              reader=args.reader, height=args.height, width=args.width,
                              motion_bucket="estimate" if fixed else "manifest",
                              motion_calibration=args.motion_calibration,
                              motion_percentiles=list(args.motion_percentiles) if args.motion_percentiles else None
                              ).validate()
    except ConfigError as e:
        print(f"error: {data_flag_error(e, p)}", file=sys.stderr)
        return 2
    from tdd_video.data import check  # torch and the readers load only for a valid request
    from tdd_video.data.motion import default_calibration_path
    from tdd_video.data.sources import ManifestError
    try:
        report = check.check_source(cfg, progress=not args.json, motion=args.motion, num_workers=args.num_workers)
    except ConfigError as e:
        print(f"error: {data_flag_error(e, p)}", file=sys.stderr)
        return 2
    except (ManifestError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict()) if args.json else check.format_report(report, cfg))
    if args.write_calibration:
        if report.calibration is None:
            print("error: no usable clip to calibrate the motion buckets on", file=sys.stderr)
            return 2
        out = default_calibration_path(cfg.path) if args.write_calibration == "auto" else args.write_calibration
        report.calibration.save(out)
        print(f"motion calibration written to {out}", file=sys.stderr if args.json else sys.stdout)
    return 0 if report.usable == report.total else 1
