"""CoDE's kNN head: 1-nearest neighbour by cosine similarity on the CoDE embedding (methods.md §3.3).

The released recipe is `KNeighborsClassifier(n_neighbors=1, metric='cosine', weights='uniform')`
fitted on all real and generated training embeddings: an image takes the label of its most
cosine-similar training embedding. The training bank (L2-normalized embeddings, float32, and
their labels) is the saved state.

A hard label has no AP or AUROC, so the score is continuous: with `g` the cosine similarity to
the nearest *generated* training embedding and `r` that to the nearest *real* one,

    score = (g - r + 2) / 4,   in [0, 1] since g, r are in [-1, 1].

It is monotone in the margin g - r, and `score > 0.5` exactly when the nearest neighbour is
generated, so thresholding at 0.5 is the released 1-NN decision (a tie g = r, where the release
takes whichever neighbour its search meets first, is called generated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from aigi.detectors.base import Detector, check_input, check_labels
from aigi.detectors.logreg import pooled_matrix

if TYPE_CHECKING:
    from aigi.detectors.data import FeatureSet

#: query rows compared with the bank at a time (bounds the (rows, bank) similarity matrix)
QUERY_BATCH = 256


@dataclass(frozen=True)
class CodeKnnConfig:
    feature: str = "code"
    column: str = "code"

    def __post_init__(self) -> None:
        check_input(self)


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); an all-zero row stays zero (similarity 0 to all)."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


class CodeKnn(Detector):
    name = "code_knn"
    version = 1
    Config = CodeKnnConfig

    def __init__(self, config: CodeKnnConfig) -> None:
        super().__init__(config)
        self.bank_: np.ndarray | None = None  # (M, D) float32, unit rows
        self.bank_labels_: np.ndarray | None = None  # (M,) int64

    @classmethod
    def tiny(cls) -> tuple[CodeKnnConfig, dict[str, tuple[int, ...]]]:
        return CodeKnnConfig(), {"code.code": (32,)}

    def fit(self, train: FeatureSet, val: FeatureSet | None = None) -> CodeKnn:
        check_labels(self.name, train.labels)
        feats = pooled_matrix(train, self.inputs()[0], None, self.name)
        # stored in float32 (half the bytes); scoring always reads these same rounded numbers
        self.bank_ = normalize(feats).astype(np.float32)
        self.bank_labels_ = train.labels.astype(np.int64).copy()
        return self

    def similarities(self, data: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
        """(g, r): each image's cosine similarity to its nearest generated and nearest real
        training embedding."""
        if self.bank_ is None or self.bank_labels_ is None:
            raise RuntimeError(f"{self.name}: score() called before fit()")
        q = normalize(pooled_matrix(data, self.inputs()[0], None, self.name))
        g, r = np.empty(len(q)), np.empty(len(q))
        if len(q) == 0:
            return g, r
        if q.shape[1] != self.bank_.shape[1]:
            raise ValueError(f"{self.name}: fitted on {self.bank_.shape[1]}-d embeddings, got {q.shape[1]}-d")
        bank = self.bank_.astype(np.float64)
        fake = self.bank_labels_ == 1
        for lo in range(0, len(q), QUERY_BATCH):
            sim = q[lo : lo + QUERY_BATCH] @ bank.T
            g[lo : lo + QUERY_BATCH] = sim[:, fake].max(axis=1)
            r[lo : lo + QUERY_BATCH] = sim[:, ~fake].max(axis=1)
        return g, r

    def score(self, data: FeatureSet) -> np.ndarray:
        g, r = self.similarities(data)
        return np.clip((g - r + 2.0) / 4.0, 0.0, 1.0)  # clip: rounding can step past +-1

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self.bank_ is None or self.bank_labels_ is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit()")
        return {"bank": self.bank_, "labels": self.bank_labels_}, {}

    def set_state(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        self.bank_ = np.asarray(arrays["bank"], dtype=np.float32)
        self.bank_labels_ = np.asarray(arrays["labels"], dtype=np.int64)
