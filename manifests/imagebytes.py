"""Encoding and decoding of the stored image bytes: the one decoder every stage uses.

Hashes, features and what a user sees through `datasets` must describe the same picture, so every
stage decodes through `decode()`: EXIF orientation applied (as `datasets` does when it shows an
image), 16-bit samples scaled to 8 bits (Pillow's plain `convert("RGB")` clips them, turning a
16-bit PNG almost white), transparency flattened on white, the first of several frames, and
decompression bombs refused. Whatever was not a plain decode is named in `Decoded.conversion`,
a short deterministic string that ingestion stores in the IMAGES `conversion` column.

Colour conversions use Pillow's integer formulas, not ICC profiles: those are exact and the same
on every machine, where a colour-management engine could differ between builds.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

# Pillow's own warning threshold (Image.MAX_IMAGE_PIXELS), about 9,459 x 9,459.
DEFAULT_MAX_PIXELS = 89_478_485

# Formats decode() accepts, whatever a file is called. Pillow can open more (EPS runs
# Ghostscript, for one), but a corpus of photographs has no business holding them.
DECODABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "PPM", "AVIF", "JPEG2000")

# Pillow opens many camera JPEGs (those with an embedded preview) as "MPO"; the stored codec is
# still baseline JPEG, and the format column must not split one codec into two values.
FORMAT_ALIASES = {"MPO": "JPEG"}

# Leading bytes of the accepted formats, to tell a damaged file of a known kind from a non-image.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"RIFF", "WEBP"),
)  # fmt: skip

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ORIENTATION = 0x0112


class BadImage(ValueError):
    """A file that cannot be used as an image; `reason` is short enough for a quarantine row."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    """An image decoded to 8-bit RGB, and how.

    `format` is the stored codec (from the bytes, never the file name), `mode` Pillow's mode of
    the stored pixels, `width`/`height` those of `rgb` (after EXIF rotation), `frames` how many
    frames or pages the file holds (the first is used), `conversion` what was done beyond a plain
    decode (None when nothing), `quantization` the JPEG tables (for a quality estimate).
    """

    rgb: Image.Image
    format: str
    mode: str
    width: int
    height: int
    frames: int
    conversion: str | None
    quantization: dict[int, Any] | None = None


def encode_png(img: Image.Image) -> bytes:
    """Lossless PNG, no ancillary chunks (no timestamps): same pixels → same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def decode_rgb(data: bytes) -> Image.Image:
    """The RGB picture every stage sees; BadImage if the bytes are not a usable image.

    For stored images (checked at ingestion, or written by aigi): the structure check is skipped,
    the pixels are the same."""
    return decode(data, verify=False).rgb


def decode(
    data: bytes,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    *,
    origin: str = "image",
    verify: bool = True,
) -> Decoded:
    """Decode encoded image bytes to 8-bit RGB (see the module docstring for what that involves).

    `max_pixels` refuses larger images before their pixels are decoded (None: only Pillow's own
    limit, Image.MAX_IMAGE_PIXELS, applies). `verify = False` skips Pillow's structure check
    (chunk CRCs), which only bytes not yet accepted need. `origin` names the item in a BadImage's message.
    Raises BadImage with a short reason: "empty file", "truncated", "cannot decode: ...",
    "decompression bomb: W x H pixels > limit N".
    """
    from PIL import Image, ImageOps

    if not data:
        raise BadImage(origin, "empty file")
    try:
        # verify() checks the structure (PNG chunk CRCs, ...) and leaves the image unusable;
        # the second open decodes every pixel, catching truncation that verify() lets through.
        if verify:
            with Image.open(io.BytesIO(data), formats=_formats()) as im:
                _check_size(im.size, max_pixels, origin)
                im.verify()
        with Image.open(io.BytesIO(data), formats=_formats()) as im:
            _check_size(im.size, max_pixels, origin)
            fmt = FORMAT_ALIASES.get(im.format or "", im.format or "")
            mode = im.mode
            rawmode = _rawmode(im)
            # Counted before load(): counting seeks through the file and back to frame 0.
            frames = int(getattr(im, "n_frames", 1))
            quantization = getattr(im, "quantization", None) if fmt == "JPEG" else None
            im.load()
            notes: list[str] = []
            orientation = _orientation(im, notes)
            if orientation in range(2, 9):
                # Same call `datasets` makes when it shows the image.
                src = ImageOps.exif_transpose(im)
            else:
                src = im
            rgb, note = _to_rgb(src, rawmode, origin)
            if rgb is im:  # closing `im` frees its pixels; the result must outlive it
                rgb = im.copy()
    except BadImage:
        raise
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        raise _decode_error(origin, exc, data) from exc
    if not fmt:
        raise BadImage(origin, "cannot decode: unknown format")
    if note:
        notes.insert(0, note)
    if frames > 1:
        notes.append(f"frames={frames} first used")
    if orientation in range(2, 9):
        notes.append(f"exif_orientation={orientation}")
    return Decoded(
        rgb=rgb, format=fmt, mode=mode, width=rgb.width, height=rgb.height, frames=frames,
        conversion="; ".join(notes) or None,
        quantization=dict(quantization) if quantization else None,
    )  # fmt: skip


@lru_cache(maxsize=1)
def _formats() -> tuple[str, ...]:
    """The accepted formats this Pillow build can open (AVIF and JPEG 2000 are optional)."""
    from PIL import Image

    Image.init()
    return tuple(f for f in DECODABLE_FORMATS if f in Image.OPEN)


def _check_size(size: tuple[int, int], max_pixels: int | None, origin: str) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise BadImage(origin, f"decompression bomb: {w} x {h} pixels > limit {max_pixels}")


def _rawmode(im: Any) -> str:
    """How the codec stores samples ("I;16B", "RGB;16B", ...): the bit depth the mode hides."""
    tile = getattr(im, "tile", None) or []
    if not tile:
        return ""
    args = tile[0][3]
    raw = args[0] if isinstance(args, tuple) and args else args
    return raw if isinstance(raw, str) else ""


def _orientation(im: Any, notes: list[str]) -> int | None:
    try:
        value = im.getexif().get(_ORIENTATION)
    except Exception:  # a corrupt EXIF block must not cost the picture
        notes.append("exif unreadable, orientation ignored")
        return None
    return value if isinstance(value, int) else None


def _to_rgb(im: Any, rawmode: str, origin: str) -> tuple[Any, str | None]:
    """(RGB image, note or None). `im` is returned as is only when it already is plain RGB."""
    import numpy as np
    from PIL import Image

    mode = im.mode
    wide = ";16" in rawmode
    if mode in _16BIT_MODES or mode == "I":
        arr = np.asarray(im)
        if mode == "I" and not wide and (arr.min() < 0 or arr.max() > 0xFFFF):
            raise BadImage(origin, "cannot decode: 32-bit integer pixels outside 0..65535")
        gray = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB"), f"mode={mode} scaled 16->8 bit"
    if mode == "F":
        raise BadImage(origin, "cannot decode: floating-point pixels (mode F), no 8-bit mapping")
    # 16-bit RGB/RGBA/LA: Pillow keeps the high byte of each sample, i.e. already scales >> 8.
    depth = " 16-bit scaled 16->8 bit" if wide else ""
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[..., 3:].astype(np.uint32)
        what = "alpha" if mode in _ALPHA_MODES else "transparency"
        if alpha.min() == 255:
            rgb = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
            return rgb, f"mode={mode}{depth} {what} dropped (opaque)"
        # Over white, rounded: (c*a + 255*(255-a)) / 255.
        flat = (rgba[..., :3].astype(np.uint32) * alpha + 255 * (255 - alpha) + 127) // 255
        note = f"mode={mode}{depth} {what} flattened on white"
        return Image.fromarray(flat.astype(np.uint8)), note
    if mode == "RGB":
        return im, (f"mode=RGB{depth}" if wide else None)
    try:
        rgb = im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise BadImage(origin, f"cannot decode: mode {mode} has no RGB conversion") from exc
    named = {"P": " palette->RGB", "L": " gray->RGB", "1": " bilevel->RGB"}
    return rgb, f"mode={mode}{depth}{named.get(mode, '->RGB')}"


def _decode_error(origin: str, exc: Exception, data: bytes) -> BadImage:
    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return BadImage(origin, _bomb_reason(str(exc), data))
    if isinstance(exc, UnidentifiedImageError):
        kind = next((f for sig, f in _SIGNATURES if data.startswith(sig)), None)
        if kind is None:
            return BadImage(origin, "cannot decode: not a recognized image format")
        return BadImage(origin, f"cannot decode: corrupt or truncated {kind} header")
    msg = str(exc) or type(exc).__name__
    # libwebp says only "could not create decoder object"; the RIFF header holds the full length.
    riff_short = data[:4] == b"RIFF" and int.from_bytes(data[4:8], "little") + 8 > len(data)
    if "truncat" in msg.lower() or riff_short:
        return BadImage(origin, "truncated")
    return BadImage(origin, f"cannot decode: {msg[:200]}")


def _bomb_reason(message: str, data: bytes) -> str:
    """Pillow refuses a bomb before handing out its size; read the size from the header."""
    from PIL import Image

    m = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", message)
    limit = m.group(2) if m else "?"
    for fmt in _formats():
        factory, accept = Image.OPEN[fmt]
        if factory is None or (accept and not accept(data[:16])):
            continue
        try:
            # The plugin class parses the header without Image.open's bomb check, decodes nothing.
            w, h = factory(io.BytesIO(data), "").size
        except Exception:
            continue
        return f"decompression bomb: {w} x {h} pixels > limit {limit}"
    return f"decompression bomb: {m.group(1) if m else '?'} pixels > limit {limit}"
