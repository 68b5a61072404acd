"""Detection metrics: ACC at a fixed threshold (stated as such), AP and AUROC, per generator.

Positive class = generated (label 1). ACC is the raw accuracy at threshold 0.5, not an oracle
threshold (methods.md §1.3). Per-generator evaluation pairs each generator's fakes with *all*
real images of the same evaluation set, GenImage-style (methods.md §7).
"""

from __future__ import annotations

import numpy as np

NAN = float("nan")
ALL = "all"


def _check(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    score = np.asarray(score, dtype=np.float64)
    if y.ndim != 1 or score.shape != y.shape:
        raise ValueError(f"metrics: labels {y.shape} and scores {score.shape} must be equal-length 1-D arrays")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("metrics: labels must be 0 (real) or 1 (generated)")
    if not np.isfinite(score).all():
        raise ValueError("metrics: scores hold NaN or infinite values")
    return y.astype(np.int64), score


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else NAN


def binary_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict:
    """n_real, n_fake, acc, real_acc, fake_acc, ap, auroc.

    An image is called generated when `score >= threshold`. When a class is absent its accuracy,
    AP and AUROC are NaN (undefined), not an error, so a table can still show the other rows.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, score = _check(y, score)
    pred = (score >= threshold).astype(np.int64)
    correct = pred == y
    real, fake = y == 0, y == 1
    both = bool(real.any() and fake.any())
    return {
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
        "acc": _mean(correct),
        "real_acc": _mean(correct[real]),
        "fake_acc": _mean(correct[fake]),
        "ap": float(average_precision_score(y, score)) if both else NAN,
        "auroc": float(roc_auc_score(y, score)) if both else NAN,
    }


def per_generator(source: np.ndarray, y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> list[dict]:
    """One row per generator (its fakes vs all reals), sorted by name, then a row "all"."""
    y, score = _check(y, score)
    source = np.asarray(source).astype(str)
    if source.shape != y.shape:
        raise ValueError(f"metrics: sources {source.shape} and labels {y.shape} must have equal length")
    real = y == 0
    generators = sorted(set(source[y == 1].tolist()))
    if ALL in generators:
        raise ValueError(f"metrics: a generator may not be named {ALL!r}: it names the overall row")
    rows = []
    for g in generators:
        keep = real | ((y == 1) & (source == g))
        rows.append({"generator": g, **binary_metrics(y[keep], score[keep], threshold)})
    rows.append({"generator": ALL, **binary_metrics(y, score, threshold)})
    return rows

