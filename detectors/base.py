"""The Detector interface: a head trained on cached features (scikit-learn conventions).

A detector is one file in `detectors/` (file name = registry key = `[detectors.<name>]` table)
defining one `Detector` subclass with a frozen `Config` dataclass whose `feature` names the
feature extractor it reads. Constructors store; `fit` works and returns self; objects pickle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from aigi.core.configtools import to_dict
from aigi.manifests.ids import fingerprint

if TYPE_CHECKING:
    import numpy as np


class Detector:
    name: ClassVar[str]
    version: ClassVar[int]
    Config: ClassVar[type]

    def __init__(self, config: Any) -> None:
        self.config = config

    def fingerprint(self, feature_fingerprint: str) -> str:
        return fingerprint(
            {"name": self.name, "version": self.version, "config": to_dict(self.config), "feature": feature_fingerprint}
        )

    def fit(self, x: np.ndarray, y: np.ndarray) -> Detector:
        """`x`: (N, *feature shape) raw cached features; `y`: (N,) labels, 1 = generated."""
        raise NotImplementedError

    def score(self, x: np.ndarray) -> np.ndarray:
        """(N,) probability that each image is generated."""
        raise NotImplementedError
