"""`--check-data`: scan every video of a source and print a summary before training on it.

    tdd-check-data --data MANIFEST_OR_FOLDER [--num-frames 14 --target-fps 7] [--json]

For each row: does the file exist, can it be opened and its first and last requested frames be
decoded (with the same reader choice and decord -> PyAV fallback as training), is it long enough
for one clip under the configured fps/stride and ``short_policy``. Prints counts, the unreadable
files with reasons, the too-short ones, and histograms of source fps and of the clips' fps_id.
Exit status 0 if every row is usable, 1 otherwise, 2 on a bad manifest/config.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tdd_video.data.clips import fps_id_for, frame_window, stride_for, usable_stride
from tdd_video.data.config import VideoDataConfig
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

    @property
    def usable(self) -> int:
        return self.readable - len(self.too_short)

    def to_dict(self) -> dict:
        return {"total": self.total, "readable": self.readable, "usable": self.usable,
                "missing": self.missing, "unreadable": [list(x) for x in self.unreadable],
                "too_short": [list(x) for x in self.too_short],
                "fps_histogram": dict(sorted(self.fps_histogram.items())),
                "fps_id_histogram": dict(sorted(self.fps_id_histogram.items())),
                "backends": dict(self.backends)}


def check_source(cfg: VideoDataConfig, progress: bool = False) -> CheckReport:
    """Scan all records of ``cfg``'s source (see module docstring)."""
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
    return report


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
    return "\n".join(lines)
