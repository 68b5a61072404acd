"""The FeatureExtractor interface (lhotse-style: a name, a config, one `extract` method).

A feature is one file in `features/` (the file name is its registry key and its `[features.<name>]`
config table) defining one `FeatureExtractor` subclass with a frozen `Config` dataclass.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from aigi.manifests.ids import fingerprint
from aigi.pipeline.configtools import to_dict

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class FeatureExtractor:
    name: ClassVar[str]
    version: ClassVar[int]  # bump when the computation changes: old caches stop matching
    Config: ClassVar[type]

    def __init__(self, config: Any) -> None:
        self.config = config

    def fingerprint(self) -> str:
        """Names the feature directory `features/<name>-<fingerprint>/`."""
        cfg = to_dict(self.config)
        for k in getattr(self.config, "NOT_FINGERPRINTED", ()):
            cfg.pop(k, None)
        return fingerprint({"name": self.name, "version": self.version, "config": cfg})

    def columns(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Column name -> (per-image shape, numpy dtype name) of what `extract` returns."""
        raise NotImplementedError

    def load(self, device: str) -> None:
        """Load models onto `device`. Called once per worker."""
        raise NotImplementedError

    def extract(
        self, images: list[Image.Image], rows: list[dict[str, Any]], seeds: list[int]
    ) -> dict[str, np.ndarray]:
        """Features of a batch: column -> array of shape (len(images), *shape).

        `rows` are the images' manifest rows (class_name, prompt, ...); `seeds` are the per-image
        seeds (derived from the run seed and the image id) for any randomness.
        """
        raise NotImplementedError

    def model_revision(self) -> str:
        """After `load`: the resolved revision or weights hash of the model used."""
        return ""

    @classmethod
    def tiny(cls, folder: Path) -> Any:
        """Build a tiny random-weight model in `folder` (offline) and return a Config using it."""
        raise NotImplementedError
