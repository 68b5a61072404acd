"""A small MLP on pooled cached features: one step up from the logistic probe.

The input is `logreg`'s (the same adaptive average pooling of (C, H, W) maps to (C, pool, pool),
flattened; 1-D features as they are), standardized with the training set's mean and standard
deviation (one streaming pass), then Linear(hidden) -> ReLU -> dropout -> Linear(1), trained with
class-weighted binary cross-entropy ("balanced": each class weighs n / (2 n_class), as sklearn)
and AdamW. Training streams `train.batches` (a seeded shuffle per epoch). With a validation set
the model kept is the epoch of best validation AUROC, and training stops after `patience` epochs
without improvement; without one, the last epoch.

Every random draw (initial weights, dropout masks) comes from one `torch.Generator` seeded with
`seed`, so the global torch RNG is neither used nor changed and CPU training is reproducible.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.detectors.base import Detector, check_input, check_labels
from aigi.detectors.logreg import POOL_BATCH, pool_features

if TYPE_CHECKING:
    from aigi.detectors.data import FeatureSet

log = logging.getLogger(__name__)

WEIGHTS = ("w1", "b1", "w2", "b2")


@dataclass(frozen=True)
class MlpConfig:
    feature: str = "lare"
    column: str = "lare"
    pool: int = 4
    hidden: int = 256
    dropout: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-2
    epochs: int = 50
    batch_size: int = 256
    #: epochs without a better validation AUROC before stopping (only with a validation set)
    patience: int = 5
    class_weight: Literal["balanced", "none"] = "balanced"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_input(self)
        check(self.pool >= 1, "pool", f"must be >= 1, got {self.pool}")
        check(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.patience >= 1, "patience", f"must be >= 1, got {self.patience}")
        check(bool(self.device), "device", "must name a device ('auto', 'cpu', 'cuda:0', ...)")


class Mlp(Detector):
    name = "mlp"
    version = 1
    Config = MlpConfig

    def __init__(self, config: MlpConfig) -> None:
        super().__init__(config)
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.weights_: dict[str, np.ndarray] | None = None  # float32, on the CPU
        self.history_: dict[str, Any] = {}

    @classmethod
    def tiny(cls) -> tuple[MlpConfig, dict[str, tuple[int, ...]]]:
        cfg = MlpConfig(pool=2, hidden=16, epochs=15, batch_size=32, patience=3, device="cpu")
        return cfg, {"lare.lare": (4, 8, 8)}

    # ------------------------------------------------------------ features

    def _pooled(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        return pool_features(cols[self.inputs()[0]], self.config.pool, self.name, self.config.column)

    def _standardized(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        assert self.mean_ is not None and self.scale_ is not None
        x = self._pooled(cols)
        if x.shape[1] != len(self.mean_):
            raise ValueError(f"{self.name}: fitted on {len(self.mean_)} pooled features, got {x.shape[1]} "
                             f"(column {self.inputs()[0]!r})")
        return ((x - self.mean_) / self.scale_).astype(np.float32)

    def _moments(self, train: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
        """The training set's per-feature mean and standard deviation (0 -> 1, as sklearn), in one
        streaming pass (batch means and squared deviations merged, Chan et al.)."""
        mean, m2, n = None, None, 0
        for cols, _, _ in train.batches(self.inputs(), POOL_BATCH):
            x = self._pooled(cols)
            bm, bn = x.mean(0), len(x)
            bm2 = ((x - bm) ** 2).sum(0)
            if mean is None:
                mean, m2, n = bm, bm2, bn
                continue
            delta, total = bm - mean, n + bn
            mean = mean + delta * (bn / total)
            m2 = m2 + bm2 + delta**2 * (n * bn / total)
            n = total
        assert mean is not None and m2 is not None
        std = np.sqrt(m2 / n)
        return mean, np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)

    # ------------------------------------------------------------ training

    def fit(self, train: FeatureSet, val: FeatureSet | None = None) -> Mlp:
        import torch

        from aigi.detectors.metrics import binary_metrics
        from aigi.features.base import resolve_torch_device

        check_labels(self.name, train.labels)
        if val is not None and set(np.unique(val.labels).tolist()) != {0, 1}:
            raise ValueError(f"{self.name}: early stopping needs both classes in the validation set")
        c = self.config
        device = resolve_torch_device(c.device)
        self.mean_, self.scale_ = self._moments(train)
        n_features = len(self.mean_)

        gen = torch.Generator(device=device).manual_seed(c.seed)
        params = _init(n_features, c.hidden, gen, device)
        opt = torch.optim.AdamW(params.values(), lr=c.lr, weight_decay=c.weight_decay)
        counts = np.bincount(train.labels, minlength=2)
        class_w = (len(train.labels) / (2.0 * counts) if c.class_weight == "balanced" else np.ones(2))
        class_w_t = torch.tensor(class_w, dtype=torch.float32, device=device)

        best, best_auroc, best_epoch, aurocs = None, -math.inf, -1, []
        for epoch in range(c.epochs):
            total, seen = 0.0, 0
            for cols, yb, _ in train.batches(self.inputs(), c.batch_size, shuffle=True, seed=c.seed + epoch):
                x = torch.from_numpy(self._standardized(cols)).to(device)
                y = torch.from_numpy(yb.astype(np.int64)).to(device)
                logit = _forward(params, x, c.dropout, gen)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y.float(), reduction="none")
                loss = (loss * class_w_t[y]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(yb)
                seen += len(yb)
            self.weights_ = {k: v.detach().cpu().numpy().copy() for k, v in params.items()}
            if val is None:
                log.info("%s epoch %d: train loss %.4f", self.name, epoch, total / seen)
                continue
            auroc = binary_metrics(val.labels, self.score(val))["auroc"]
            aurocs.append(auroc)
            log.info("%s epoch %d: train loss %.4f, val AUROC %.4f", self.name, epoch, total / seen, auroc)
            if auroc > best_auroc:
                best, best_auroc, best_epoch = dict(self.weights_), auroc, epoch
            elif epoch - best_epoch >= c.patience:
                log.info("%s: no better val AUROC for %d epochs; keeping epoch %d", self.name, c.patience, best_epoch)
                break
        if best is not None:
            self.weights_ = best
        self.history_ = {"epochs_run": epoch + 1, "best_epoch": best_epoch if val is not None else epoch,
                         "val_auroc": aurocs}
        return self

    def score(self, data: FeatureSet) -> np.ndarray:
        import torch
        from scipy.special import expit

        from aigi.features.base import resolve_torch_device

        if self.weights_ is None:
            raise RuntimeError(f"{self.name}: score() called before fit()")
        device = resolve_torch_device(self.config.device)
        params = {k: torch.from_numpy(v).to(device) for k, v in self.weights_.items()}
        out = np.empty(len(data), dtype=np.float64)
        with torch.inference_mode():
            for cols, _, pos in data.batches(self.inputs(), POOL_BATCH):
                x = torch.from_numpy(self._standardized(cols)).to(device)
                out[pos] = _forward(params, x, 0.0, None).cpu().numpy().astype(np.float64)
        return expit(out)

    # ------------------------------------------------------------ saving

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self.weights_ is None or self.mean_ is None or self.scale_ is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit()")
        return {"mean": self.mean_, "scale": self.scale_, **self.weights_}, dict(self.history_)

    def set_state(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        self.scale_ = np.asarray(arrays["scale"], dtype=np.float64)
        self.weights_ = {k: np.asarray(arrays[k], dtype=np.float32) for k in WEIGHTS}
        self.history_ = dict(values)


def _init(n_in: int, hidden: int, gen: Any, device: Any) -> dict[str, Any]:
    """torch.nn.Linear's default initialization (uniform +-1/sqrt(fan_in)), drawn from `gen`."""
    import torch

    def uniform(shape: tuple[int, ...], fan_in: int) -> Any:
        bound = 1.0 / math.sqrt(fan_in)
        u = torch.rand(shape, generator=gen, device=device, dtype=torch.float32)
        return (u * 2 - 1) * bound

    params = {"w1": uniform((hidden, n_in), n_in), "b1": uniform((hidden,), n_in),
              "w2": uniform((1, hidden), hidden), "b2": uniform((1,), hidden)}
    return {k: v.requires_grad_(True) for k, v in params.items()}


def _forward(p: dict[str, Any], x: Any, dropout: float, gen: Any) -> Any:
    """Logits (B,). Dropout (inverted, when `dropout` > 0) draws its mask from `gen`."""
    import torch

    h = torch.relu(x @ p["w1"].T + p["b1"])
    if dropout > 0:
        keep = torch.rand(h.shape, generator=gen, device=h.device) >= dropout
        h = h * keep / (1.0 - dropout)
    return (h @ p["w2"].T + p["b2"])[:, 0]
