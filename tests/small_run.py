"""A small finished run for the export and verify tests: tiny PNG photos of one class folder and a
tiny Stable Diffusion generator, run in this process. Imported as `from small_run import ...`
(tests/ is on sys.path)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def png(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(buf, "PNG")
    return buf.getvalue()


def photo_folder(base: Path, n: int, name: str = "cat") -> Path:
    """`n` tiny PNG photos in base/photos/<name>/ (a class folder); returns base/photos."""
    folder = base / "photos" / name
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"{i}.png").write_bytes(png(i))
    return base / "photos"


def small_run(base: Path, photos: int = 12, copy_of: int | None = None, images_per_prompt: int = 4,
              generator: dict[str, Any] | None = None, **config: Any) -> Path:
    """Run `photos` photos (the last an exact copy of photo `copy_of` when given, so dedupe drops
    a row) and one tiny SD generator into base/run; `config` adds top-level tables."""
    from aigi.generators.tiny import tiny_stable_diffusion
    from aigi.pipeline.config import parse_config
    from aigi.pipeline.run import run

    photo_folder(base, photos - (copy_of is not None))
    if copy_of is not None:
        (base / "photos" / "cat" / "copy.png").write_bytes(png(copy_of))
    model = tiny_stable_diffusion(base / "sd", seed=4)
    cfg = parse_config({
        "run": {"out": str(base / "run"), "seed": 1},
        "prompts": {"source": "classes", "classes": ["cat", "dog"], "templates": ["a photo of a {class}"]},
        "real": {"path": str(base / "photos"), "class_from_folder": True, "unit_size": 6},
        "generators": [{"name": "sd", "family": "stable_diffusion", "model": str(model), "steps": 2,
                        "size": [32, 32], "images_per_prompt": images_per_prompt, "batch_size": 4,
                        **(generator or {})}],
        **config,
    })
    run(cfg, serial=True, stream=io.StringIO())
    return base / "run"
