"""Content ids, fingerprints and derived seeds.

Everything that names data is a hash of what produced it, so the same config on the same inputs
names the same files and rows, and a re-run can tell finished work from stale work.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

SEED_BITS = 63  # fits int64 columns and torch.Generator.manual_seed


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal objects give equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default)


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"cannot fingerprint object of type {type(obj).__name__}")


def fingerprint(obj: Any, length: int = 16) -> str:
    """A short, stable hex digest of a JSON-able object."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def content_id(*parts: Any, length: int = 32) -> str:
    """A stable id for a row: the hash of the things that define it."""
    return fingerprint(list(parts), length=length)


def derive_seed(*parts: Any) -> int:
    """A seed from its context, e.g. (run_seed, generator, prompt_id, k).

    Independent streams for every image, reproducible from the row alone: no global RNG.
    """
    digest = hashlib.sha256(canonical_json(list(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """A file's sha256, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
