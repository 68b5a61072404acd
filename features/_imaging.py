"""Image preprocessing steps that several extractors share, written to match torchvision's."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size` with PIL bicubic, longer side `int(size * long / short)` (torchvision)."""
    from PIL import Image

    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), Image.Resampling.BICUBIC)


def center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """torchvision's CenterCrop on an (H, W, C) array: zero-pad what is missing, then crop."""
    h, w = pixels.shape[:2]
    if size > h or size > w:
        top, left = max(size - h, 0) // 2, max(size - w, 0) // 2
        bottom, right = (max(size - h, 0) + 1) // 2, (max(size - w, 0) + 1) // 2
        pixels = np.pad(pixels, ((top, bottom), (left, right), (0, 0)))
        h, w = pixels.shape[:2]
    # Python's round (half to even) as torchvision, so odd margins fall on the same side.
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return pixels[top : top + size, left : left + size]
