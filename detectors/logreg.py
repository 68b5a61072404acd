"""Logistic regression on pooled cached features: the cheap linear probe every feature gets.

A (C, H, W) feature map (e.g. LaRE's 4x32x32) is average-pooled to (C, pool, pool) with the exact
semantics of torch's `adaptive_avg_pool2d`, flattened, standardized and fed to scikit-learn's
`LogisticRegression`. 1-D features (e.g. a CLIP embedding) are used as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.detectors.base import Detector


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
        check(bool(self.feature), "feature", "must name a feature extractor")
        check(bool(self.column), "column", "must name a feature column")
        check(self.pool >= 1, "pool", f"must be >= 1, got {self.pool}")
        check(self.C > 0, "C", f"must be > 0, got {self.C}")
        check(self.max_iter >= 1, "max_iter", f"must be >= 1, got {self.max_iter}")
        check(
            self.class_weight in ("balanced", "none"),
            "class_weight",
            f"must be 'balanced' or 'none', got {self.class_weight!r}",
        )


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


class LogReg(Detector):
    name = "logreg"
    version = 1
    Config = LogRegConfig

    def __init__(self, config: LogRegConfig) -> None:
        super().__init__(config)
        self.model_: Any = None
        self.n_features_: int | None = None

    def pooled(self, x: np.ndarray) -> np.ndarray:
        """Raw features (N, C, H, W) or (N, D) -> the (N, features) float64 matrix the model sees."""
        x = np.asarray(x)
        if x.ndim == 4:
            x = adaptive_avg_pool2d(x, self.config.pool)
        elif x.ndim != 2:
            raise ValueError(
                f"logreg: feature {self.config.column!r} must be (N, C, H, W) or (N, D), "
                f"got shape {x.shape}"
            )
        flat = x.reshape(len(x), -1).astype(np.float64)
        if not np.isfinite(flat).all():
            raise ValueError(f"logreg: feature {self.config.column!r} holds NaN or infinite values")
        return flat

    def fit(self, x: np.ndarray, y: np.ndarray) -> LogReg:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        feats = self.pooled(x)
        y = np.asarray(y)
        if y.shape != (len(feats),):
            raise ValueError(f"logreg: labels must have shape ({len(feats)},), got {y.shape}")
        if not np.isin(y, (0, 1)).all():
            raise ValueError("logreg: labels must be 0 (real) or 1 (generated)")
        present = set(np.unique(y).tolist())
        if present != {0, 1}:
            raise ValueError(
                f"logreg: training needs both real (0) and generated (1) images; only {sorted(present)} present"
            )
        c = self.config
        clf = LogisticRegression(
            C=c.C,
            max_iter=c.max_iter,
            class_weight=None if c.class_weight == "none" else "balanced",
            random_state=0,
        )
        steps = [("scale", StandardScaler())] if c.standardize else []
        self.model_ = Pipeline([*steps, ("clf", clf)]).fit(feats, y.astype(np.int64))
        self.n_features_ = feats.shape[1]
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise RuntimeError("logreg: score() called before fit()")
        feats = self.pooled(x)
        if feats.shape[1] != self.n_features_:
            raise ValueError(
                f"logreg: fitted on {self.n_features_} pooled features, got {feats.shape[1]} "
                f"(feature shape {np.shape(x)[1:]})"
            )
        proba = self.model_.predict_proba(feats)
        col = list(self.model_.classes_).index(1)
        return proba[:, col].astype(np.float64)
