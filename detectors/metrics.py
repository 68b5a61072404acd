"""Detection metrics: ACC at a fixed threshold (stated as such), AP and AUROC, per generator.

Positive class = generated (label 1). ACC is the raw accuracy at threshold 0.5, not an oracle
threshold (methods.md §1.3). Per-generator evaluation pairs each generator's fakes with *all*
real images of the same evaluation set, GenImage-style (methods.md §7).

Besides the headline columns each row has
- `balanced_acc`: the mean of real and fake accuracy at the same threshold;
- `tpr_at_1fpr`: the largest TPR among thresholds whose FPR is <= 1% (on the ROC curve, every
  distinct score is a threshold, "score >= t" called generated; t = +inf gives (0, 0));
- `oracle_acc`: the best accuracy over all thresholds. It peeks at the test labels, so it is an
  upper bound reported in its own column, never the headline ACC.
`bootstrap_ci` and `with_intervals` give percentile intervals from a stratified bootstrap (reals
and fakes resampled separately, so every replicate keeps the class counts).

All threshold metrics come from one sort of the scores (`_curves`), which also takes integer
weights: a bootstrap replicate is the same sorted array with each image weighted by how many
times it was drawn, so 1000 replicates cost 1000 cumulative sums, not 1000 sorts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

NAN = float("nan")
ALL = "all"
#: the FPR bound of `tpr_at_1fpr`
FPR_BOUND = 0.01
#: the metrics `with_intervals` bounds, as `<metric>_low` / `<metric>_high`
INTERVAL_METRICS = ("acc", "ap", "auroc", "tpr_at_1fpr")


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


# ---------------------------------------------------------------- ranking metrics from one sort


class _Sorted:
    """Scores sorted from high to low, with the end of each group of equal scores."""

    def __init__(self, y: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(-score, kind="mergesort")
        s = score[self.order]
        self.y = y[self.order].astype(np.float64)
        # the last position of each run of equal scores: one ROC point per distinct threshold
        self.ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]


def _curves(srt: _Sorted, w: np.ndarray) -> dict[str, np.ndarray]:
    """AP, AUROC, TPR@1%FPR and oracle accuracy for each row of weights `w` (B, N), N in sorted order."""
    tps = np.cumsum(w * srt.y, axis=1)[:, srt.ends]
    fps = np.cumsum(w * (1.0 - srt.y), axis=1)[:, srt.ends]
    pos, neg = tps[:, -1:], fps[:, -1:]
    zero = np.zeros((len(w), 1))
    tps, fps = np.hstack([zero, tps]), np.hstack([zero, fps])  # the t = +inf point (0, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, fpr = tps / pos, fps / neg
        called = tps + fps
        precision = np.where(called > 0, tps / np.where(called > 0, called, 1.0), 0.0)
        acc = (tps + neg - fps) / (pos + neg)
    auroc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)
    # AP = sum over thresholds of (recall gained) x (precision there), sklearn's definition
    ap = np.sum(np.diff(tpr, axis=1) * precision[:, 1:], axis=1)
    tpr_low_fpr = np.max(np.where(fpr <= FPR_BOUND, tpr, -np.inf), axis=1)
    oracle = np.max(acc, axis=1)
    both = (pos[:, 0] > 0) & (neg[:, 0] > 0)
    out = {"ap": ap, "auroc": auroc, "tpr_at_1fpr": tpr_low_fpr, "oracle_acc": oracle}
    return {k: np.where(both, v, NAN) for k, v in out.items()}


def binary_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict:
    """n_real, n_fake, acc, real_acc, fake_acc, balanced_acc, ap, auroc, tpr_at_1fpr, oracle_acc.

    An image is called generated when `score >= threshold`. When a class is absent its accuracy,
    the balanced accuracy and the ranking metrics are NaN (undefined), not an error, so a table
    can still show the other rows.
    """
    y, score = _check(y, score)
    pred = (score >= threshold).astype(np.int64)
    correct = pred == y
    real, fake = y == 0, y == 1
    real_acc, fake_acc = _mean(correct[real]), _mean(correct[fake])
    if len(y):
        ranking = {k: float(v[0]) for k, v in _curves(_Sorted(y, score), np.ones((1, len(y)))).items()}
    else:
        ranking = dict.fromkeys(("ap", "auroc", "tpr_at_1fpr", "oracle_acc"), NAN)
    return {
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
        "acc": _mean(correct),
        "real_acc": real_acc,
        "fake_acc": fake_acc,
        "balanced_acc": (real_acc + fake_acc) / 2,  # NaN when a class is absent
        "ap": ranking["ap"],
        "auroc": ranking["auroc"],
        "tpr_at_1fpr": ranking["tpr_at_1fpr"],
        "oracle_acc": ranking["oracle_acc"],
    }


def _row_mask(source: np.ndarray, y: np.ndarray, generator: str) -> np.ndarray:
    """The images of a per-generator row: all reals plus that generator's fakes ("all": everything)."""
    if generator == ALL:
        return np.ones(len(y), dtype=bool)
    return (y == 0) | ((y == 1) & (source == generator))


def per_generator(source: np.ndarray, y: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> list[dict]:
    """One row per generator (its fakes vs all reals), sorted by name, then a row "all"."""
    y, score = _check(y, score)
    source = _check_source(source, y)
    generators = sorted(set(source[y == 1].tolist()))
    if ALL in generators:
        raise ValueError(f"metrics: a generator may not be named {ALL!r}: it names the overall row")
    rows = []
    for g in [*generators, ALL]:
        keep = _row_mask(source, y, g)
        rows.append({"generator": g, **binary_metrics(y[keep], score[keep], threshold)})
    return rows


def _check_source(source: np.ndarray, y: np.ndarray) -> np.ndarray:
    source = np.asarray(source).astype(str)
    if source.shape != y.shape:
        raise ValueError(f"metrics: sources {source.shape} and labels {y.shape} must have equal length")
    return source


# ---------------------------------------------------------------- bootstrap intervals


def _draws(y: np.ndarray, n: int, seed: int) -> Iterator[np.ndarray]:
    """`n` stratified resamples of positions: the reals, then the fakes, each drawn with replacement."""
    rng = np.random.default_rng(seed)
    real, fake = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    for _ in range(n):
        yield np.concatenate([real[rng.integers(0, len(real), len(real))],
                              fake[rng.integers(0, len(fake), len(fake))]])


def _interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    if len(values) == 0 or np.isnan(values).any():  # the metric is undefined on some replicate
        return NAN, NAN
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _check_bootstrap(n: int, alpha: float) -> None:
    if n < 1:
        raise ValueError(f"metrics: bootstrap needs n >= 1 replicates, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"metrics: alpha must be in (0, 1), got {alpha}")


def bootstrap_ci(
    y: np.ndarray, score: np.ndarray, metric_fn: Callable[[np.ndarray, np.ndarray], float],
    n: int = 1000, seed: int = 0, alpha: float = 0.05,
) -> tuple[float, float]:
    """The (alpha/2, 1 - alpha/2) percentile interval of `metric_fn(y, score)` over `n` stratified
    bootstrap replicates (reals and fakes resampled separately). (NaN, NaN) when the metric is
    undefined (NaN) on any replicate, e.g. AUROC without reals."""
    y, score = _check(y, score)
    _check_bootstrap(n, alpha)
    values = np.array([float(metric_fn(y[idx], score[idx])) for idx in _draws(y, n, seed)])
    return _interval(values, alpha)


def with_intervals(
    rows: list[dict], source: np.ndarray, y: np.ndarray, score: np.ndarray, threshold: float = 0.5,
    n: int = 1000, seed: int = 0, alpha: float = 0.05,
) -> list[dict]:
    """`rows` from `per_generator(source, y, score, threshold)`, each with `<m>_low` / `<m>_high`
    for m in acc, ap, auroc, tpr_at_1fpr: the bootstrap interval of `bootstrap_ci` (same draws for
    the same seed) over that row's images (the generator's fakes and all reals; "all": all)."""
    y, score = _check(y, score)
    source = _check_source(source, y)
    _check_bootstrap(n, alpha)
    out = []
    for row in rows:
        keep = _row_mask(source, y, row["generator"])
        if row["generator"] != ALL and not (keep & (y == 1)).any():
            raise ValueError(f"metrics: no generated images from {row['generator']!r} for its interval")
        values = _replicates(y[keep], score[keep], threshold, n, seed)
        bounds = {}
        for m in INTERVAL_METRICS:
            bounds[f"{m}_low"], bounds[f"{m}_high"] = _interval(values[m], alpha)
        out.append({**row, **bounds})
    return out


def _replicates(y: np.ndarray, score: np.ndarray, threshold: float, n: int, seed: int,
                block: int = 64) -> dict[str, np.ndarray]:
    """The interval metrics on each of `n` replicates, as weights on one sorted copy."""
    srt = _Sorted(y, score)
    correct = ((score >= threshold).astype(np.int64) == y).astype(np.float64)
    values: dict[str, list[np.ndarray]] = {m: [] for m in INTERVAL_METRICS}
    draws = _draws(y, n, seed)
    for lo in range(0, n, block):
        w = np.stack([np.bincount(next(draws), minlength=len(y)) for _ in range(min(block, n - lo))])
        w = w.astype(np.float64)
        values["acc"].append(w @ correct / w.sum(axis=1))
        curves = _curves(srt, w[:, srt.order])
        for m in ("ap", "auroc", "tpr_at_1fpr"):
            values[m].append(curves[m])
    return {m: np.concatenate(v) for m, v in values.items()}
