"""DNF's classifier: a torchvision ResNet-50 trained FROM SCRATCH on DNF maps (methods.md §2.2).

The released recipe (CNNDetection lineage: `networks/trainer.py`, `train.py`) as defaults:
- ResNet-50, `pretrained=False`, fc → Linear(2048, 1) with weights N(0, 0.02); BCE with logits.
- Adam, lr 1e-4, betas (0.9, 0.999), no weight decay; batch 64.
- Input: the whole 256×256 DNF map, x/255 for the uint8 ("faithful") maps — what ToTensor gave
  on the PNGs the released code wrote — with NO crop and NO normalization; a random horizontal
  flip in training only. Float ("clean", signed ε) maps are used as stored.
- After each epoch the val metric is measured; after 5 epochs without improvement the lr is
  divided by 10, and after two drops (1e-4 → 1e-5 → 1e-6) the next plateau stops training (the
  released "stop once lr < 1e-6"); the best val epoch's weights are kept. Cap: 10,000 epochs.

Deviations (all settable back except the first two):
- The monitored metric is val AUROC (`monitor = "acc"` gives the released ACC at 0.5).
- An epoch improves when it beats the best so far (strictly). The released EarlyStopping counts an
  epoch as progress when it is within 0.001 (0.002 after an lr drop) of the last progress epoch's
  score, and forgets its reference after each drop, so it can drift downward and train longer.
- The maps come from the feature store (lossless, never re-encoded with the source's codec), not
  from PNG/JPEG files, and are not resized (the released Resize(256) is a no-op on 256² DNFs).
- Batches of one image are skipped (BatchNorm cannot train on one).
`arch = "resnet18"` exists for small, fast runs (tests); it is not the paper's model.
"""

from __future__ import annotations

from dataclasses import dataclass

from aigi.detectors._torch import MapResNetConfig, MapResNetHead


@dataclass(frozen=True)
class ResnetDnfConfig(MapResNetConfig):
    feature: str = "dnf"
    column: str = "dnf"


class ResnetDnf(MapResNetHead):
    name = "resnet_dnf"
    version = 1
    Config = ResnetDnfConfig

    @classmethod
    def tiny(cls) -> tuple[ResnetDnfConfig, dict[str, tuple[int, ...]]]:
        cfg = ResnetDnfConfig(
            arch="resnet18", epochs=4, batch_size=64, lr=1e-3, lr_patience=1, lr_drops=0, device="cpu"
        )
        return cfg, {"dnf.dnf": (3, 16, 16)}
