"""DIRE's classifier: a torchvision ResNet-50 on DIRE maps (methods.md §5.4).

The released recipe (`utils/config.py`, `utils/trainer.py`, `utils/datasets.py`) as defaults:
- ResNet-50, ImageNet-pretrained, fc → Linear(2048, 1) with weights N(0, 0.02); BCE with logits.
- Adam, lr 1e-4, betas (0.9, 0.999), no weight decay; batch 64; cap 400 epochs.
- Input: the DIRE map as [0, 1] pixels (x/255 of the uint8 "faithful" map, what ToTensor gave on
  the released PNGs), ImageNet-normalized; training: RandomCrop(224) + RandomHorizontalFlip;
  scoring: CenterCrop(224). "clean" float maps hold DIRE in [-1, 1]-image units (range [0, 2]);
  they are halved, which puts them on the same scale as the uint8 maps / 255.
- Early stopping on val as in DNF (CNNDetection): after 5 epochs without improvement the lr is
  divided by 10; after two drops the next plateau stops; the best val epoch's weights are kept.

ImageNet weights. torchvision's need a download, which aigi never does at run time: `pretrained`
is a local path to a torchvision ResNet-50 state_dict (`.safetensors`, or `.pth`/`.pt` read with
`torch.load(weights_only=True)`, e.g. torchvision's `resnet50-0676ba61.pth` or the older
`resnet50-19c8e357.pth` the DIRE code used). Its fc is dropped. Empty (the default): random init,
a DEVIATION from the paper, logged as a warning and recorded in the saved state ("init"), as is
the weights file's sha256 when given.

Other deviations: the metric watched is val AUROC (`monitor = "acc"`: the released ACC at 0.5);
an epoch improves when it beats the best so far (the released EarlyStopping tolerates drops of
0.001/0.002 and forgets its reference after each lr drop); maps come losslessly from the feature
store, not from PNG/JPEG files (the released JPEG-vs-PNG shortcut, methods.md §5.5, cannot
happen), and are not resized (the released Resize(256) is a no-op on 256² maps); the released
seed 3407 is not used (our random draws differ anyway); batches of one image are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aigi.core.configtools import check
from aigi.detectors._torch import MapResNetConfig, MapResNetHead


@dataclass(frozen=True)
class ResnetDireConfig(MapResNetConfig):
    feature: str = "dire"
    column: str = "dire"
    normalize: Literal["none", "imagenet"] = "imagenet"
    crop: int = 224
    epochs: int = 400
    pretrained: str = ""  # local torchvision state_dict of `arch`; "": random init

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            not self.pretrained or self.pretrained.endswith((".safetensors", ".pth", ".pt")),
            "pretrained",
            f"must be a .safetensors, .pth or .pt state_dict file, got {self.pretrained!r}",
        )


class ResnetDire(MapResNetHead):
    name = "resnet_dire"
    version = 1
    Config = ResnetDireConfig
    MODEL_KEYS = ("pretrained",)
    FLOAT_SCALE = 0.5  # DIRE in [0, 2] -> the [0, 1] of the uint8 maps / 255

    @classmethod
    def tiny(cls) -> tuple[ResnetDireConfig, dict[str, tuple[int, ...]]]:
        cfg = ResnetDireConfig(
            arch="resnet18", crop=12, epochs=4, batch_size=64, lr=1e-3, lr_patience=1, lr_drops=0, device="cpu"
        )
        return cfg, {"dire.dire": (3, 16, 16)}

    def build(self, shapes: dict[str, tuple[int, ...]], for_training: bool) -> Any:
        p = self.config.pretrained
        if for_training and p and not Path(p).is_file():
            raise FileNotFoundError(f"{self.name}: pretrained weights {p!r} not found")
        if for_training and not p:
            self.log.warning(
                "%s: no `pretrained` weights given: %s from random init (DIRE used ImageNet weights)",
                self.name, self.config.arch,
            )
        return super().build(shapes, for_training)
