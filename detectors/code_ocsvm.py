"""CoDE's one-class SVM head: a novelty detector fitted on real embeddings only (methods.md §3.3).

The released recipe is `OneClassSVM(kernel='poly', gamma='auto', nu=0.1)` (degree 3, coef0 0)
fitted on the **real** training embeddings, raw; `predict` gives +1 (inlier) = real and -1
(outlier) = generated. The score is a monotone map of the decision function d (positive inside
the reals' region):

    score = sigmoid(-d / s),   s = the standard deviation of d over the training reals,

so `score >= 0.5` is the released decision (d <= 0 called generated; d = 0 exactly, an inlier
for sklearn, is the only disagreement) and AP/AUROC rank by -d. Dividing by s keeps the sigmoid
out of saturation whatever the scale of d (which grows with the kernel's degree).

scikit-learn (libsvm) fits; the kept numbers are the support vectors, their dual coefficients,
the intercept (-rho) and the resolved gamma, and scoring is numpy:
d(x) = sum_i dual_coef_i K(sv_i, x) + intercept, K the config's kernel.

Note on the released kernel: with coef0 = 0 the cubic kernel is odd, K(-x, y) = -K(x, y), so the
model flags images whose embedding points away from the reals' mean direction, not arbitrary
outliers (on centred data it is near chance). CoDE embeddings are not centred (a LayerNorm
output), which is what the release relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.detectors.base import Detector, check_input
from aigi.detectors.logreg import pooled_matrix

if TYPE_CHECKING:
    from aigi.detectors.data import FeatureSet

#: query rows compared with the support vectors at a time
QUERY_BATCH = 1024


@dataclass(frozen=True)
class CodeOcsvmConfig:
    feature: str = "code"
    column: str = "code"
    kernel: Literal["poly", "rbf", "linear", "sigmoid"] = "poly"
    nu: float = 0.1
    #: "auto" = 1 / n_features (the release), "scale" = 1 / (n_features * X.var()), or a number > 0
    gamma: Literal["auto", "scale"] | float = "auto"
    degree: int = 3
    coef0: float = 0.0
    tol: float = 1e-3

    def __post_init__(self) -> None:
        check_input(self)
        check(self.kernel in ("poly", "rbf", "linear", "sigmoid"), "kernel",
              f"must be poly, rbf, linear or sigmoid, got {self.kernel!r}")
        check(0 < self.nu <= 1, "nu", f"must be in (0, 1], got {self.nu}")
        number = isinstance(self.gamma, (int, float)) and not isinstance(self.gamma, bool)
        check(self.gamma in ("auto", "scale") or (number and self.gamma > 0), "gamma",
              f"must be 'auto', 'scale' or a number > 0, got {self.gamma!r}")
        check(self.degree >= 1, "degree", f"must be >= 1, got {self.degree}")
        check(self.tol > 0, "tol", f"must be > 0, got {self.tol}")


def kernel(a: np.ndarray, b: np.ndarray, kind: str, gamma: float, degree: int, coef0: float) -> np.ndarray:
    """libsvm's kernels, (len(a), len(b)), float64."""
    if kind == "rbf":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
        return np.exp(-gamma * np.maximum(sq, 0.0))
    dot = a @ b.T
    if kind == "linear":
        return dot
    if kind == "poly":
        return (gamma * dot + coef0) ** degree
    if kind == "sigmoid":
        return np.tanh(gamma * dot + coef0)
    raise ValueError(f"unknown kernel {kind!r}")


class CodeOcsvm(Detector):
    name = "code_ocsvm"
    version = 1
    Config = CodeOcsvmConfig

    def __init__(self, config: CodeOcsvmConfig) -> None:
        super().__init__(config)
        self.state_: dict[str, np.ndarray] | None = None
        self.gamma_: float | None = None
        self.scale_: float | None = None
        #: the fitted sklearn OneClassSVM, for inspection only: not saved, None after `load`
        self.sklearn_: Any = None

    @classmethod
    def tiny(cls) -> tuple[CodeOcsvmConfig, dict[str, tuple[int, ...]]]:
        return CodeOcsvmConfig(), {"code.code": (32,)}

    def fit(self, train: FeatureSet, val: FeatureSet | None = None) -> CodeOcsvm:
        from sklearn.svm import OneClassSVM

        if not np.isin(train.labels, (0, 1)).all():
            raise ValueError(f"{self.name}: labels must be 0 (real) or 1 (generated)")
        reals = train.subset(train.labels == 0)
        if len(reals) < 2:
            raise ValueError(f"{self.name}: fits on real images only and needs at least 2; got {len(reals)}")
        x = pooled_matrix(reals, self.inputs()[0], None, self.name)
        c = self.config
        svm = OneClassSVM(kernel=c.kernel, nu=c.nu, gamma=c.gamma, degree=c.degree, coef0=c.coef0, tol=c.tol)
        svm.fit(x)
        self.sklearn_ = svm
        self.gamma_ = float(svm._gamma)  # the resolved gamma ("auto"/"scale" -> a number)
        self.state_ = {
            "support_vectors": np.asarray(svm.support_vectors_, dtype=np.float64),
            "dual_coef": np.asarray(svm.dual_coef_[0], dtype=np.float64),
            "intercept": np.asarray(svm.intercept_, dtype=np.float64),
        }
        d = self._decision(x)
        spread = float(d.std())
        self.scale_ = spread if spread > 0 else 1.0  # all reals on the boundary: no scale to learn
        return self

    def _decision(self, x: np.ndarray) -> np.ndarray:
        assert self.state_ is not None and self.gamma_ is not None
        s, c = self.state_, self.config
        out = np.empty(len(x))
        for lo in range(0, len(x), QUERY_BATCH):
            k = kernel(x[lo : lo + QUERY_BATCH], s["support_vectors"], c.kernel, self.gamma_, c.degree, c.coef0)
            out[lo : lo + QUERY_BATCH] = k @ s["dual_coef"] + s["intercept"][0]
        return out

    def decision_function(self, data: FeatureSet) -> np.ndarray:
        """sklearn's `decision_function`: > 0 inside the reals' region (real), < 0 outside."""
        if self.state_ is None:
            raise RuntimeError(f"{self.name}: score() called before fit()")
        x = pooled_matrix(data, self.inputs()[0], None, self.name)
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        width = self.state_["support_vectors"].shape[1]
        if x.shape[1] != width:
            raise ValueError(f"{self.name}: fitted on {width}-d embeddings, got {x.shape[1]}-d")
        return self._decision(x)

    def score(self, data: FeatureSet) -> np.ndarray:
        from scipy.special import expit

        d = self.decision_function(data)
        assert self.scale_ is not None
        return expit(-d / self.scale_).astype(np.float64)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self.state_ is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit()")
        return dict(self.state_), {"gamma": self.gamma_, "scale": self.scale_}

    def set_state(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        self.state_ = {k: np.asarray(arrays[k], dtype=np.float64)
                       for k in ("support_vectors", "dual_coef", "intercept")}
        self.gamma_, self.scale_ = float(values["gamma"]), float(values["scale"])
        self.sklearn_ = None
