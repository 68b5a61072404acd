"""CoDE's linear head: logistic regression on the raw 192-d CoDE embedding (methods.md §3.3).

The released recipe (`quantitative_evaluation/linear_training.py`) is
`LogisticRegression(C=0.316, class_weight='balanced', max_iter=1500, random_state=seed)` fitted on
all real and generated training embeddings, not standardized. The release thresholds its hard
`predict`; here the score is its `predict_proba` for "generated", so `score >= 0.5` is that same
decision and AP/AUROC are defined. scikit-learn fits; scoring is numpy on the kept coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aigi.core.configtools import check
from aigi.detectors.base import check_input
from aigi.detectors.logreg import LogReg


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
        check_input(self)
        check(self.C > 0, "C", f"must be > 0, got {self.C}")
        check(self.max_iter >= 1, "max_iter", f"must be >= 1, got {self.max_iter}")


class CodeLinear(LogReg):
    """LogReg's fitting and numpy scoring, with CoDE's recipe: the raw embedding, no standardizing."""

    name = "code_linear"
    version = 2  # v2: the state of a LogReg (mean 0, scale 1)
    Config = CodeLinearConfig

    @classmethod
    def tiny(cls) -> tuple[CodeLinearConfig, dict[str, tuple[int, ...]]]:  # type: ignore[override]
        return CodeLinearConfig(), {"code.code": (32,)}

    def _pool(self) -> int | None:
        return None

    def _fit_options(self) -> dict[str, Any]:
        return {"standardize": False, "random_state": self.config.seed}
