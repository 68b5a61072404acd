"""CoDE's linear head: logistic regression on the raw 192-d CoDE embedding (methods.md §3.3).

The released recipe (`quantitative_evaluation/linear_training.py`) is
`LogisticRegression(C=0.316, class_weight='balanced', max_iter=1500, random_state=seed)` fitted on
all real and generated training embeddings, not standardized. The release thresholds its hard
`predict`; here the score is its `predict_proba` for "generated", so `score >= 0.5` is that same
decision and AP/AUROC are defined. scikit-learn fits; scoring is numpy on the kept coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.detectors.base import Detector, check_labels
from aigi.detectors.logreg import fit_logistic, logistic_score, pooled_matrix

if TYPE_CHECKING:
    from aigi.detectors.data import FeatureSet


@dataclass(frozen=True)
class CodeLinearConfig:
    feature: str = "code"
    column: str = "code"
    C: float = 0.316
    max_iter: int = 1500
    class_weight: Literal["balanced", "none"] = "balanced"
    #: the release passes random_state=seed; the lbfgs solver draws nothing with it
    seed: int = 0

    def __post_init__(self) -> None:
        check(bool(self.feature), "feature", "must name a feature extractor")
        check(bool(self.column), "column", "must name a feature column")
        check(self.C > 0, "C", f"must be > 0, got {self.C}")
        check(self.max_iter >= 1, "max_iter", f"must be >= 1, got {self.max_iter}")
        check(
            self.class_weight in ("balanced", "none"),
            "class_weight",
            f"must be 'balanced' or 'none', got {self.class_weight!r}",
        )


class CodeLinear(Detector):
    name = "code_linear"
    version = 1
    Config = CodeLinearConfig

    def __init__(self, config: CodeLinearConfig) -> None:
        super().__init__(config)
        self.state_: dict[str, np.ndarray] | None = None
        #: the fitted sklearn pipeline, for inspection only: not saved, None after `load`
        self.sklearn_: Any = None

    @classmethod
    def tiny(cls) -> tuple[CodeLinearConfig, dict[str, tuple[int, ...]]]:
        return CodeLinearConfig(), {"code.code": (32,)}

    def _features(self, data: FeatureSet) -> np.ndarray:
        return pooled_matrix(data, self.inputs()[0], None, self.name)

    def fit(self, train: FeatureSet, val: FeatureSet | None = None) -> CodeLinear:
        check_labels(self.name, train.labels)
        c = self.config
        self.state_, self.sklearn_ = fit_logistic(
            self._features(train), train.labels, C=c.C, max_iter=c.max_iter, class_weight=c.class_weight,
            standardize=False, random_state=c.seed,
        )
        return self

    def score(self, data: FeatureSet) -> np.ndarray:
        if self.state_ is None:
            raise RuntimeError(f"{self.name}: score() called before fit()")
        feats = self._features(data)
        if len(feats) == 0:
            return np.zeros(0, dtype=np.float64)
        if feats.shape[1] != len(self.state_["coef"]):
            raise ValueError(f"{self.name}: fitted on {len(self.state_['coef'])}-d embeddings, got {feats.shape[1]}-d")
        return logistic_score(feats, self.state_)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self.state_ is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit()")
        return {"coef": self.state_["coef"], "intercept": self.state_["intercept"]}, {}

    def set_state(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        coef = np.asarray(arrays["coef"], dtype=np.float64)
        self.state_ = {"mean": np.zeros_like(coef), "scale": np.ones_like(coef), "coef": coef,
                       "intercept": np.asarray(arrays["intercept"], dtype=np.float64)}
        self.sklearn_ = None
