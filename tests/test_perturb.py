"""Perturbation variants for the robustness protocol, against PIL applied by hand."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from aigi.curation.ingest import estimate_jpeg_quality
from aigi.curation.perturb import parse_variant, perturb


def png(seed: int = 0, w: int = 40, h: int = 30) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_each_variant_against_pil_by_hand() -> None:
    data = png()
    src = Image.open(io.BytesIO(data)).convert("RGB")
    with Image.open(io.BytesIO(perturb(data, "jpeg60", 0))) as im:
        assert im.format == "JPEG" and estimate_jpeg_quality(im) == 60
    assert np.array_equal(pixels(perturb(data, "blur1", 0)), np.asarray(src.filter(ImageFilter.GaussianBlur(1))))
    assert np.array_equal(pixels(perturb(data, "resize0.5", 0)),
                          np.asarray(src.resize((20, 15), Image.Resampling.BICUBIC)))
    crop = pixels(perturb(data, "crop0.8", 7))
    assert crop.shape == (24, 24, 3)
    full = np.asarray(src)
    assert any(np.array_equal(full[t : t + 24, x : x + 24], crop) for t in range(7) for x in range(17))
    assert np.array_equal(crop, pixels(perturb(data, "crop0.8", 7)))  # seeded


@pytest.mark.parametrize("name", ["sharpen1", "jpeg0", "jpeg101", "jpeg7.5", "crop1", "blur0", "resize9"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        parse_variant(name)
