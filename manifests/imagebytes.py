"""Encoding and decoding of the stored image bytes."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


def encode_png(img: Image.Image) -> bytes:
    """Lossless PNG, no ancillary chunks (no timestamps): same pixels → same bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def decode_rgb(data: bytes) -> Image.Image:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")
