"""Resolve a source `path` (a file, a folder, or a brace/glob pattern) to files with stable names.

Each file gets a name relative to the part of `path` the user chose (the folder, or the pattern's
fixed directory), so the same data under another directory gets the same names: names, not
absolute paths, are what unit identities and item origins are built from.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from aigi.curation.sources.base import SourceError

_MAGIC = re.compile(r"[*?\[{]")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion: "s-{000..002}.tar" and "{a,b}/x" (nesting allowed).

    A range keeps the zero padding of its bounds, as WebDataset shard lists are written.
    """
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth = 0
    for end in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[end], 0)
        if depth == 0:
            break
    else:
        raise SourceError(f"unbalanced braces in {pattern!r}")
    inner, head, tail = pattern[start + 1 : end], pattern[:start], pattern[end + 1 :]
    m = _RANGE.match(inner)
    if m:
        a, b = m.groups()
        padded = (len(a) > 1 and a[0] == "0") or (len(b) > 1 and b[0] == "0")
        width = max(len(a), len(b)) if padded else 0
        step = 1 if int(b) >= int(a) else -1
        options = [str(i).zfill(width) for i in range(int(a), int(b) + step, step)]
    else:
        options = _split_top_level(inner)
        if len(options) < 2:
            raise SourceError(f"brace group {{{inner}}} in {pattern!r} is neither a,b nor 0..9")
    tails = expand_braces(tail)
    return [head + o + t for opt in options for o in expand_braces(opt) for t in tails]


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def resolve_files(
    path: str, suffixes: tuple[str, ...], recursive: bool, what: str
) -> list[tuple[Path, str]]:
    """(file, relative posix name) pairs, sorted by name; an error names what is missing.

    A folder contributes its files ending in `suffixes` (hidden ones skipped); a pattern
    contributes every match (brace expansion first, then glob), each expanded name that is not
    a pattern must exist.
    """
    p = Path(path)
    if p.is_file():
        return [(p, p.name)]
    if p.is_dir():
        found = []
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            for name in filenames:
                if not name.startswith(".") and name.lower().endswith(suffixes):
                    f = Path(dirpath) / name
                    found.append((f, f.relative_to(p).as_posix()))
        if not found:
            raise SourceError(f"no {what} files ({', '.join(suffixes)}) in folder {path}")
        return sorted(found, key=lambda x: x[1])
    if not _MAGIC.search(path):
        raise SourceError(f"{what} path not found: {path}")
    prefix = path[: _MAGIC.search(path).start()]
    base = (prefix if prefix.endswith(("/", os.sep)) else os.path.dirname(prefix)) or "."
    out: dict[str, Path] = {}
    for pat in expand_braces(path):
        if _MAGIC.search(pat):
            matches = [Path(m) for m in glob.glob(pat, recursive=True)]
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise SourceError(f"no {what} file matches {pat}")
        else:
            if not Path(pat).is_file():
                raise SourceError(f"{what} file not found: {pat} (from {path})")
            matches = [Path(pat)]
        for m in matches:
            out.setdefault(Path(os.path.relpath(m, base)).as_posix(), m)
    return [(f, rel) for rel, f in sorted(out.items())]
