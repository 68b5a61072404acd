"""Figures for detector reports, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function writes one PNG of an exact pixel size (`size`, or a default that grows with the
content) and returns its path:
- `heatmap`: the cross-generator matrix of one metric, the value written in each cell;
- `roc_curves`: one ROC curve per generator (its fakes vs all reals), AUROC in the legend;
- `metric_bars`: one bar per row, with bootstrap whiskers (`<metric>_low/_high`) or seed spread
  (`<metric>_std`) when the rows carry them;
- `confident_mistakes`: the real images scored most confidently generated and the generated
  images scored most confidently real, with their scores.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aigi.detectors.metrics import ALL

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
MISSING = "—"


def _figure(size: tuple[int, int]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = size
    if w < 50 or h < 50:
        raise ValueError(f"plots: size must be at least 50x50 pixels, got {size}")
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from aigi.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)  # no bbox "tight": the size stays what was asked
    return path


def _fmt(value: float, digits: int = 3) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _as_rows(rows: Sequence[dict] | Mapping[str, np.ndarray]) -> list[dict]:
    """Rows as dicts, from a list of dicts or columns (name -> array), e.g. `Result.predictions`."""
    if isinstance(rows, Mapping):
        cols = {k: np.asarray(v).tolist() for k, v in rows.items()}
        n = len(next(iter(cols.values()), []))
        return [{k: v[i] for k, v in cols.items()} for i in range(n)]
    return list(rows)


# ---------------------------------------------------------------- cross-generator heatmap


def heatmap_grid(
    rows: Sequence[dict], metric: str, row_key: str = "train_generator", col_key: str = "test_generator"
) -> tuple[list[str], list[str], np.ndarray]:
    """(row labels, column labels, values) of a long table; labels in order of first appearance
    with "all" last, a missing cell NaN."""
    def order(key: str) -> list[str]:
        seen = list(dict.fromkeys(str(r[key]) for r in rows))
        return [x for x in seen if x != ALL] + [x for x in seen if x == ALL]

    r_labels, c_labels = order(row_key), order(col_key)
    values = np.full((len(r_labels), len(c_labels)), np.nan)
    for r in rows:
        v = r.get(metric)
        values[r_labels.index(str(r[row_key])), c_labels.index(str(r[col_key]))] = np.nan if v is None else float(v)
    return r_labels, c_labels, values


def heatmap_figure(
    rows: Sequence[dict], metric: str, *, row_key: str = "train_generator", col_key: str = "test_generator",
    title: str | None = None, size: tuple[int, int] | None = None,
) -> Figure:
    from matplotlib import colormaps

    r_labels, c_labels, values = heatmap_grid(rows, metric, row_key, col_key)
    if not r_labels:
        raise ValueError("heatmap: no rows")
    size = size or (max(480, 200 + 80 * len(c_labels)), max(360, 160 + 50 * len(r_labels)))
    fig = _figure(size)
    ax = fig.add_subplot()
    in_unit = bool(np.all((values[~np.isnan(values)] >= 0) & (values[~np.isnan(values)] <= 1)))
    cmap = colormaps["viridis"].with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0 if in_unit else None,
                   vmax=1 if in_unit else None, aspect="auto")
    ax.set_xticks(range(len(c_labels)), c_labels, rotation=40, ha="right")
    ax.set_yticks(range(len(r_labels)), r_labels)
    ax.set_xlabel(col_key.replace("_", " "))
    ax.set_ylabel(row_key.replace("_", " "))
    lo, hi = im.get_clim()
    for i in range(len(r_labels)):
        for j in range(len(c_labels)):
            v = values[i, j]
            dark = not math.isnan(v) and (v - lo) / ((hi - lo) or 1) < 0.6  # viridis is dark below
            ax.text(j, i, _fmt(v), ha="center", va="center", color="white" if dark else "black", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title or metric)
    fig.tight_layout()
    return fig


def heatmap(
    matrix_rows: Sequence[dict], metric: str, path: str | Path, *, row_key: str = "train_generator",
    col_key: str = "test_generator", title: str | None = None, size: tuple[int, int] | None = None,
) -> Path:
    """The train x test matrix of `metric` (rows of `protocols.cross_generator`), values in cells."""
    fig = heatmap_figure(matrix_rows, metric, row_key=row_key, col_key=col_key, title=title, size=size)
    return _save(fig, path)


# ---------------------------------------------------------------- ROC curves


def roc_curves(
    y: np.ndarray, score: np.ndarray, source: np.ndarray, path: str | Path, *, title: str = "ROC per generator",
    size: tuple[int, int] = (640, 560),
) -> Path:
    """One ROC curve per generator (its fakes vs all reals) and the pooled one, AUROC in the legend."""
    return _save(roc_figure(y, score, source, title=title, size=size), path)


def roc_figure(
    y: np.ndarray, score: np.ndarray, source: np.ndarray, *, title: str = "ROC per generator",
    size: tuple[int, int] = (640, 560),
) -> Figure:
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(y).astype(np.int64)
    score = np.asarray(score, dtype=np.float64)
    source = np.asarray(source).astype(str)
    real = y == 0
    if not real.any() or real.all():
        raise ValueError("roc_curves: needs both real and generated images")
    fig = _figure(size)
    ax = fig.add_subplot()
    curves = [(g, real | ((y == 1) & (source == g))) for g in sorted(set(source[y == 1].tolist()))]
    for name, keep in [*curves, (ALL, np.ones(len(y), dtype=bool))]:
        fpr, tpr, _ = roc_curve(y[keep], score[keep])
        auc = roc_auc_score(y[keep], score[keep])
        style = {"color": "black", "linestyle": "--"} if name == ALL else {}
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})", linewidth=1.5, **style)
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (reals called generated)")
    ax.set_ylabel("true positive rate (generated caught)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- metric bars


def bar_data(
    rows: Sequence[dict], metric: str, label_key: str | None = None
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(labels, values, (2, n) whisker lengths below/above or None). A row's label is its
    `label_key`, or all its text fields joined by " / "."""
    labels = [
        str(r[label_key]) if label_key else " / ".join(str(v) for v in r.values() if isinstance(v, str))
        for r in rows
    ]
    values = np.array([np.nan if r.get(metric) is None else float(r[metric]) for r in rows])
    err = None
    if rows and all(f"{metric}_low" in r and f"{metric}_high" in r for r in rows):
        low = np.array([np.nan if r[f"{metric}_low"] is None else float(r[f"{metric}_low"]) for r in rows])
        high = np.array([np.nan if r[f"{metric}_high"] is None else float(r[f"{metric}_high"]) for r in rows])
        err = np.vstack([values - low, high - values])
    elif rows and all(f"{metric}_std" in r for r in rows):
        std = np.array([np.nan if r[f"{metric}_std"] is None else float(r[f"{metric}_std"]) for r in rows])
        err = np.vstack([std, std])
    if err is not None:
        err = np.clip(np.nan_to_num(err, nan=0.0), 0.0, None)
    return labels, values, err


def metric_bars(
    rows: Sequence[dict], metric: str, path: str | Path, *, label_key: str | None = None,
    title: str | None = None, size: tuple[int, int] | None = None,
) -> Path:
    """A bar per row of `metric`, whiskers from `<metric>_low/_high` (or `_std`) when present;
    an undefined (NaN) value has no bar and is marked "—"."""
    labels, values, err = bar_data(rows, metric, label_key)
    if not labels:
        raise ValueError("metric_bars: no rows")
    fig = _figure(size or (max(480, 120 + 60 * len(labels)), 420))
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    shown = np.nan_to_num(values, nan=0.0)
    ax.bar(x, shown, color=["dimgrey" if lab == ALL else "tab:blue" for lab in labels])
    if err is not None:
        ok = ~np.isnan(values)
        ax.errorbar(x[ok], values[ok], yerr=err[:, ok], fmt="none", ecolor="black", capsize=3, linewidth=1)
    for xi, v in zip(x, values, strict=True):
        if math.isnan(v):
            ax.text(xi, 0.01, MISSING, ha="center", va="bottom")
    finite = values[~np.isnan(values)]
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        ax.set_ylim(0, 1.05)
    ax.set_xticks(x, labels, rotation=40 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------- confident mistakes


def pick_mistakes(
    rows: Sequence[dict] | Mapping[str, np.ndarray], k: int = 8, threshold: float = 0.5
) -> tuple[list[dict], list[dict]]:
    """(reals called generated, highest score first; generated called real, lowest score first),
    at most k each. Rows need image_id, label and score (e.g. `Result.predictions`); ties are
    broken by image_id so the pick is reproducible."""
    rows = _as_rows(rows)
    wrong_real = [r for r in rows if int(r["label"]) == 0 and float(r["score"]) >= threshold]
    wrong_fake = [r for r in rows if int(r["label"]) == 1 and float(r["score"]) < threshold]
    wrong_real.sort(key=lambda r: (-float(r["score"]), str(r["image_id"])))
    wrong_fake.sort(key=lambda r: (float(r["score"]), str(r["image_id"])))
    return wrong_real[:k], wrong_fake[:k]


def confident_mistakes(
    rows: Sequence[dict] | Mapping[str, np.ndarray], images: Mapping[str, bytes], path: str | Path,
    k: int = 8, *, threshold: float = 0.5, size: tuple[int, int] | None = None,
) -> Path:
    """Two rows of up to k images: reals scored most confidently generated, and generated images
    scored most confidently real, each titled with its score (and source). `images` maps the
    image_id of each picked row (`pick_mistakes`) to its encoded PNG/JPEG bytes."""
    from PIL import Image

    if k < 1:
        raise ValueError(f"confident_mistakes: k must be >= 1, got {k}")
    picked = pick_mistakes(rows, k, threshold)
    missing = [r["image_id"] for group in picked for r in group if r["image_id"] not in images]
    if missing:
        raise KeyError(f"confident_mistakes: no image bytes for {len(missing)} picked image(s), e.g. {missing[0]}")
    fig = _figure(size or (60 + 150 * k, 480))
    captions = (f"real images scored >= {threshold} (called generated), most confident first",
                f"generated images scored < {threshold} (called real), most confident first")
    for sub, group, caption in zip(fig.subfigures(2, 1), picked, captions, strict=True):
        sub.suptitle(caption, fontsize=9, x=0.01, ha="left")
        sub.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.78, wspace=0.08)
        for j, ax in enumerate(sub.subplots(1, k, squeeze=False)[0]):
            ax.set_axis_off()
            if j < len(group):
                r = group[j]
                with Image.open(io.BytesIO(images[r["image_id"]])) as im:
                    im = im.convert("RGB")
                    im.thumbnail((256, 256))
                    ax.imshow(np.asarray(im))
                src = f"\n{r['source']}" if "source" in r else ""
                ax.set_title(f"{float(r['score']):.3f}{src}", fontsize=8)
            elif j == 0:
                ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)
