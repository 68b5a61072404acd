"""`aigi export RUN --format webdataset --out DIR`: a run's curated corpus as WebDataset tar shards.

Layout of DIR::

    manifest.json                     every shard: path, split, samples, bytes, sha256
    <split>/<split>-NNNNN.tar         split = train / val / test (and `dropped` with include_dropped)

Each sample is three members named by its key, the row's image_id: `key.<ext>` (the stored image
bytes, the normalized ones when the run normalizes; ext from the row's format: jpg, png, webp,
...), `key.json` (every column of the row but the image bytes, with the curation columns of the
Hugging Face export) and `key.cls` (the label as text, "0" real / "1" generated); a row with a
mask adds `key.mask.<ext>` after them. The rows are those `aigi export` writes (same selection,
same columns: `export_rows` below). Members carry a fixed mtime, uid, gid, owner names and mode,
so the same run exports byte-identical shards. A shard holds at most `shard_bytes` (tar headers and
padding counted), unless one sample alone is larger: it then gets a shard of its own. The folder
is written beside DIR and renamed into place.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aigi.manifests.export import (
    EXPORT,
    _load_config,
    _split_rank,
    export_rows,
)
from aigi.manifests.ids import sha256_file
from aigi.manifests.rundir import RunDir

WDS_FORMAT = "aigi.webdataset"
WDS_VERSION = 1
SHARD_BYTES = 1 << 30
MTIME = 0  # every member's mtime: 1970-01-01, so exports of one run are byte-identical
MODE = 0o644
_TAR_FORMAT = tarfile.PAX_FORMAT
_EXT = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp",
        "tiff": "tif", "tif": "tif"}
_BINARY = set(EXPORT.image_columns)


def image_ext(fmt: str | None, data: bytes) -> str:
    """The member extension of image bytes: from the row's format, else sniffed with Pillow."""
    name = (fmt or "").lower()
    if not name:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            name = (im.format or "").lower()
    ext = _EXT.get(name, name)
    if not ext or not ext.isalnum():
        raise ValueError(f"cannot name an extension for image format {fmt!r}")
    return ext


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # NaN / inf are not JSON
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def sample_members(row: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(member name, bytes) of one exported row, in the order they are written."""
    key = row["image_id"]
    if not key or "/" in key or "." in key:
        raise ValueError(f"image_id {key!r} cannot be a WebDataset key")
    data = row["image"]["bytes"]
    meta = {k: _jsonable(v) for k, v in row.items() if k not in _BINARY}
    meta["image_path"] = row["image"].get("path")
    out = [
        (f"{key}.{image_ext(row['format'], data)}", data),
        (f"{key}.json", json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")),
        (f"{key}.cls", str(int(row["label"])).encode("ascii")),
    ]
    mask = (row.get("mask") or {}).get("bytes")
    if mask:
        out.append((f"{key}.mask.{image_ext(None, mask)}", mask))
    return out


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode = size, MTIME, MODE
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    ti.type = tarfile.REGTYPE
    return ti


def _member_bytes(ti: tarfile.TarInfo) -> int:
    """Bytes a member takes in the archive: its header(s) and its padded data."""
    header = len(ti.tobuf(_TAR_FORMAT, tarfile.ENCODING, "surrogateescape"))
    return header + -(-ti.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _closed_size(written: int) -> int:
    """Size of an archive with `written` member bytes once closed (end blocks, record padding)."""
    end = written + 2 * tarfile.BLOCKSIZE
    return -(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


@dataclass
class _ShardInfo:
    path: str  # relative to the export folder
    split: str
    samples: int = 0
    bytes: int = 0
    sha256: str = ""


@dataclass
class _SplitWriter:
    root: Path
    split: str
    shard_bytes: int
    shards: list[_ShardInfo] = field(default_factory=list)
    _tar: tarfile.TarFile | None = None
    _written: int = 0

    def add(self, members: list[tuple[str, bytes]]) -> None:
        infos = [(_tarinfo(n, len(b)), b) for n, b in members]
        size = sum(_member_bytes(ti) for ti, _ in infos)
        if self._tar is not None and self._written and _closed_size(self._written + size) > self.shard_bytes:
            self._close_tar()
        if self._tar is None:
            rel = f"{self.split}/{self.split}-{len(self.shards):05d}.tar"
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            self._tar = tarfile.open(self.root / rel, "w", format=_TAR_FORMAT)
            self.shards.append(_ShardInfo(rel, self.split))
            self._written = 0
        for ti, b in infos:
            self._tar.addfile(ti, io.BytesIO(b))
        self._written += size
        self.shards[-1].samples += 1

    def _close_tar(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def close(self) -> None:
        self._close_tar()


def _is_wds_export(path: Path) -> bool:
    try:
        return json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("format") == WDS_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def export_webdataset(run_dir: str | os.PathLike, out_dir: str | os.PathLike, include_dropped: bool = False,
                      shard_bytes: int = SHARD_BYTES) -> Path:
    """Write the run's curated corpus to `out_dir` as WebDataset tar shards; return it.

    `out_dir` may not exist, be empty, or hold an earlier webdataset export (it is then
    replaced); anything else is refused."""
    if shard_bytes <= 0:
        raise ValueError(f"shard_bytes must be > 0, got {shard_bytes}")
    rd = RunDir(Path(run_dir))
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not _is_wds_export(out):
        raise FileExistsError(f"{out}: exists and is not an aigi webdataset export; choose an empty or new folder")
    _, run_info = _load_config(rd)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        writers: dict[str, _SplitWriter] = {}
        for table in export_rows(rd.root, include_dropped):
            for row in table.to_pylist():
                w = writers.get(row["split"])
                if w is None:
                    w = writers[row["split"]] = _SplitWriter(tmp, row["split"], shard_bytes)
                w.add(sample_members(row))
        shards: list[_ShardInfo] = []
        for w in writers.values():
            w.close()
            shards += w.shards
        for s in shards:
            p = tmp / s.path
            s.bytes = p.stat().st_size
            s.sha256 = sha256_file(p)
        shards.sort(key=lambda s: (_split_rank(s.split), s.path))
        manifest = {
            "format": WDS_FORMAT,
            "version": WDS_VERSION,
            "run": rd.root.resolve().name,
            "config_fingerprint": run_info.get("config_fingerprint"),
            "include_dropped": include_dropped,
            "shard_bytes": shard_bytes,
            "members": {"image": "<image_id>.<ext>", "json": "<image_id>.json", "cls": "<image_id>.cls",
                        "mask": "<image_id>.mask.<ext> (when the row has a mask)"},
            "labels": {"0": "real", "1": "generated"},
            "splits": {sp: sum(s.samples for s in shards if s.split == sp)
                       for sp in sorted({s.split for s in shards}, key=_split_rank)},
            "shards": [{"path": s.path, "split": s.split, "samples": s.samples, "bytes": s.bytes,
                        "sha256": s.sha256} for s in shards],
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
