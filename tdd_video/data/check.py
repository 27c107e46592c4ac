"""`--check-data`: scan every video of a source and print a summary before training on it.

    tdd-check-data --data MANIFEST_OR_FOLDER [--num-frames 14 --target-fps 7] [--json]
                   [--motion [--write-calibration [FILE]] [--motion-calibration FILE | --motion-percentiles P5 P50 P95]]

For each row: does the file exist, can it be opened and its first and last requested frames be
decoded (with the same reader choice and decord -> PyAV fallback as training), is it long enough
for one clip under the configured fps/stride and ``short_policy``. Prints counts, the unreadable
files with reasons, the too-short ones, and histograms of source fps and of the clips' fps_id.
Exit status 0 if every row is usable, 1 otherwise, 2 on a bad manifest/config.

With ``motion=True`` (``--motion``) it also measures every usable video's motion the way
``data.motion_bucket: estimate`` does (the evaluation clip: centre start, centre crop at the configured
size; docs/math.md §13) and reports the raw motion's percentiles (frame diagonals per second) and the
histogram of the resulting motion_bucket_id (16 bins of 16), under the configured fixed calibration or
else the dataset's own. ``--write-calibration`` stores that calibration (by default where training looks
for it, `tdd_video.data.motion.default_calibration_path`), so training does not measure the data again.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

from tdd_video.data.clips import fps_id_for, frame_window, stride_for, usable_stride
from tdd_video.data.config import VideoDataConfig
from tdd_video.data.dataset import assign_buckets, calibration_settings, clip_motions, motion_calibration_for
from tdd_video.data.motion import UNIT, MotionCalibration, describe
from tdd_video.data.readers import VideoReadError, open_reader
from tdd_video.data.sources import load_records


@dataclass
class CheckReport:
    total: int = 0
    readable: int = 0
    missing: list = field(default_factory=list)        # [path]
    unreadable: list = field(default_factory=list)     # [(path, reason)]
    too_short: list = field(default_factory=list)      # [(path, frames, fps)]
    fps_histogram: Counter = field(default_factory=Counter)     # round(src fps) -> count
    fps_id_histogram: Counter = field(default_factory=Counter)  # clip fps_id -> count
    backends: Counter = field(default_factory=Counter)
    motion: list | None = None                     # [(path, raw motion)] when measured
    calibration: MotionCalibration | None = None   # the raw -> bucket map the motion report uses
    calibration_kind: str = ""                     # dataset | file | percentiles

    def motion_summary(self) -> dict | None:
        """Raw percentiles, bucket histogram and calibration (tdd_video.data.motion.describe), or None."""
        if self.motion is None:
            return None
        out = describe([m for _, m in self.motion], self.calibration)
        out["calibration_kind"] = self.calibration_kind
        return out

    @property
    def usable(self) -> int:
        return self.readable - len(self.too_short)

    def to_dict(self) -> dict:
        return {"total": self.total, "readable": self.readable, "usable": self.usable,
                "missing": self.missing, "unreadable": [list(x) for x in self.unreadable],
                "too_short": [list(x) for x in self.too_short],
                "fps_histogram": dict(sorted(self.fps_histogram.items())),
                "fps_id_histogram": dict(sorted(self.fps_id_histogram.items())),
                "backends": dict(self.backends),
                **({} if self.motion is None else {"motion": dict(self.motion_summary(),
                                                                  clips=[list(x) for x in self.motion])})}


def check_source(cfg: VideoDataConfig, progress: bool = False, motion: bool = False,
                 num_workers: int = 0) -> CheckReport:
    """Scan all records of ``cfg``'s source (see module docstring); ``motion``: also measure their motion."""
    from tqdm import tqdm

    records = load_records(cfg.source, cfg.path, cfg.video_root, cfg.extensions)
    report = CheckReport(total=len(records))
    for rec in tqdm(records, desc="checking videos", unit="file", disable=not progress):
        if not rec.path.is_file():
            report.missing.append(str(rec.path) + (f" (line {rec.line})" if rec.line else ""))
            continue
        try:
            reader = open_reader(rec.path, cfg.reader)
            try:
                src_fps = rec.fps or reader.fps or cfg.default_fps
                if not src_fps:
                    raise VideoReadError(f"{rec.path}: no frame rate in the container")
                reader.get_frames([0, reader.num_frames - 1])
                backend, n = reader.backend, reader.num_frames
            finally:
                reader.close()
        except VideoReadError as e:
            if cfg.reader == "auto" and "decord" in str(e):  # decode failed in decord: PyAV fallback
                try:
                    reader = open_reader(rec.path, "pyav")
                    reader.get_frames([0, reader.num_frames - 1])
                    src_fps, backend, n = rec.fps or reader.fps or cfg.default_fps, "pyav", reader.num_frames
                    reader.close()
                except VideoReadError as e2:
                    report.unreadable.append((str(rec.path), str(e2)))
                    continue
            else:
                report.unreadable.append((str(rec.path), str(e)))
                continue
        report.readable += 1
        report.backends[backend] += 1
        report.fps_histogram[round(src_fps, 2)] += 1
        wanted = stride_for(src_fps, cfg.target_fps, cfg.stride)
        lo, hi = frame_window(n, src_fps, rec.start, rec.end)
        stride = usable_stride(hi - lo, cfg.num_frames, wanted, cfg.short_policy, cfg.min_stride)
        if stride is None:
            report.too_short.append((str(rec.path), hi - lo, src_fps))
        else:
            report.fps_id_histogram[fps_id_for(src_fps / stride)] += 1
    if motion:
        measure_motion(report, cfg, records, progress, num_workers)
    return report


def measure_motion(report: CheckReport, cfg: VideoDataConfig, records: list, progress: bool = False,
                   num_workers: int = 0) -> None:
    """Fill report.motion / calibration: every video's eval-clip motion; the fixed calibration of ``cfg``
    (data.motion_percentiles / data.motion_calibration) if set, else the dataset's own from these values —
    the same calibration training computes with ``data.motion_calibration_clips: 0``."""
    present = [r for r in records if r.path.is_file()]
    values = clip_motions(cfg, present, assign_buckets(present, cfg.sizes(), cfg.reader), num_workers=num_workers,
                          progress=progress)
    report.motion = [(str(r.path), v) for r, v in zip(present, values) if v is not None]
    fixed = cfg.motion_bucket == "estimate" and (cfg.motion_percentiles is not None or cfg.motion_calibration)
    if fixed:
        report.calibration = motion_calibration_for(cfg, records, present)
        report.calibration_kind = "percentiles" if cfg.motion_percentiles is not None else "file"
    elif report.motion:
        settings = calibration_settings(dataclasses.replace(cfg, motion_calibration_clips=0), records)
        report.calibration = MotionCalibration.from_values([v for _, v in report.motion], settings=settings)
        report.calibration_kind = "dataset"


def format_report(report: CheckReport, cfg: VideoDataConfig, limit: int = 20) -> str:
    rate = f"target_fps={cfg.target_fps}" if cfg.target_fps is not None else f"stride={cfg.stride}"
    lines = [f"data check: {cfg.path}  ({cfg.num_frames} frames at {rate}, short_policy={cfg.short_policy}, "
             f"min_stride={cfg.min_stride})",
             f"  rows: {report.total}   usable: {report.usable}   readable: {report.readable}   "
             f"missing: {len(report.missing)}   unreadable: {len(report.unreadable)}   "
             f"too short: {len(report.too_short)}",
             f"  readers used: {dict(report.backends)}"]
    for title, rows in (("missing files", report.missing), ("unreadable", report.unreadable),
                        ("too short (frames in window, fps)", report.too_short)):
        if rows:
            lines.append(f"  {title}:")
            lines += [f"    {r if isinstance(r, str) else ' | '.join(str(x) for x in r)}" for r in rows[:limit]]
            if len(rows) > limit:
                lines.append(f"    ... and {len(rows) - limit} more (use --json for all)")
    for title, hist in (("source fps", report.fps_histogram), ("clip fps_id", report.fps_id_histogram)):
        if hist:
            peak = max(hist.values())
            lines.append(f"  {title} histogram:")
            lines += [f"    {k:>8}: {v:>6} {'#' * max(1, round(40 * v / peak))}" for k, v in sorted(hist.items())]
    summary = report.motion_summary()
    if summary is not None:
        lines += format_motion(summary)
    return "\n".join(lines)


def format_motion(summary: dict) -> list[str]:
    """Text lines of a motion summary (CheckReport.motion_summary)."""
    lines = [f"  motion ({UNIT}, eval clip of each video; docs/math.md §13): {summary['num_clips']} clips"]
    if not summary["num_clips"]:
        return lines
    pct = "  ".join(f"p{q} {v:.4g}" for q, v in summary["percentiles"].items())
    lines.append(f"    raw: {pct}  mean {summary['mean']:.4g}")
    cal = summary.get("calibration")
    if cal is not None:
        knots = ", ".join(f"p{q:g}={r:.4g}" for q, r in zip(cal["levels"], cal["raw"])
                          if q in (0, 5, 50, 95, 100) or len(cal["levels"]) <= 5)
        lines.append(f"    calibration ({summary['calibration_kind']}; raw -> bucket 255*level/100): {knots}")
        hist = summary["bucket_histogram"]
        peak = max(hist.values()) or 1
        lines.append("  motion_bucket_id histogram:")
        lines += [f"    {k:>3}-{k + 15:<3}: {v:>6} {'#' * round(40 * v / peak)}" for k, v in hist.items()]
    return lines
