"""DNF: the Diffusion Noise Feature, a pixel-space DDPM's noise prediction on the image (arXiv 2312.02625).

Defaults reproduce the authors' released code (methods.md §2.1), which differs from the paper's
description:
- `mode="released"`: ONE ε prediction of the LSUN-Bedroom DDPM UNet at t = 0 on the clean image,
  with no noise added (`compute_dnf.py` → `inversion_first`). The diffusers port of that model is
  `google/ddpm-bedroom-256` (the non-EMA weights, as the code's `model-2388000.ckpt`; do not use
  `google/ddpm-ema-bedroom-256` to match it).
- `mode="inversion"` is our reading of the paper ("the estimated noise generated during the inverse
  diffusion process"): a DDIM (η = 0) inversion over `inversion_steps` timesteps of
  int(linspace(0, N, steps + 1)) without its last value (20 → 0, 50, …, 950), starting from the
  clean image, and the feature is the MEAN of the ε predictions along it. This follows the
  authors' own, never-called multi-step helper (`utils/inversion.py: inversion_steps` in the first
  commit), which averages ε over the steps and neither clips x̂₀ nor re-derives ε; its last update
  (to t = 1000) does not change the mean, so it is skipped here. Not the released behaviour.

Preprocessing as released (`dnf/utils.py: _DNFDataset`): the uint8 RGB tensor, cast to float,
`resize` to (img_size, img_size) BICUBIC on the tensor (a squash; aspect ratio not kept) with
antialias=True pinned (its default changed across torchvision versions), then /255·2 − 1. fp32.

Encodings:
- `encoding="faithful"` (default; it reproduces the released classifier's input): what the code's
  `torchvision.utils.save_image` keeps, uint8 = floor(clamp(255·ε + 0.5, 0, 255)). The negative
  half of ε is discarded and values above 1 saturate. Stored losslessly in the feature store, never
  re-encoded with the source image's codec: the released code wrote JPEG DNFs for JPEG sources and
  PNG for PNG ones, a format shortcut between classes (methods.md §2.1, §5.5) that we do not copy.
- `encoding="clean"`: the signed ε in `storage_dtype`.

Deterministic (no random draws; `seeds` are accepted and unused). Stored bytes per image at the
defaults: 3×256×256 uint8 = 196,608 B faithful; 393,216 B clean in float16 (786,432 B float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.features._ddim import check_map_config, map_columns
from aigi.features.base import (
    FeatureExtractor,
    check_batch,
    check_common,
    image_batch,
    resolve_torch_device,
)

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class DnfConfig:
    """`[features.dnf]`. `layout`: "root" (google/ddpm-* repos) or "pipeline" (unet/, scheduler/)."""

    model: str = "google/ddpm-bedroom-256"
    revision: str = ""
    layout: Literal["root", "pipeline"] = "root"
    mode: Literal["released", "inversion"] = "released"
    inversion_steps: int = 20
    encoding: Literal["faithful", "clean"] = "faithful"
    img_size: int = 256
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    storage_dtype: Literal["float32", "float16"] = "float16"
    batch_size: int = 16
    device: str = "auto"

    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("batch_size", "device")

    def __post_init__(self) -> None:
        check_common(self)
        check_map_config(self)
        check(self.mode in ("released", "inversion"), "mode", f"must be released or inversion, got {self.mode!r}")
        check(self.inversion_steps > 0, "inversion_steps", f"must be > 0, got {self.inversion_steps}")


class Dnf(FeatureExtractor):
    name = "dnf"
    version = 1
    Config = DnfConfig

    def __init__(self, config: DnfConfig) -> None:
        super().__init__(config)
        self._models: dict[str, Any] | None = None
        self._revision = ""

    def columns(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return map_columns("dnf", self.config)

    def preprocessing(self) -> dict[str, Any]:
        s = self.config.img_size
        return {
            "resize": [s, s],
            "filter": "torchvision tensor bicubic, antialias",
            "aspect": "squash",
            "range": [-1, 1],
        }

    def preprocess(self, image: Image.Image, row: dict[str, Any]) -> np.ndarray:
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        s = self.config.img_size
        u8 = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
        # Resized as float (as released), so bicubic overshoot outside [0, 255] is kept.
        x = TF.resize(u8.float(), [s, s], interpolation=InterpolationMode.BICUBIC, antialias=True)
        return (x / 255.0 * 2.0 - 1.0).numpy().astype(np.float32, copy=False)

    def load(self, device: str) -> None:
        from aigi.features._ddim import linspace_timesteps, load_pixel_unet
        from aigi.manifests.revision import resolve_revision

        cfg = self.config
        dev = resolve_torch_device(device)
        inversion = cfg.mode == "inversion"
        unet, abar = load_pixel_unet(
            cfg.model, cfg.revision, cfg.layout, cfg.dtype, dev, cfg.img_size, scheduler=inversion
        )
        timesteps = [0]
        if inversion:
            assert abar is not None
            n_train = len(abar)
            check(cfg.inversion_steps <= n_train, "inversion_steps",
                  f"must be <= the model's num_train_timesteps ({n_train}), got {cfg.inversion_steps}")
            timesteps = linspace_timesteps(n_train, cfg.inversion_steps)
        self._models = {"unet": unet, "device": dev, "abar": abar, "timesteps": timesteps}
        self._revision = resolve_revision(cfg.model, cfg.revision)

    def model_revision(self) -> str:
        return self._revision

    def compute(self, batch: np.ndarray, rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, np.ndarray]:
        import torch

        if self._models is None:
            raise RuntimeError("Dnf.compute called before load(device)")
        check_batch(self.name, batch, rows, seeds)
        (shape, dtype), = self.columns().values()
        bs = self.config.batch_size
        with torch.inference_mode():
            parts = [self._chunk(batch[i : i + bs]) for i in range(0, len(batch), bs)]
        if not parts:
            return {"dnf": np.zeros((0, *shape), dtype=dtype)}
        return {"dnf": np.concatenate(parts).astype(dtype, copy=False)}

    def _eps(self, x: Any, t: int) -> Any:
        m = self._models
        assert m is not None
        unet = m["unet"]
        # 6-channel (learned-σ) UNets put ε first.
        return unet(x.to(unet.dtype), t).sample[:, :3].float()

    def _chunk(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        from aigi.features._ddim import ddim_step

        m = self._models
        assert m is not None
        x = image_batch(pixels, m["device"], torch.float32)
        if self.config.mode == "released":
            eps = self._eps(x, 0)
        else:
            ts, abar = m["timesteps"], m["abar"]
            total = torch.zeros_like(x)
            for i, t in enumerate(ts):
                e = self._eps(x, t)
                total += e
                if i + 1 < len(ts):
                    x = ddim_step(x, e, abar[t], abar[ts[i + 1]], clip_denoised=False)
            eps = total / len(ts)
        if self.config.encoding == "faithful":
            # torchvision.utils.save_image's conversion, in the same order.
            eps = eps.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
        return eps.cpu().numpy()

    @classmethod
    def tiny(cls, folder: Path) -> DnfConfig:
        from aigi.generators.tiny import tiny_pixel_unet

        tiny_pixel_unet(folder, seed=321, sample_size=16)
        return DnfConfig(model=str(folder), img_size=16, batch_size=4)
