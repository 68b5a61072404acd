"""The two-sample 2-D Kolmogorov–Smirnov test (Peacock 1983; Fasano & Franceschini 1987).

The statistic and analytic p-value of `ndtest.ks2d2s(x1, y1, x2, y2, extra=True)` (syrte/ndtest),
the test the Anomaly Score (AS) paper uses as its model-level score (methods.md §4.4), rewritten
from the description there with numpy broadcasting instead of a Python loop over points.

For every point of sample 1, the fractions of sample 1 and of sample 2 in the four quadrants around
it, split with `<=` on both axes: (x<=, y<=), (x<=, y>), (x>, y<=), (x>, y>). The signed differences
(sample 1 − sample 2) form an (n1, 4) table; 1/n1 is subtracted from the first quadrant (the point
itself), and D1 = max(−min, max + 1/n1). D2 is the same with the samples swapped; D = (D1 + D2) / 2.

Cost: O(n1·(n1 + n2)) comparisons, done in row chunks of at most `max_elems` booleans so memory
stays bounded (n ≈ 2·10⁴ takes a few seconds).
"""

from __future__ import annotations

import math

import numpy as np

#: Booleans per comparison block; bounds memory at a few MB whatever the sample sizes.
MAX_ELEMS = 1 << 22


def ks2d_statistic(
    x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, *, max_elems: int = MAX_ELEMS
) -> float:
    """The Fasano–Franceschini statistic D of two 2-D samples (ndtest's `avgmaxdist`)."""
    s1 = _sample(x1, y1, "1")
    s2 = _sample(x2, y2, "2")
    d1 = _maxdist(s1, s2, max_elems)
    d2 = _maxdist(s2, s1, max_elems)
    return (d1 + d2) / 2


def ks2d_pvalue(D: float, x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> float:
    """ndtest's analytic p-value for statistic `D` (no bootstrap).

    Only an approximation, meaningful for n ≳ 20 and p ≲ 0.2 (ndtest's docstring). NaN when a
    sample has fewer than 2 points or a constant coordinate (its Pearson r is undefined).
    """
    from scipy.stats import kstwobign

    (ax1, ay1), (ax2, ay2) = _sample(x1, y1, "1"), _sample(x2, y2, "2")
    n1, n2 = len(ax1), len(ax2)
    sqen = math.sqrt(n1 * n2 / (n1 + n2))
    r1, r2 = _pearson(ax1, ay1), _pearson(ax2, ay2)
    r = math.sqrt(1 - 0.5 * (r1**2 + r2**2))
    d = D * sqen / (1 + r * (0.25 - 0.75 / sqen))
    return float(kstwobign.sf(d))


def _sample(x: np.ndarray, y: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(x) != len(y):
        raise ValueError(f"sample {which}: x has {len(x)} values and y {len(y)}; they must match")
    if len(x) == 0:
        raise ValueError(f"sample {which} is empty")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"sample {which} has NaN or infinite values")
    return x, y


def _maxdist(s1: tuple[np.ndarray, np.ndarray], s2: tuple[np.ndarray, np.ndarray], max_elems: int) -> float:
    (x1, y1), (x2, y2) = s1, s2
    n1 = len(x1)
    rows = max(1, max_elems // max(n1, len(x2)))
    lo, hi = math.inf, -math.inf
    for start in range(0, n1, rows):
        px, py = x1[start : start + rows, None], y1[start : start + rows, None]
        diff = _fractions(px, py, x1, y1) - _fractions(px, py, x2, y2)
        diff[:, 0] -= 1 / n1  # the point itself, "re-assigned" as ndtest does
        lo, hi = min(lo, float(diff.min())), max(hi, float(diff.max()))
    return max(-lo, hi + 1 / n1)


def _fractions(px: np.ndarray, py: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """(rows, 4) fractions of (xx, yy) in the quadrants around each (px, py)."""
    n = len(xx)
    left = xx[None, :] <= px
    below = yy[None, :] <= py
    both = np.count_nonzero(left & below, axis=1)
    # Integer counts divided once, and d = 1 - a - b - c, as ndtest's quadct computes them.
    a = both / n
    b = (np.count_nonzero(left, axis=1) - both) / n
    c = (np.count_nonzero(below, axis=1) - both) / n
    return np.stack([a, b, c, 1 - a - b - c], axis=1)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(dx @ dx) * float(dy @ dy))
    if den == 0:
        return math.nan
    return max(-1.0, min(1.0, float(dx @ dy) / den))
