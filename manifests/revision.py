"""The resolved identity of a model's weights, recorded as provenance with every generated image.

A hub id resolves to the commit of its cached snapshot; a local folder inside a Hugging Face
cache snapshot resolves to that snapshot's commit; any other local folder resolves to a hash of
its files, so a fine-tuned checkpoint on disk still has a name that changes when its weights do.
Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

CHUNK = 1 << 20
SNAPSHOT_RE = re.compile(r"/snapshots/([0-9a-f]{40})(?:/|$)")

# (absolute folder, listing of (relative path, size, mtime_ns)) -> resolved revision.
# A worker resolves the same folder for every unit it runs; hashing gigabytes each time would
# dominate small units.
_FOLDER_CACHE: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def resolve_revision(model: str, revision: str = "") -> str:
    """The commit or weights hash of `model` (a hub id or a local folder); offline only.

    A hub id that is not in the local cache resolves to `revision`, or "unresolved" if empty.
    """
    path = Path(model)
    if path.is_dir():
        return _folder_revision(path)
    return _hub_revision(model, revision)


def _hub_revision(model: str, revision: str) -> str:
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(model, revision=revision or None, local_files_only=True)
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError) or not a valid repo id
        return revision or "unresolved"
    commit = _snapshot_commit(Path(snapshot).resolve())
    return commit or revision or "unresolved"


def _folder_revision(folder: Path) -> str:
    folder = folder.resolve()
    commit = _snapshot_commit(folder)
    if commit:
        return commit
    files = _listing(folder)
    key = (str(folder), tuple((rel, st.st_size, st.st_mtime_ns) for rel, st in files))
    if key not in _FOLDER_CACHE:
        _FOLDER_CACHE[key] = "sha256:" + _hash_files(folder, [rel for rel, _ in files])[:16]
    return _FOLDER_CACHE[key]


def _snapshot_commit(path: Path) -> str:
    m = SNAPSHOT_RE.search(path.as_posix())
    return m.group(1) if m else ""


def _listing(folder: Path) -> list[tuple[str, os.stat_result]]:
    """Non-hidden files under `folder`, sorted by relative posix path, with their stat."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            p = Path(root) / name
            if p.is_file():
                out.append((p.relative_to(folder).as_posix(), p.stat()))
    return sorted(out, key=lambda item: item[0])


def _hash_files(folder: Path, rels: list[str]) -> str:
    total = hashlib.sha256()
    for rel in rels:
        h = hashlib.sha256()
        size = 0
        with open(folder / rel, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
        total.update(f"{rel}\0{size}\0{h.hexdigest()}\n".encode())
    return total.hexdigest()
