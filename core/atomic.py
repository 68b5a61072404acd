"""Atomic file writes: a unique temporary name beside the target, then one rename.

A file that exists is complete (a reader never sees half of it), and two writers of the same
file never share a temporary name, so neither can tear the other's file: the last rename wins
whole. The temporary name starts with a dot and carries `.tmp`, which `clean_partials` finds.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

TMP_SUFFIX = ".tmp"


def temp_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    # pid + random: unique across processes and across threads of one process
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def is_partial(path: Path) -> bool:
    """A temporary file of an atomic write (this module's, or the shard writer's)."""
    return path.name.startswith(".") and path.name.endswith(TMP_SUFFIX)


def clean_partials(folder: str | os.PathLike, stem: str = "") -> list[Path]:
    """Remove the temporary files a killed writer left in `folder` (those of files named
    `stem*` when given). Only call it where no other writer of those files is running: a unit
    cleans its own outputs' folder as it starts, and a unit runs once at a time."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    gone = []
    for p in folder.iterdir():
        if is_partial(p) and p.name[1:].startswith(stem) and p.is_file():
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone
