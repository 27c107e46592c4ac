"""Webdataset-style .tar shards of image-text pairs, read with random access.

A shard is a plain tar whose members are grouped by *key* (webdataset convention: the member name up
to the first dot of its basename, directory included): ``000123.jpg`` + ``000123.txt`` (caption) and/or
``000123.json`` (an object whose ``caption`` / ``text`` / ``prompt`` field is the caption — the layout
of the LAION-style shards the public TDD code trains on). Image extensions: jpg, jpeg, png, webp.

Instead of streaming, every shard's member headers are indexed once at start-up (``index_shards``,
tar headers only, no image decoding): each sample becomes a record (shard path, byte offset, size,
caption), so shards get the same seeded, sharded, resumable sampling as every other source.
Keys without an image are counted and skipped; unreadable shards raise ShardError naming the file.
"""
from __future__ import annotations

import glob
import io
import json
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CAPTION_FIELDS = ("caption", "text", "prompt", "txt")


class ShardError(ValueError):
    """A shard cannot be listed (not a tar, truncated header, missing)."""


@dataclass
class TarMember:
    """Where one image lives: ``shard`` file, byte ``offset`` of its data, ``size`` in bytes."""

    shard: Path
    name: str
    offset: int
    size: int


def expand_shards(spec: str) -> list[Path]:
    """A folder (all *.tar below it), a glob (``data/{00000..00009}.tar`` brace ranges too) or one file."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return sorted(p.rglob("*.tar"))
    if "{" in spec and ".." in spec:
        head, rest = spec.split("{", 1)
        rng, tail = rest.split("}", 1)
        lo, hi = rng.split("..")
        out = [Path(f"{head}{i:0{len(lo)}d}{tail}") for i in range(int(lo), int(hi) + 1)]
        return [q for q in out if q.exists()]
    if any(c in spec for c in "*?["):
        return [Path(q) for q in sorted(glob.glob(spec))]
    return [p] if p.exists() else []


def _split_key(name: str) -> tuple[str, str]:
    d, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()


def _caption_from_json(raw: bytes) -> str | None:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(obj, dict):
        for k in CAPTION_FIELDS:
            if isinstance(obj.get(k), str):
                return obj[k]
    return None


def index_shard(path: Path) -> tuple[list[tuple[TarMember, str]], int]:
    """([(image member, caption)], number of keys without an image) of one shard."""
    groups: "OrderedDict[str, dict]" = OrderedDict()
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, ext = _split_key(m.name)
                g = groups.setdefault(key, {})
                if ext in IMAGE_EXTS and "image" not in g:
                    g["image"] = TarMember(Path(path), m.name, m.offset_data, m.size)
                elif ext == "txt":
                    g["txt"] = tar.extractfile(m).read().decode("utf-8", "replace").strip()
                elif ext == "json":
                    cap = _caption_from_json(tar.extractfile(m).read())
                    if cap is not None:
                        g["json"] = cap.strip()
    except (tarfile.TarError, OSError) as e:
        raise ShardError(f"{path}: cannot read tar shard ({e})") from None
    out, no_image = [], 0
    for g in groups.values():
        if "image" not in g:
            no_image += 1
            continue
        out.append((g["image"], g.get("txt", g.get("json", ""))))
    return out, no_image


def index_shards(spec: str) -> tuple[list[tuple[TarMember, str]], dict]:
    """Index every shard of `spec` (see expand_shards); returns (samples, {'shards', 'keys_without_image'})."""
    shards = expand_shards(spec)
    if not shards:
        raise ShardError(f"no .tar shards found for {spec!r} (a folder, a glob, a brace range or one file)")
    samples, missing = [], 0
    for s in shards:
        items, n = index_shard(s)
        samples.extend(items)
        missing += n
    return samples, {"shards": len(shards), "keys_without_image": missing}


class ShardReader:
    """Reads member bytes by offset, keeping up to `cache_size` shard files open (LRU, per worker)."""

    def __init__(self, cache_size: int = 4):
        self.cache_size = cache_size
        self._open: "OrderedDict[Path, io.BufferedReader]" = OrderedDict()

    def read(self, m: TarMember) -> bytes:
        f = self._open.pop(m.shard, None)
        if f is None:
            f = open(m.shard, "rb")
            while len(self._open) >= self.cache_size:
                self._open.popitem(last=False)[1].close()
        self._open[m.shard] = f
        f.seek(m.offset)
        data = f.read(m.size)
        if len(data) != m.size:
            raise OSError(f"{m.shard}: member {m.name} truncated ({len(data)} of {m.size} bytes)")
        return data

    def __getstate__(self):          # file handles are per process: workers start with none
        return {"cache_size": self.cache_size, "_open": OrderedDict()}


def write_shard(path, samples: list[tuple[str, bytes, str]], caption_as: str = "txt") -> Path:
    """Write a shard from (key, encoded image bytes with extension in key, caption): tests and tools.

    key like ``"000001.png"``; the caption goes to ``<stem>.txt`` or ``<stem>.json`` ({"caption": ...})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data, caption in samples:
            stem = name.split(".", 1)[0]
            cap = caption.encode() if caption_as == "txt" else json.dumps({"caption": caption}).encode()
            for member, blob in ((name, data), (f"{stem}.{caption_as}", cap)):
                info = tarfile.TarInfo(member)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return path
