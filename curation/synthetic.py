"""Synthetic pictures for tests and benchmarks of near-duplicate search.

A smooth random colour field with a few random shapes: distinct per seed (their pHashes are far
apart), with the large-scale structure perceptual hashes see, and cheap to make. Not photographs:
what a hash radius finds on them is a property of the hash, measured on stand-ins.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def natural_image(seed: int, size: int = 200) -> Any:
    """A `size`² PIL RGB image, the same for the same seed."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    g = int(rng.integers(3, 8))
    img = Image.fromarray((rng.random((g, g, 3)) * 255).astype(np.uint8))
    img = img.resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 40, 2))
        w, h = (int(v) for v in rng.integers(20, size // 2, 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=fill)
    return img
