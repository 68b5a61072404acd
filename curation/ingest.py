"""The "imagefolder" real source: list the files under a folder and turn each image into an
IMAGES row; `ingest_bytes` does the same for an encoded image from any real source.

The original bytes are stored unchanged (no re-encoding): the stored codec and its quality are
exactly what a detector would otherwise learn as a shortcut, so they are recorded, not hidden.
Decoding goes through `aigi.manifests.imagebytes.decode`, the decoder hashes and features use, so
the row's width/height and `conversion` describe the picture every later stage sees. Nothing under
the root is lost: `list_files` names each non-hidden file that is not an image candidate with a
reason, and `ingest_file` raises BadImage with a reason for each candidate it cannot use.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from aigi.manifests.ids import content_id, sha256_bytes
from aigi.manifests.imagebytes import DEFAULT_MAX_PIXELS, BadImage, decode
from aigi.manifests.schema import IMAGES

__all__ = [
    "IMAGE_EXTENSIONS", "BadImage", "estimate_jpeg_quality", "folder_class", "ingest_bytes",
    "ingest_file", "list_files", "list_images",
]  # fmt: skip

# What decode() accepts (manifests.imagebytes.DECODABLE_FORMATS), by the usual file names. The
# content, not the name, decides the format: a PNG named .jpg is ingested as PNG.
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".gif", ".tif", ".tiff", ".bmp",
    ".dib", ".ppm", ".pgm", ".pbm", ".pnm", ".avif", ".jp2", ".j2k", ".jpf", ".jpx",
)  # fmt: skip

# Images in formats decode() does not take: named as such, not as "not an image".
_OTHER_IMAGE_EXTENSIONS = (
    ".heic", ".heif", ".jxl", ".svg", ".psd", ".ico", ".tga", ".eps", ".exr", ".hdr", ".dng",
    ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".raw",
)  # fmt: skip

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


def list_images(root: Path, recursive: bool = True) -> list[str]:
    """Relative posix paths of the image files under `root`, sorted; hidden files/dirs skipped."""
    return list_files(root, recursive)[0]


def list_files(root: Path, recursive: bool = True) -> tuple[list[str], list[tuple[str, str]]]:
    """(images, skipped) under `root`, each sorted by relative posix path.

    `images` are the candidates by extension (case-insensitive); `skipped` holds (relpath, reason)
    for every other non-hidden entry, so a caller can quarantine it: other files, entries that are
    not regular files, and (non-recursive) the subfolders not searched. Hidden names (".x") are
    left out, with everything under them.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder is not a directory: {root}")
    images: list[str] = []
    skipped: list[tuple[str, str]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                rel = _posix(rel_dir, entry.name)
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append(rel)
                    else:
                        skipped.append((rel + "/", "folder not searched (recursive=false)"))
                    continue
                reason = _skip_reason(entry, rel)
                if reason is None:
                    images.append(rel)
                else:
                    skipped.append((_printable(rel), reason))
    return sorted(images), sorted(skipped)


def _posix(rel_dir: str, name: str) -> str:
    return f"{rel_dir}/{name}" if rel_dir else name


def _printable(rel: str) -> str:
    """A name that is not valid UTF-8 (kept by Python as surrogates) in a form Arrow can store."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _skip_reason(entry: os.DirEntry, rel: str) -> str | None:
    """None for an image candidate, else why the entry is not one."""
    if entry.is_symlink() and not os.path.exists(entry.path):
        return "unreadable: broken symbolic link"
    if entry.is_dir():
        return "symbolic link to a folder (not followed)"
    if not entry.is_file():
        return "not a regular file"
    if _printable(rel) != rel:
        return "file name is not valid UTF-8"
    ext = os.path.splitext(entry.name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return None
    if ext in _OTHER_IMAGE_EXTENSIONS:
        return f"unsupported image format ({ext})"
    return f"not an image file ({ext or 'no extension'})"


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

    `img` is anything with Pillow's `quantization` attribute: a JPEG image or a `Decoded`.

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


def ingest_file(
    root: Path,
    relpath: str,
    source: str,
    class_from_folder: bool = False,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict:
    """One IMAGES row for the file `root/relpath`, with its bytes unchanged; BadImage if unusable.

    With `class_from_folder`, the parent folder names the class (see `folder_class`).
    """
    try:
        data = (Path(root) / relpath).read_bytes()
    except OSError as exc:  # vanished, permissions, a folder named like an image, ...
        raise BadImage(relpath, f"unreadable: {exc.strerror or exc}") from exc
    class_name, class_id = folder_class(relpath) if class_from_folder else (None, None)
    return ingest_bytes(
        data, relpath, source, class_name=class_name, class_id=class_id, max_pixels=max_pixels
    )


def folder_class(relpath: str) -> tuple[str | None, int | None]:
    """(class_name, class_id) named by the parent folder of `relpath`: an ImageNet-1k synset
    ("n01440764/x.jpg" -> ("tench", 0)) or class name gets its id; another name is kept with no
    id; a file at the root has no class."""
    parent = PurePosixPath(relpath).parent
    if str(parent) == ".":
        return None, None
    from aigi.prompts.classes import lookup_class

    found = lookup_class(parent.name)
    return (found[1], found[0]) if found else (parent.name, None)


def ingest_bytes(
    data: bytes,
    origin: str,
    source: str,
    *,
    caption: str | None = None,
    class_name: str | None = None,
    class_id: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    mask: Any = None,
) -> dict:
    """One IMAGES row for an encoded image from any real source, its bytes unchanged.

    `origin` names the item in its source (a relative path, a tar member key, a dataset row key);
    it and the bytes' sha256 make the image_id. width/height are those of the decoded picture
    (after EXIF rotation), `conversion` how it was decoded when not plainly. BadImage (with a
    short reason) if unusable. `mask` (a source's object mask: encoded image bytes, or a box
    [x, y, width, height] in pixels) is stored as a PNG mask of the decoded picture's size.
    """
    decoded = decode(data, max_pixels, origin=origin)
    stored_mask = None if mask is None else source_mask(mask, (decoded.width, decoded.height), origin)
    sha = sha256_bytes(data)
    row: dict[str, Any] = dict.fromkeys(IMAGES.arrow.names)
    row.update(
        image_id=content_id("real", source, origin, sha),
        image={"bytes": data, "path": origin},
        label=0,
        source=source,
        sha256=sha,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        jpeg_quality=estimate_jpeg_quality(decoded) if decoded.format == "JPEG" else None,
        prompt=caption,
        class_id=class_id,
        class_name=class_name,
        origin=origin,
        conversion=decoded.conversion,
        mask=stored_mask,
    )
    if stored_mask is not None:
        from aigi.generators._aligned import mask_area
        from aigi.manifests.imagebytes import decode_rgb

        row["mask_area"] = mask_area(decode_rgb(stored_mask["bytes"]))
    return row


def source_mask(value: Any, size: tuple[int, int], origin: str) -> dict:
    """A source's mask as a stored image cell (PNG, "L", white = the object), at `size`."""
    import io

    from PIL import Image, ImageDraw

    from aigi.manifests.imagebytes import encode_png

    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(value))) as im:
                im.load()
                m = im.convert("L")
        except Exception as exc:
            raise BadImage(origin, f"mask: cannot decode: {exc}") from exc
        if m.size != size:
            raise BadImage(origin, f"mask: size {m.size[0]}x{m.size[1]} differs from the image's {size[0]}x{size[1]}")
        m = m.point(lambda v: 255 if v > 127 else 0)
    elif isinstance(value, (list, tuple)) and len(value) == 4:
        x, y, w, h = (float(v) for v in value)
        if w <= 0 or h <= 0:
            raise BadImage(origin, f"mask: empty box {list(value)}")
        m = Image.new("L", size, 0)
        ImageDraw.Draw(m).rectangle([round(x), round(y), round(x + w) - 1, round(y + h) - 1], fill=255)
    else:
        raise BadImage(origin, f"mask: expected image bytes or a box [x, y, w, h], got {type(value).__name__}")
    return {"bytes": encode_png(m), "path": None}
