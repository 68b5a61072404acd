"""The "imagefolder" real source: list image files under a folder and turn each into an IMAGES row.

The original bytes are stored unchanged (no re-encoding): the stored codec and its quality are
exactly what a detector would otherwise learn as a shortcut, so they are recorded, not hidden.
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath
from typing import Any

from aigi.manifests.ids import content_id, sha256_bytes
from aigi.manifests.schema import IMAGES

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")

# Pillow opens many camera JPEGs (those with an embedded preview) as "MPO"; the stored codec is
# still baseline JPEG, and the format column must not split one codec into two values.
_FORMAT_ALIASES = {"MPO": "JPEG"}

# IJG (libjpeg) standard luminance quantization table, natural (row-major) order.
_STD_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


class BadImage(ValueError):
    """A file that cannot be used as an image; `reason` is short enough for a quarantine row."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def list_images(root: Path, recursive: bool = True) -> list[str]:
    """Relative posix paths of the image files under `root`, sorted; hidden files/dirs skipped."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder is not a directory: {root}")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending into hidden (or, non-recursive, any) dirs.
        dirnames[:] = [d for d in dirnames if not d.startswith(".")] if recursive else []
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            found.append((rel_dir / name).as_posix())
    return sorted(found)


def _scaled_table(quality: int) -> list[int]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(max((v * scale + 50) // 100, 1), 255) for v in _STD_LUMINANCE]


_ZIGZAG = tuple(
    r * 8 + c
    for s in range(15)
    for r, c in (
        [(i, s - i) for i in range(8) if 0 <= s - i < 8]
        if s % 2
        else [(s - i, i) for i in range(8) if 0 <= s - i < 8]
    )
)
_TABLES_NATURAL = {q: _scaled_table(q) for q in range(1, 101)}
_TABLES_ZIGZAG = {q: [t[i] for i in _ZIGZAG] for q, t in _TABLES_NATURAL.items()}


def estimate_jpeg_quality(img: Any) -> int | None:
    """The IJG quality (1..100) whose luminance table is closest to the image's, or None.

    Pillow 13 returns the tables in natural order, older releases in zigzag order; both orders of
    every candidate are compared, so the estimate does not depend on the Pillow version. Tables
    from non-IJG encoders get the nearest IJG quality (an estimate, not a recovery).
    """
    tables = getattr(img, "quantization", None)
    if not tables or 0 not in tables:
        return None
    table = list(tables[0])
    if len(table) != 64:
        return None
    best_q, best_d = None, None
    for q in range(1, 101):
        for cand in (_TABLES_NATURAL[q], _TABLES_ZIGZAG[q]):
            d = sum(abs(a - b) for a, b in zip(table, cand, strict=True))
            # `<=` keeps the highest quality among equal tables (very low qualities saturate at 255).
            if best_d is None or d <= best_d:
                best_q, best_d = q, d
    return best_q


def _decode_error(relpath: str, exc: Exception) -> BadImage:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return BadImage(relpath, "cannot decode: not a recognized image format")
    msg = str(exc) or type(exc).__name__
    if "truncat" in msg.lower():
        return BadImage(relpath, "truncated")
    return BadImage(relpath, f"cannot decode: {msg}")


def ingest_file(root: Path, relpath: str, source: str, class_from_folder: bool = False) -> dict:
    """One IMAGES row for the file `root/relpath`, with its bytes unchanged; BadImage if unusable."""
    data = (Path(root) / relpath).read_bytes()
    parent = PurePosixPath(relpath).parent
    class_name = parent.name if class_from_folder and str(parent) != "." else None
    return ingest_bytes(data, relpath, source, class_name=class_name)


def ingest_bytes(
    data: bytes,
    origin: str,
    source: str,
    *,
    caption: str | None = None,
    class_name: str | None = None,
    class_id: int | None = None,
) -> dict:
    """One IMAGES row for an encoded image from any real source, its bytes unchanged.

    `origin` names the item in its source (a relative path, a tar member key, a dataset row key);
    it and the bytes' sha256 make the image_id. BadImage (with a short reason) if unusable.
    """
    from PIL import Image

    if not data:
        raise BadImage(origin, "empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        # verify() checks structure only and leaves the image unusable; a second open + load()
        # decodes every pixel and catches truncation that verify() lets through (e.g. JPEG).
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            width, height = im.size
            fmt = _FORMAT_ALIASES.get(im.format or "", im.format)
            quality = estimate_jpeg_quality(im) if fmt == "JPEG" else None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        raise _decode_error(origin, exc) from exc
    if not fmt:
        raise BadImage(origin, "cannot decode: unknown format")

    sha = sha256_bytes(data)
    row: dict[str, Any] = dict.fromkeys(IMAGES.arrow.names)
    row.update(
        image_id=content_id("real", source, origin, sha),
        image={"bytes": data, "path": origin},
        label=0,
        source=source,
        sha256=sha,
        width=width,
        height=height,
        format=fmt,
        jpeg_quality=quality,
        prompt=caption,
        class_id=class_id,
        class_name=class_name,
        origin=origin,
    )
    return row
