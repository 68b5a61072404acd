"""Perturbed variants of test images, for the robustness protocol of the detectors.

A variant is named by what it does and how much: `jpeg75` (JPEG at quality 75, 4:2:0), `resize0.5`
(bicubic resize by 0.5; > 1 enlarges), `blur1` (Gaussian blur of radius 1 px), `crop0.9` (a square
crop of 0.9 of the short side, at an offset drawn from the image's seed). Variants other than
`jpeg*` are stored as PNG, so the perturbation is the only change. The same bytes and seed always
give the same variant.
"""

from __future__ import annotations

import io
import re

from aigi.manifests.imagebytes import decode_rgb, encode_png

_VARIANT = re.compile(r"^(jpeg|resize|blur|crop)(\d+(?:\.\d+)?)$")


def parse_variant(name: str) -> tuple[str, float]:
    """(kind, amount) of a variant name; ValueError naming the rule when it is not one."""
    m = _VARIANT.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a perturbation (jpeg<quality>, resize<factor>, blur<radius>, crop<fraction>)")
    kind, amount = m.group(1), float(m.group(2))
    ok = {"jpeg": 1 <= amount <= 100 and amount.is_integer(), "resize": 0 < amount <= 4,
          "blur": 0 < amount <= 32, "crop": 0 < amount < 1}[kind]
    if not ok:
        raise ValueError(f"{name!r}: {kind} amount {amount:g} is out of range")
    return kind, amount


def perturb(data: bytes, variant: str, seed: int) -> bytes:
    """The encoded bytes of `variant` applied to the image `data`."""
    import numpy as np
    from PIL import Image, ImageFilter

    kind, amount = parse_variant(variant)
    img = decode_rgb(data)
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(amount), subsampling="4:2:0")
        return buf.getvalue()
    if kind == "resize":
        size = (max(1, round(img.width * amount)), max(1, round(img.height * amount)))
        img = img.resize(size, Image.Resampling.BICUBIC)
    elif kind == "blur":
        img = img.filter(ImageFilter.GaussianBlur(amount))
    else:
        side = max(1, round(min(img.size) * amount))
        rng = np.random.default_rng(seed)
        left, top = int(rng.integers(0, img.width - side + 1)), int(rng.integers(0, img.height - side + 1))
        img = img.crop((left, top, left + side, top + side))
    return encode_png(img)
