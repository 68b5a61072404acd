"""The FeatureExtractor interface (lhotse-style: a name, a config, one `extract` method).

A feature is one file in `features/` (the file name is its registry key and its `[features.<name>]`
config table) defining one `FeatureExtractor` subclass with a frozen `Config` dataclass.

Extraction is split in two so the stage can keep a GPU busy:
- `preprocess(image, row)` is pure CPU work on one decoded RGB image (resize, crop, scale) and
  returns the float32 array the model sees. It must be thread-safe: the stage runs it on a thread
  pool for the next batch while `compute` runs the current one. Extractors whose `preprocess_key`
  is equal produce identical arrays, and the stage computes them once for both.
- `compute(batch, rows, seeds)` runs the model on a stacked batch `(N, *array shape)`.
`extract(images, rows, seeds)` does both, for callers that hold PIL images.

Randomness comes only from `seeds` (one per image, derived from the run seed and the image id),
each drawn through its own CPU `torch.Generator`, so a feature is a function of
(image, row, seed, config, weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from aigi.core.configtools import to_dict
from aigi.manifests.ids import fingerprint

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

#: What a config's `storage_dtype` may be for float features.
FLOAT_STORAGE = ("float16", "float32")
#: What a config's `dtype` (the model's compute dtype) may be.
COMPUTE_DTYPES = ("float32", "float16", "bfloat16")


class FeatureExtractor:
    name: ClassVar[str]
    version: ClassVar[int]  # bump when the computation changes: old caches stop matching
    Config: ClassVar[type]
    #: Config keys that name model weights (a hub id or a local folder). The fingerprint uses the
    #: weights' resolved revision (hub commit or hash of the files) in their place, never the path.
    MODEL_KEYS: ClassVar[tuple[str, ...]] = ("model",)

    def __init__(self, config: Any) -> None:
        self.config = config

    # -- identity -------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What determines the output: name, version, config without paths, weights revisions."""
        from aigi.manifests.revision import resolve_revision

        cfg = to_dict(self.config)
        for k in getattr(self.config, "NOT_FINGERPRINTED", ()):
            cfg.pop(k, None)
        weights = {}
        for key in self.MODEL_KEYS:
            model = cfg.pop(key, "")
            revision = cfg.pop("revision", "") if key == "model" else ""
            if model:
                weights[key] = _weights_identity(model, revision, resolve_revision(model, revision))
        return {"name": self.name, "version": self.version, "config": cfg, "weights": weights}

    def fingerprint(self) -> str:
        """Names the feature directory `features/<name>-<fingerprint>/`."""
        return fingerprint(self.identity())

    # -- shapes and preprocessing -------------------------------------------------------------
    def columns(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Column name -> (per-image shape, numpy dtype name) of what `compute` returns.

        Shape `()` is a scalar column. Must be answerable before `load`.
        """
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        """How `preprocess` turns an image into the model's input, recorded in the store."""
        raise NotImplementedError

    def preprocess_key(self) -> str:
        """Equal keys mean `preprocess` gives identical arrays for the same image and row."""
        return fingerprint(self.preprocessing())

    def preprocess(self, image: Image.Image, row: dict[str, Any]) -> np.ndarray:
        """One RGB image -> the float32 array the model sees. CPU only; thread-safe."""
        raise NotImplementedError

    # -- the model ------------------------------------------------------------------------
    def load(self, device: str) -> None:
        """Load models onto `device`. Called once per worker."""
        raise NotImplementedError

    def compute(
        self, batch: np.ndarray, rows: list[dict[str, Any]], seeds: list[int]
    ) -> dict[str, np.ndarray]:
        """Features of a preprocessed batch: column -> array (len(batch), *shape), storage dtype.

        Splits `batch` into chunks of the config's `batch_size` internally.
        """
        raise NotImplementedError

    def extract(
        self, images: list[Image.Image], rows: list[dict[str, Any]], seeds: list[int]
    ) -> dict[str, np.ndarray]:
        """Features of decoded RGB images: `compute` of the stacked `preprocess` outputs."""
        import numpy as np

        if not (len(images) == len(rows) == len(seeds)):
            raise ValueError(
                f"{self.name}.extract: {len(images)} images, {len(rows)} rows and {len(seeds)} "
                "seeds; they must match one to one"
            )
        if not images:
            return {c: np.zeros((0, *s), dtype=d) for c, (s, d) in self.columns().items()}
        batch = np.stack([self.preprocess(im, r) for im, r in zip(images, rows, strict=True)])
        return self.compute(batch, rows, seeds)

    def model_revision(self) -> str:
        """After `load`: the resolved revision or weights hash of the model used."""
        return ""

    @classmethod
    def tiny(cls, folder: Path) -> Any:
        """Build a tiny random-weight model in `folder` (offline) and return a Config using it."""
        raise NotImplementedError


def _weights_identity(model: str, revision: str, resolved: str) -> dict[str, str]:
    """A local folder is known by its files' hash alone; a hub id by its name and commit."""
    if Path(model).is_dir():
        return {"resolved": resolved}
    return {"id": model, "resolved": resolved}


def check_common(cfg: Any) -> None:
    """The keys every extractor config has: model, dtype, storage_dtype, batch_size, device."""
    from aigi.core.configtools import check
    from aigi.core.devices import DEVICE_RE

    check(bool(cfg.model), "model", "must name a hub id or a local folder")
    check(cfg.dtype in COMPUTE_DTYPES, "dtype", f"must be float32, float16 or bfloat16, got {cfg.dtype!r}")
    check(cfg.storage_dtype in FLOAT_STORAGE, "storage_dtype", f"must be float32 or float16, got {cfg.storage_dtype!r}")
    check(cfg.batch_size > 0, "batch_size", f"must be > 0, got {cfg.batch_size}")
    check(bool(DEVICE_RE.match(cfg.device)), "device", f"must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")


def check_batch(name: str, batch: Any, rows: list, seeds: list) -> None:
    """`compute`'s arguments must match one to one."""
    if not (len(batch) == len(rows) == len(seeds)):
        raise ValueError(
            f"{name}.compute: {len(batch)} images, {len(rows)} rows and {len(seeds)} seeds; "
            "they must match one to one"
        )


def image_batch(pixels: Any, device: Any, dtype: Any) -> Any:
    """A (N, C, H, W) numpy batch as a channels-last tensor on `device`: convolution kernels
    (oneDNN on CPU, cuDNN tensor cores on GPU) run faster on that layout, and the models of
    conv extractors are put in it at load (`model.to(memory_format=torch.channels_last)`)."""
    import numpy as np
    import torch

    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device, dtype)
    return x.contiguous(memory_format=torch.channels_last)


def resolve_torch_device(device: str) -> Any:
    """A `torch.device`: "auto" is this worker's GPU when there is one, else the CPU."""
    import torch

    from aigi.core.devices import resolve_device

    return torch.device(resolve_device(device))
