"""The "webdataset" source: tar shards of samples, read with the standard library's tarfile.

WebDataset convention: a member "a/b/000123.jpg" belongs to sample "a/b/000123" (the name up to
the first dot of its base name) with extension "jpg"; all members of a key form one sample. The
image is the first member with an image extension; the caption comes from .txt / .caption or
the "caption" of .json; the class from .cls (an int, or else a name) or the "class" / "label" of
.json. A member whose name has no key.extension form, a sample without an image and a shard cut
short all become items with a reason, and so does a member whose name is absolute or has a `..`
component (its key becomes the row's origin and image path, which must stay inside the source:
such a member is never read). A unit is a shard, or a slice of `unit_size` samples of a
large one; its identity is the shard's relative name, size and sample range.

Planning reads every member header once and puts each unit's member offsets in its payload, so
reading a unit seeks straight to its members instead of scanning the shard again. tarfile stops
quietly at a cut or corrupt header; the scan checks where it stopped, so the members it never
saw are reported, not lost.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from aigi.curation.sources.base import RawItem, Source, SourceError, SourceUnit
from aigi.curation.sources.columns import class_fields
from aigi.curation.sources.paths import resolve_files

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "tif", "tiff", "bmp"})
# The key's base name is non-empty, starts with no dot and ends at its first dot.
_KEY_EXT = re.compile(r"^((?:.*/)?[^./][^/]*?)\.([^/]+)$")

# (extension, member name, data offset or None when the member is not a regular file, size)
Member = tuple[str, str, int | None, int]
# ("sample", key, members) or ("bad", member name or None for the shard itself, reason)
Item = tuple[str, str | None, Any]


def split_member(name: str) -> tuple[str, str] | None:
    """(key, extension) of a member name, or None when it has no key.extension form."""
    m = _KEY_EXT.match(name)
    return (m.group(1), m.group(2)) if m else None


def scan_shard(tf: tarfile.TarFile) -> list[Item]:
    """The shard's items in member order, each sample with all members of its key; a last "bad"
    item for the shard when the scan could not reach the archive's proper end."""
    samples: dict[str, list[Member]] = {}
    items: list[Item] = []
    stopped = None
    try:
        for m in tf:
            if m.isdir():
                continue
            if m.name.startswith("/") or ".." in m.name.split("/"):
                items.append(("bad", m.name, "member name is absolute or has a '..' component: refused"))
                continue
            parts = split_member(m.name)
            if parts is None:
                items.append(("bad", m.name, "member name has no key.extension form"))
                continue
            key, ext = parts
            if key not in samples:
                samples[key] = []
                items.append(("sample", key, samples[key]))
            samples[key].append((ext, m.name, m.offset_data if m.isreg() else None, m.size))
    except (tarfile.TarError, EOFError, OSError) as e:
        stopped = f"shard cut short after {len(tf.members)} members: {e}"
    stopped = stopped or _end_problem(tf)
    out = [(what, key, tuple(v) if what == "sample" else v) for what, key, v in items]
    return out + ([("bad", None, stopped)] if stopped else [])


def _end_problem(tf: tarfile.TarFile) -> str | None:
    """Why the archive ended where tarfile stopped, unless that is a proper end (a zero block or
    the end of the file): tarfile ends quietly at a partial or invalid header."""
    n = len(tf.members)
    try:
        tf.fileobj.seek(tf.offset)
        block = tf.fileobj.read(tarfile.BLOCKSIZE)
    except (tarfile.TarError, EOFError, OSError) as e:
        return f"shard cut short after {n} members: {e}"
    if not block.strip(b"\0"):  # end-of-archive zeros (possibly cut) or end of file
        return None
    if len(block) < tarfile.BLOCKSIZE:
        return f"shard cut short after {n} members: a partial header at byte {tf.offset}"
    return f"unreadable member header at byte {tf.offset} after {n} members"


def _fetch(f: BinaryIO, member: Member) -> bytes:
    _, name, offset, size = member
    if offset is None:
        raise ValueError(f"{name} is not a regular file (links are not followed)")
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise EOFError(f"{name}: unexpected end of data ({len(data)} of {size} bytes)")
    return data


def read_sample(
    f: BinaryIO, members: tuple[Member, ...], id_names: str
) -> tuple[bytes | None, str | None, str | None, int | None, str | None]:
    """(image bytes, caption, class_name, class_id, error) of one sample; `f` is the tar stream."""
    by_ext = {m[0].lower(): m for m in reversed(members)}  # the first member wins per extension
    image = next((m for m in members if m[0].lower().rsplit(".", 1)[-1] in IMAGE_EXTS), None)
    if image is None:
        exts = ", ".join("." + m[0] for m in members)
        return None, None, None, None, f"sample has no image member (has {exts})"

    def text(ext: str) -> str:
        return _fetch(f, by_ext[ext]).decode("utf-8").strip()

    try:
        meta = json.loads(text("json")) if "json" in by_ext else {}
        meta = meta if isinstance(meta, dict) else {}
        caption = next((text(e) for e in ("txt", "caption") if e in by_ext), None)
        if caption is None and isinstance(meta.get("caption"), str):
            caption = meta["caption"]
        cls: Any = None
        if "cls" in by_ext:
            value = text("cls")
            cls = int(value) if re.fullmatch(r"-?\d+", value) else value
        elif "class" in meta or "label" in meta:
            cls = meta.get("class", meta.get("label"))
        data = _fetch(f, image)
    except (ValueError, EOFError, OSError, tarfile.TarError) as e:  # UnicodeDecodeError included
        return None, None, None, None, f"unreadable sample: {e}"
    name, class_id, error = class_fields(cls, None, id_names)
    return (None if error else data), caption, name, class_id, error


class WebDatasetSource(Source):
    kind = "webdataset"

    def _shards(self) -> list[tuple[Path, str]]:
        return resolve_files(self.config.path, SHARD_SUFFIXES, self.config.recursive, "tar shard")

    def units(self, unit_size: int | None = None) -> list[SourceUnit]:
        size = self._unit_size(unit_size)
        out = []
        for path, rel in self._shards():
            nbytes = path.stat().st_size
            try:
                with tarfile.open(path, "r:*") as tf:
                    items = scan_shard(tf)
            except (tarfile.TarError, EOFError, OSError) as e:
                items = [("bad", None, f"cannot open tar shard: {' '.join(str(e).split())}")]
            for a in range(0, len(items), size):
                b = min(a + size, len(items))
                listing = {"shard": rel, "size": nbytes, "items": [a, b]}
                payload = (str(path), rel, tuple(items[a:b]))
                out.append(SourceUnit(f"{rel}[{a}:{b}]", b - a, listing, payload))
        return out

    def read(self, unit: SourceUnit) -> Iterator[RawItem]:
        path, rel, items = unit.payload
        if Path(path).stat().st_size != unit.listing["size"]:
            raise SourceError(f"tar shard {rel} changed since planning; plan again")
        tf, opened = None, None
        if any(what == "sample" for what, _, _ in items):
            try:
                tf = tarfile.open(path, "r:*")  # its fileobj undoes any compression, seekable
            except (tarfile.TarError, EOFError, OSError) as e:
                opened = f"cannot open tar shard: {' '.join(str(e).split())}"
        try:
            for what, key, value in items:
                origin = f"{rel}/{key}" if key is not None else rel
                if what == "bad" or tf is None:
                    yield RawItem(origin, None, error=value if what == "bad" else opened)
                    continue
                data, caption, name, class_id, error = read_sample(
                    tf.fileobj, value, self.config.class_id_names
                )
                yield RawItem(origin, data, caption, name, class_id, error)
        finally:
            if tf is not None:
                tf.close()
