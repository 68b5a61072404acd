"""Logistic regression on pooled cached features: the cheap linear probe every feature gets.

A (C, H, W) feature map (e.g. LaRE's 4x32x32) is average-pooled to (C, pool, pool) with the exact
semantics of torch's `adaptive_avg_pool2d`, flattened, standardized and fed to scikit-learn's
`LogisticRegression`. 1-D features (e.g. a CLIP embedding) are used as they are.

scikit-learn fits; the fitted numbers (the scaler's mean and scale, the coefficients and the
intercept) are kept and scoring is numpy: sigmoid(((x - mean) / scale) @ coef + intercept), which
is what the fitted pipeline's `predict_proba` computes. The helpers here (pooling, the logistic
fit and score) are shared by `code_linear` and `mlp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.detectors.base import Detector, check_input, check_labels

if TYPE_CHECKING:
    from aigi.detectors.data import FeatureSet

#: rows pooled at a time: a column is never held whole at full resolution
POOL_BATCH = 4096


@dataclass(frozen=True)
class LogRegConfig:
    feature: str = "lare"
    column: str = "lare"
    pool: int = 4
    C: float = 1.0
    max_iter: int = 1000
    class_weight: Literal["balanced", "none"] = "balanced"
    standardize: bool = True

    def __post_init__(self) -> None:
        check_input(self)
        check(self.pool >= 1, "pool", f"must be >= 1, got {self.pool}")
        check(self.C > 0, "C", f"must be > 0, got {self.C}")
        check(self.max_iter >= 1, "max_iter", f"must be >= 1, got {self.max_iter}")


def adaptive_avg_pool2d(x: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C, size, size), bin i covering [floor(i*H/size), ceil((i+1)*H/size)).

    These are torch's bins, so sizes that do not divide H or W (overlapping bins) match too.
    """
    n, c, h, w = x.shape
    out = np.empty((n, c, size, size), dtype=np.float64)
    for i in range(size):
        h0, h1 = (i * h) // size, -(-((i + 1) * h) // size)
        for j in range(size):
            w0, w1 = (j * w) // size, -(-((j + 1) * w) // size)
            # Sum in float64: float16 maps would lose precision over a large bin.
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].astype(np.float64).mean(axis=(2, 3))
    return out


def pool_features(x: np.ndarray, pool: int | None, who: str, column: str) -> np.ndarray:
    """Raw features (N, C, H, W) or (N, D) -> the (N, features) float64 matrix a head sees.

    Maps are average-pooled to (C, pool, pool); `pool=None` accepts only 1-D features."""
    x = np.asarray(x)
    if x.ndim == 4 and pool is not None:
        x = adaptive_avg_pool2d(x, pool)
    elif x.ndim != 2:
        want = "(N, C, H, W) or (N, D)" if pool is not None else "a 1-D embedding per image, (N, D)"
        raise ValueError(f"{who}: feature {column!r} must be {want}, got shape {x.shape}")
    flat = x.reshape(len(x), -1).astype(np.float64)
    if not np.isfinite(flat).all():
        raise ValueError(f"{who}: feature {column!r} holds NaN or infinite values")
    return flat


def pooled_matrix(data: FeatureSet, column: str, pool: int | None, who: str) -> np.ndarray:
    """`pool_features` of a whole column, read in batches (in the set's order)."""
    out: np.ndarray | None = None
    for cols, _, pos in data.batches([column], POOL_BATCH):
        feats = pool_features(cols[column], pool, who, column)
        if out is None:
            out = np.empty((len(data), feats.shape[1]), dtype=np.float64)
        out[pos] = feats
    if out is None:  # an empty set: no rows, width unknown
        return np.zeros((0, 0), dtype=np.float64)
    return out


def fit_logistic(
    feats: np.ndarray, y: np.ndarray, *, C: float, max_iter: int, class_weight: str, standardize: bool,
    random_state: int = 0,
) -> tuple[dict[str, np.ndarray], Any]:
    """Fit (StandardScaler +) LogisticRegression; return its numbers (mean, scale, coef,
    intercept; mean 0 and scale 1 without standardizing) and the fitted sklearn pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(
        C=C, max_iter=max_iter, class_weight=None if class_weight == "none" else class_weight,
        random_state=random_state,
    )
    steps = [("scale", StandardScaler())] if standardize else []
    model = Pipeline([*steps, ("clf", clf)]).fit(feats, y.astype(np.int64))
    d = feats.shape[1]
    assert list(clf.classes_) == [0, 1]  # the coefficients favour classes_[1] = generated
    arrays = {
        "mean": model.named_steps["scale"].mean_.astype(np.float64) if standardize else np.zeros(d),
        "scale": model.named_steps["scale"].scale_.astype(np.float64) if standardize else np.ones(d),
        "coef": clf.coef_[0].astype(np.float64),
        "intercept": clf.intercept_.astype(np.float64),
    }
    return arrays, model


def logistic_score(feats: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """P(generated) = sigmoid(((x - mean) / scale) @ coef + intercept), as sklearn computes it."""
    from scipy.special import expit

    z = ((feats - arrays["mean"]) / arrays["scale"]) @ arrays["coef"] + arrays["intercept"][0]
    return expit(z).astype(np.float64)


class LogReg(Detector):
    name = "logreg"
    version = 2
    Config = LogRegConfig

    def __init__(self, config: LogRegConfig) -> None:
        super().__init__(config)
        self.state_: dict[str, np.ndarray] | None = None
        #: the fitted sklearn pipeline, for inspection only: not saved, None after `load`
        self.sklearn_: Any = None

    @classmethod
    def tiny(cls) -> tuple[LogRegConfig, dict[str, tuple[int, ...]]]:
        return LogRegConfig(feature="lare", column="lare", pool=2), {"lare.lare": (4, 8, 8)}

    def pooled(self, x: np.ndarray) -> np.ndarray:
        """Raw features (N, C, H, W) or (N, D) -> the (N, features) float64 matrix the model sees."""
        return pool_features(x, self.config.pool, self.name, self.config.column)

    def _pool(self) -> int | None:
        """The pooled size of a map (None: the feature is used as it is)."""
        return self.config.pool

    def _fit_options(self) -> dict[str, Any]:
        return {"standardize": self.config.standardize}

    def fit(self, train: FeatureSet, val: FeatureSet | None = None) -> LogReg:
        check_labels(self.name, train.labels)
        feats = pooled_matrix(train, self.inputs()[0], self._pool(), self.name)
        c = self.config
        self.state_, self.sklearn_ = fit_logistic(
            feats, train.labels, C=c.C, max_iter=c.max_iter, class_weight=c.class_weight, **self._fit_options()
        )
        return self

    def score(self, data: FeatureSet) -> np.ndarray:
        if self.state_ is None:
            raise RuntimeError(f"{self.name}: score() called before fit()")
        feats = pooled_matrix(data, self.inputs()[0], self._pool(), self.name)
        if len(feats) == 0:
            return np.zeros(0, dtype=np.float64)
        n_features = len(self.state_["coef"])
        if feats.shape[1] != n_features:
            raise ValueError(
                f"{self.name}: fitted on {n_features} pooled features, got {feats.shape[1]} "
                f"(column {self.inputs()[0]!r})"
            )
        return logistic_score(feats, self.state_)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self.state_ is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit()")
        return dict(self.state_), {"n_features": len(self.state_["coef"])}

    def set_state(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        self.state_ = {k: np.asarray(arrays[k], dtype=np.float64) for k in ("mean", "scale", "coef", "intercept")}
        self.sklearn_ = None
