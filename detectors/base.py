"""The Detector interface: a head trained on cached features (scikit-learn conventions).

A detector is one file in `detectors/` (file name = registry key = `[detectors.<name>]` table)
defining one `Detector` subclass with a frozen `Config` dataclass. Its inputs are feature columns
named "<feature>.<column>" (`inputs()`), served by a `FeatureSet` (`aigi.detectors.data`).

- The constructor stores the config; `fit(train, val)` trains (early stopping, where a head
  has it, looks at `val` only, never at test) and returns self; `score(data)` gives each image's
  probability of being generated, in [0, 1].
- Every random draw is seeded from `config.seed`: the same data and seed give the same model.
- `save(folder)` writes `detector.json` (name, version, config, small JSON state) and
  `state.safetensors` (arrays); `load(folder)` reads them back. Nothing is pickled: loading a
  detector someone else trained never runs their code. A scikit-learn head keeps the fitted
  numbers (coefficients, support vectors, the reference bank) and scores with them in numpy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from aigi.core import atomic
from aigi.core.configtools import build, to_dict
from aigi.manifests.ids import fingerprint

if TYPE_CHECKING:
    import numpy as np

    from aigi.detectors.data import FeatureSet

MANIFEST = "detector.json"
STATE = "state.safetensors"


class Detector:
    name: ClassVar[str]
    version: ClassVar[int]
    Config: ClassVar[type]
    #: Config keys naming pretrained weights (a hub id, a local folder or file).
    MODEL_KEYS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any) -> None:
        self.config = config

    def inputs(self) -> list[str]:
        """The feature columns the head reads, as "<feature>.<column>"."""
        return [f"{self.config.feature}.{self.config.column}"]

    def features(self) -> list[str]:
        """The feature extractors the head needs (the part of each input before the dot)."""
        return sorted({i.split(".", 1)[0] for i in self.inputs()})

    def fingerprint(self, inputs_fingerprint: str) -> str:
        """Config, weights and inputs; a local weights file or folder counts by its content, never
        by its path (the same run from another directory keeps its detectors)."""
        cfg = to_dict(self.config)
        for key in self.MODEL_KEYS:
            cfg[key] = _weights_of(cfg.get(key) or "")
        return fingerprint({"name": self.name, "version": self.version, "config": cfg, "inputs": inputs_fingerprint})

    def fit(self, train: FeatureSet, val: FeatureSet | None = None) -> Detector:
        raise NotImplementedError

    def score(self, data: FeatureSet) -> np.ndarray:
        """(N,) float64 probability that each image is generated."""
        raise NotImplementedError

    # ------------------------------------------------------------ saving, without pickle

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The fitted model as (named arrays, small JSON-able values)."""
        raise NotImplementedError

    def set_state(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays, values = self.get_state()
        with atomic.atomic_path(folder / STATE) as tmp:
            save_file({k: _contiguous(v) for k, v in arrays.items()}, str(tmp))
        manifest = {"name": self.name, "version": self.version, "config": to_dict(self.config), "state": values}
        # the manifest last: a folder with it is complete
        atomic.write_text(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Detector:
        from safetensors.numpy import load_file

        folder = Path(folder)
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("name") != cls.name:
            raise ValueError(f"{folder}: holds detector {manifest.get('name')!r}, not {cls.name!r}")
        if manifest.get("version") != cls.version:
            raise ValueError(f"{folder}: {cls.name} version {manifest.get('version')}, this aigi reads {cls.version}")
        det = cls(build(cls.Config, manifest["config"], f"detectors.{cls.name}", str(folder / MANIFEST)))
        det.set_state(load_file(str(folder / STATE)), manifest["state"])
        return det


def load_detector(folder: str | Path) -> Detector:
    """Whichever detector `folder` holds (its manifest names it)."""
    from aigi.detectors.registry import get

    name = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))["name"]
    return get(name).load(folder)


def check_input(cfg: Any) -> None:
    """The keys every head's config has: the feature and column it reads; `class_weight` too,
    where the head has it."""
    from aigi.core.configtools import check

    check(bool(cfg.feature), "feature", "must name a feature extractor")
    check(bool(cfg.column), "column", "must name a feature column")
    if hasattr(cfg, "class_weight"):
        check(cfg.class_weight in ("balanced", "none"), "class_weight",
              f"must be 'balanced' or 'none', got {cfg.class_weight!r}")


def check_labels(who: str, y: np.ndarray) -> None:
    """Training needs both classes, as 0/1."""
    import numpy as np

    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{who}: labels must be 0 (real) or 1 (generated)")
    present = set(np.unique(y).tolist())
    if present != {0, 1}:
        raise ValueError(f"{who}: training needs both real (0) and generated (1) images; only {sorted(present)} present")


def _contiguous(a: Any) -> Any:
    import numpy as np

    return np.ascontiguousarray(a)


def _weights_of(model: str) -> str:
    """A local weights file or folder by its content hash; anything else (a hub id, "") as is."""
    from pathlib import Path

    path = Path(model)
    if path.is_file():
        from aigi.manifests.ids import sha256_file

        return "sha256:" + sha256_file(path)
    if path.is_dir():
        from aigi.manifests.revision import resolve_revision

        return "folder:" + resolve_revision(model)
    return model
