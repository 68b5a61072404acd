"""CoDE: the contrastive deepfake embedding of a ViT-Tiny (Baraldi et al., ECCV 2024, arXiv 2407.20337).

Per image (methods.md §3.1): the released `aimagelab/CoDE` ViT-Tiny/16 (trained from scratch with
a contrastive loss on D³) and its embedding, the CLS token of `last_hidden_state` (after the final
LayerNorm), 192-d. The downstream linear / kNN / one-class SVM heads are detectors, not part of
this feature.

Preprocessing, selectable with `preprocess` (which one produced the paper's table is unknown,
methods.md §3.1, so both are offered and the choice is recorded in `preprocessing()`):
- "crop" (default): the released inference script (`validate_d3.py`): CenterCrop(224) with NO
  resize, ToTensor, ImageNet Normalize. As torchvision's CenterCrop, an image smaller than the crop
  is zero-padded (left/top get the floor of half the missing pixels) before ToTensor, so padded
  pixels are 0 before normalization; the crop offset is `round((size - crop) / 2)` (Python's
  round, as torchvision).
- "resize_crop": the training pipeline (`MassiveTransform --last-crop --crop-pct 0.9`): Resize of
  the shorter side to floor(224 / 0.9) = 248 (PIL bicubic; the longer side is
  `int(248 * long / short)`, as torchvision), CenterCrop(224), ToTensor, Normalize. The sklearn
  heads evaluated during training were fit on features from this pipeline.
Both are reimplemented with numpy/PIL (no torchvision at preprocessing time) and equal torchvision's
tensors; the tests check it.

Deviations: none in the computation. The model is loaded with `ViTModel` without its pooler (the
released wrapper replaces the pooler with an identity and never uses it), so the checkpoint's
pooler weights are reported as unused. `dim` (192) is a config key because the column's shape
must be known before the model is loaded; `load` checks it against the model's `hidden_size`.
Deterministic: the seeds are not used.

Stored bytes per image: 192 × 2 = 384 B (float16, the default) or 768 B (float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.features._imaging import IMAGENET_MEAN, IMAGENET_STD, center_crop, resize_shorter
from aigi.features.base import (
    FeatureExtractor,
    check_batch,
    check_common,
    resolve_torch_device,
)

if TYPE_CHECKING:
    from PIL import Image

@dataclass(frozen=True)
class CodeConfig:
    """`[features.code]`."""

    model: str = "aimagelab/CoDE"
    revision: str = ""
    preprocess: Literal["crop", "resize_crop"] = "crop"
    crop_size: int = 224
    resize_size: int = 248  # floor(224 / 0.9), only used by preprocess = "resize_crop"
    dim: int = 192  # the model's hidden_size; checked at load
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    storage_dtype: Literal["float32", "float16"] = "float16"
    batch_size: int = 128  # the released validation script's
    device: str = "auto"

    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("batch_size", "device")

    def __post_init__(self) -> None:
        check_common(self)
        check(self.preprocess in ("crop", "resize_crop"), "preprocess", f"must be crop or resize_crop, got {self.preprocess!r}")
        check(self.crop_size > 0, "crop_size", f"must be > 0, got {self.crop_size}")
        check(
            self.resize_size >= self.crop_size,
            "resize_size",
            f"must be >= crop_size ({self.crop_size}), got {self.resize_size}",
        )
        check(self.dim > 0, "dim", f"must be > 0, got {self.dim}")


class Code(FeatureExtractor):
    name = "code"
    version = 1
    Config = CodeConfig

    def __init__(self, config: CodeConfig) -> None:
        super().__init__(config)
        self._model: Any = None
        self._device: Any = None
        self._revision = ""

    def columns(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"code": ((self.config.dim,), self.config.storage_dtype)}

    def preprocessing(self) -> dict[str, Any]:
        cfg = self.config
        steps: dict[str, Any] = {"policy": cfg.preprocess}
        if cfg.preprocess == "resize_crop":
            steps["resize_shorter"] = cfg.resize_size
            steps["filter"] = "PIL bicubic"
        steps.update(
            center_crop=cfg.crop_size,
            pad="zeros before normalization where the image is smaller than the crop",
            range=[0, 1],
            normalize={"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        )
        return steps

    def preprocess(self, image: Image.Image, row: dict[str, Any]) -> np.ndarray:
        cfg = self.config
        im = image.convert("RGB")
        if cfg.preprocess == "resize_crop":
            im = resize_shorter(im, cfg.resize_size)
        u8 = center_crop(np.asarray(im), cfg.crop_size)
        # Same float32 operations as ToTensor (x / 255) and Normalize ((x - mean) / std).
        x = u8.astype(np.float32) / np.float32(255)
        x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def load(self, device: str) -> None:
        import torch
        from transformers import ViTModel

        from aigi.manifests.revision import resolve_revision

        cfg = self.config
        dev = resolve_torch_device(device)
        model = ViTModel.from_pretrained(
            cfg.model,
            revision=cfg.revision or None,
            add_pooling_layer=False,
            dtype=getattr(torch, cfg.dtype),
        )
        hidden = int(model.config.hidden_size)
        check(hidden == cfg.dim, "dim", f"must equal the model's hidden_size ({hidden}), got {cfg.dim}")
        size = model.config.image_size
        sizes = (size, size) if isinstance(size, int) else tuple(size)
        check(
            sizes == (cfg.crop_size, cfg.crop_size),
            "crop_size",
            f"must equal the model's image_size ({size}): its position embeddings are not "
            f"interpolated, got {cfg.crop_size}",
        )
        self._model = model.to(dev).eval().requires_grad_(False)
        self._device = dev
        self._revision = resolve_revision(cfg.model, cfg.revision)

    def model_revision(self) -> str:
        return self._revision

    def compute(self, batch: np.ndarray, rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, np.ndarray]:
        import torch

        if self._model is None:
            raise RuntimeError("Code.compute called before load(device)")
        check_batch(self.name, batch, rows, seeds)
        cfg = self.config
        out_dtype = np.dtype(cfg.storage_dtype)
        if len(batch) == 0:
            return {"code": np.zeros((0, cfg.dim), dtype=out_dtype)}
        dtype = self._model.dtype
        parts = []
        with torch.inference_mode():
            for i in range(0, len(batch), cfg.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(batch[i : i + cfg.batch_size]))
                hidden = self._model(pixel_values=x.to(self._device, dtype)).last_hidden_state
                parts.append(hidden[:, 0, :].float().cpu().numpy())
        return {"code": np.concatenate(parts).astype(out_dtype, copy=False)}

    @classmethod
    def tiny(cls, folder: Path) -> CodeConfig:
        import torch
        from transformers import ViTConfig, ViTModel

        torch.manual_seed(0)
        config = ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            layer_norm_eps=1e-6,  # timm's, as the released model should carry (methods.md §3.1)
        )
        # Without the pooler, which the extractor does not load (the released wrapper drops it).
        ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
        return CodeConfig(model=str(folder), crop_size=32, resize_size=36, dim=32, batch_size=4)
