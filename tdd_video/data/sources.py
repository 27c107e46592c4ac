"""Where the videos are: a folder, a CSV/JSONL manifest, or a WebVid-style CSV.

Every source becomes a list of `VideoRecord`. Formats:

* **folder**: every file with a video extension below the folder (recursive, sorted); a sibling
  ``name.txt`` next to ``name.mp4`` holds its caption.
* **manifest** (``.csv`` with a header, or ``.jsonl``, one object per line): column ``path``
  (required), optional ``caption``, ``fps`` (overrides the container's rate), ``motion_bucket_id``,
  ``start`` / ``end`` (seconds), ``width`` / ``height`` (skip probing for bucketing). Relative
  paths resolve against the manifest's folder. Empty cells mean "absent".
* **webvid** (``.csv`` with columns ``videoid``, ``name``, ``page_dir`` as in WebVid-10M's
  metadata): the video of a row is ``<video_root>/<page_dir>/<videoid>.mp4`` or, if that does not
  exist, ``<video_root>/<videoid>.mp4``; ``name`` is the caption. ``video_root`` defaults to the
  CSV's folder.

Errors in a manifest raise ManifestError naming the file, line and column.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("tdd_video.data")

DEFAULT_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".gif", ".m4v")


class ManifestError(ValueError):
    """A manifest file is malformed; the message names the file, line and column."""


@dataclass
class VideoRecord:
    """One video of a data source. ``line`` is the manifest line number (for messages)."""

    path: Path
    caption: str = ""
    fps: float | None = None
    motion_bucket_id: int | None = None
    start: float | None = None
    end: float | None = None
    width: int | None = None
    height: int | None = None
    line: int | None = None


def load_records(source: str, path: str | Path, video_root: str | Path = "",
                 extensions=DEFAULT_EXTENSIONS) -> list[VideoRecord]:
    """Records of a source. ``source`` = auto | folder | manifest | webvid (auto: by path kind)."""
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise FileNotFoundError(f"data source not found: {path}")
    if source == "auto":
        source = detect_source(path)
    if source == "folder":
        if not path.is_dir():
            raise ManifestError(f"{path}: source 'folder' needs a directory")
        return load_folder(path, extensions)
    if source == "manifest":
        return load_manifest(path)
    if source == "webvid":
        return load_webvid(path, video_root or path.parent)
    raise ValueError(f"unknown data source kind {source!r} (auto, folder, manifest, webvid)")


def detect_source(path: Path) -> str:
    """folder for a directory; webvid for a CSV whose header has videoid and page_dir; else manifest."""
    if path.is_dir():
        return "folder"
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if {"videoid", "page_dir"} <= {h.strip() for h in header}:
            return "webvid"
    return "manifest"


def load_folder(root: Path, extensions=DEFAULT_EXTENSIONS) -> list[VideoRecord]:
    exts = {e.lower() for e in extensions}
    records = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in exts:
            txt = p.with_suffix(".txt")
            caption = txt.read_text(encoding="utf-8").strip() if txt.exists() else ""
            records.append(VideoRecord(path=p, caption=caption))
    return records


def _rows(path: Path):
    """Yield (line_number, dict) from a CSV (header required) or JSONL file."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{path}, line {line_no}: invalid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ManifestError(f"{path}, line {line_no}: expected a JSON object, got {type(row).__name__}")
                yield line_no, row
    elif path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            if reader.fieldnames is None:
                raise ManifestError(f"{path}: empty manifest (no header line)")
            for i, row in enumerate(reader):
                yield i + 2, {k.strip(): v for k, v in row.items() if k is not None}
    else:
        raise ManifestError(f"{path}: unknown manifest format {path.suffix!r} (use .csv, .tsv or .jsonl)")


def _number(path: Path, line: int, row: dict, column: str, kind):
    value = row.get(column)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{path}, line {line}, column '{column}': expected a number, got {value!r}") from None
    if kind is int and float(value) != number:
        raise ManifestError(f"{path}, line {line}, column '{column}': expected an integer, got {value!r}")
    if number < 0:
        raise ManifestError(f"{path}, line {line}, column '{column}': must be >= 0, got {value!r}")
    return number


def _common_fields(path: Path, line: int, row: dict) -> dict:
    fields = dict(
        fps=_number(path, line, row, "fps", float),
        motion_bucket_id=_number(path, line, row, "motion_bucket_id", int),
        start=_number(path, line, row, "start", float),
        end=_number(path, line, row, "end", float),
        width=_number(path, line, row, "width", int),
        height=_number(path, line, row, "height", int),
    )
    if fields["fps"] == 0:
        raise ManifestError(f"{path}, line {line}, column 'fps': must be > 0")
    if fields["start"] is not None and fields["end"] is not None and fields["end"] <= fields["start"]:
        raise ManifestError(f"{path}, line {line}, columns 'start'/'end': end ({fields['end']}) "
                            f"must be after start ({fields['start']})")
    return fields


def load_manifest(path: Path) -> list[VideoRecord]:
    base = path.parent
    records = []
    for line, row in _rows(path):
        value = row.get("path")
        if value is None:
            raise ManifestError(f"{path}, line {line}: missing required column 'path' "
                                f"(columns present: {sorted(row)})")
        if not str(value).strip():
            raise ManifestError(f"{path}, line {line}, column 'path': empty")
        video = Path(str(value).strip()).expanduser()
        video = video if video.is_absolute() else base / video
        caption = row.get("caption") or ""
        records.append(VideoRecord(path=video, caption=str(caption), line=line, **_common_fields(path, line, row)))
    return records


def load_webvid(path: Path, video_root: str | Path) -> list[VideoRecord]:
    root = Path(video_root)
    root = root if root.is_absolute() else (Path.cwd() / root)
    records = []
    for line, row in _rows(path):
        for column in ("videoid", "page_dir"):
            if not str(row.get(column) or "").strip():
                raise ManifestError(f"{path}, line {line}: missing value in required column '{column}'")
        vid, page = str(row["videoid"]).strip(), str(row["page_dir"]).strip()
        nested, flat = root / page / f"{vid}.mp4", root / f"{vid}.mp4"
        video = nested if nested.exists() or not flat.exists() else flat
        caption = row.get("name") or row.get("caption") or ""
        records.append(VideoRecord(path=video, caption=str(caption), line=line, **_common_fields(path, line, row)))
    return records


def split_missing(records: list[VideoRecord]) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """(present, missing): records whose file exists and is non-empty, and the others."""
    present, missing = [], []
    for r in records:
        (present if r.path.is_file() else missing).append(r)
    return present, missing


def describe_missing(missing: list[VideoRecord], limit: int = 10) -> str:
    """One readable paragraph listing missing files (the first ``limit``) with their lines."""
    shown = "; ".join(f"{r.path}" + (f" (line {r.line})" if r.line else "") for r in missing[:limit])
    more = f"; ... and {len(missing) - limit} more" if len(missing) > limit else ""
    return f"{len(missing)} data rows point to no file: {shown}{more}"
