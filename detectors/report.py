"""Metric rows (from `aigi.detectors.metrics.per_generator` or a METRICS shard) as tables.

`markdown_report` writes the report a detector run leaves beside its model; `format_table` prints
the same columns in a terminal. Undefined values (NaN, or null read back from Parquet) show as "—".
Both show the fixed per-generator columns (`COLUMNS`) unless asked for `columns="auto"`: then the
key columns of a protocol's long table come first and every metric the rows carry follows, with
its bootstrap interval (`<m>_low/_high`) or spread over seeds (`<m>_std`) beside it.
`protocol_report` puts several tables (e.g. the `protocols` results) in one report. Every table
states the feature's preprocessing and the corpus's normalization policy, when given, and links
its plots.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MISSING = "—"

# (header, row key); the ACC header states its threshold (methods.md §1.3: raw ACC, not oracle).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("generator", "generator"),
    ("n_real", "n_real"),
    ("n_fake", "n_fake"),
    ("ACC@0.5", "acc"),
    ("real ACC", "real_acc"),
    ("fake ACC", "fake_acc"),
    ("AP", "ap"),
    ("AUROC", "auroc"),
)

LEGEND = (
    "ACC@0.5: accuracy with score >= 0.5 called generated; real/fake ACC: the same on each class; "
    "AP: average precision, positive = generated; AUROC: area under the ROC curve. "
    "Each generator's fakes are evaluated against all real images of the set."
)


#: The metrics a protocol row may carry, in table order, with their headers.
METRICS: tuple[tuple[str, str], ...] = (
    ("acc", "ACC@0.5"),
    ("balanced_acc", "bal. ACC@0.5"),
    ("real_acc", "real ACC"),
    ("fake_acc", "fake ACC"),
    ("oracle_acc", "oracle ACC"),
    ("ap", "AP"),
    ("auroc", "AUROC"),
    ("tpr_at_1fpr", "TPR@1%FPR"),
)
COUNTS = ("n_real", "n_fake")
SPREAD = ("_low", "_high", "_std")

DEFINITIONS = {
    "acc": "ACC@0.5: accuracy with score >= 0.5 called generated",
    "balanced_acc": "bal. ACC@0.5: the mean of real and fake ACC at 0.5",
    "real_acc": "real/fake ACC: ACC@0.5 on each class",
    "fake_acc": "real/fake ACC: ACC@0.5 on each class",
    "oracle_acc": "oracle ACC: accuracy at the best threshold chosen on the test scores themselves (optimistic)",
    "ap": "AP: average precision, positive = generated",
    "auroc": "AUROC: area under the ROC curve",
    "tpr_at_1fpr": "TPR@1%FPR: generated images caught when 1% of reals are called generated",
}


def _cell(value: object) -> str:
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        return MISSING
    if isinstance(value, numbers.Real):  # float, numpy float32/64
        return f"{float(value):.3f}"
    return str(value)


def _cells(metrics: Sequence[dict], columns: Sequence[tuple[str, str]] = COLUMNS, spread: bool = False) -> list[list[str]]:
    rows = []
    cell = _metric_cell if spread else (lambda m, key: _cell(m[key]))
    for i, m in enumerate(metrics):
        missing = [key for _, key in columns if key not in m]
        if missing:
            raise KeyError(f"metrics row {i} lacks {', '.join(missing)}")
        rows.append([cell(m, key) for _, key in columns])
    return rows


def _metric_cell(row: dict, key: str) -> str:
    """The value, with its interval "[low, high]" or spread "± std" when the row has them."""
    cell = _cell(row[key])
    if cell == MISSING or isinstance(row[key], numbers.Integral):
        return cell
    if f"{key}_low" in row and f"{key}_high" in row:
        return f"{cell} [{_cell(row[f'{key}_low'])}, {_cell(row[f'{key}_high'])}]"
    if f"{key}_std" in row:
        return f"{cell} ± {_cell(row[f'{key}_std'])}"
    return cell


def table_columns(metrics: Sequence[dict], keys: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(header, row key) for a long table: `keys` (or, without them, the rows' text fields) and
    the other text fields, the counts, the known metrics in `METRICS` order, then any other
    number. Interval and spread fields are shown inside their metric's cell."""
    present: dict[str, None] = {}
    for m in metrics:
        present.update(dict.fromkeys(m))
    text = [k for k in present if any(isinstance(m.get(k), str) for m in metrics)]
    lead = list(keys) if keys else text
    cols = [*lead, *(k for k in text if k not in lead), *(k for k in COUNTS if k in present)]
    known = [k for k, _ in METRICS if k in present]
    rest = [
        k for k in present
        if k not in cols and k not in known and k != "n_seeds" and not k.endswith(SPREAD)
        and any(isinstance(m.get(k), numbers.Real) and not isinstance(m.get(k), bool) for m in metrics)
    ]
    headers = dict(METRICS)
    return [(headers.get(k, k.replace("_", " ")), k) for k in [*cols, *known, *rest]]


def _legend(columns: Sequence[tuple[str, str]], metrics: Sequence[dict]) -> str:
    keys = [k for _, k in columns]
    parts = list(dict.fromkeys(DEFINITIONS[k] for k in keys if k in DEFINITIONS))
    flat = {k for m in metrics for k in m}
    if any(k.endswith(("_low", "_high")) for k in flat):
        parts.append("[low, high]: bootstrap confidence interval")
    if any(k.endswith("_std") for k in flat):
        parts.append("± : standard deviation over detector seeds")
    return "; ".join(parts) + ". Each generator's fakes are evaluated against all real images of the set."


def _columns(metrics: Sequence[dict], columns: str | None, keys: Sequence[str]) -> list[tuple[str, str]]:
    if columns is None:
        return list(COLUMNS)
    if columns != "auto":
        raise ValueError(f"report: columns must be None (the fixed per-generator columns) or 'auto', got {columns!r}")
    return table_columns(metrics, keys)


def _policy(preprocessing: str | None, normalization: str | None) -> list[str]:
    lines = []
    if preprocessing:
        lines.append(f"*Feature preprocessing:* {preprocessing}  ")
    if normalization:
        lines.append(f"*Corpus normalization:* {normalization}  ")
    return [*lines, ""] if lines else []


def _plots(plots: Mapping[str, str | Path] | Sequence[str | Path] | None) -> list[str]:
    """Markdown image links; paths are written as given (relative to the report, ideally)."""
    if not plots:
        return []
    items = plots.items() if isinstance(plots, Mapping) else ((Path(p).stem, p) for p in plots)
    return [f"![{caption}]({Path(p).as_posix()})" for caption, p in items] + [""]


def markdown_table(
    metrics: Sequence[dict], *, columns: str | None = None, keys: Sequence[str] = (),
    preprocessing: str | None = None, normalization: str | None = None,
    plots: Mapping[str, str | Path] | Sequence[str | Path] | None = None,
) -> str:
    """One table: the policy lines, the table, its legend and its plots."""
    cols = _columns(metrics, columns, keys)
    headers = [h for h, _ in cols]
    n_text = sum(1 for _, k in cols if any(isinstance(m.get(k), str) for m in metrics)) or 1
    lines = _policy(preprocessing, normalization)
    lines.append("| " + " | ".join(headers) + " |")
    # Left-align the names, right-align the numbers.
    lines.append("|" + "|".join([":---"] * n_text + ["---:"] * (len(headers) - n_text)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in _cells(metrics, cols, spread=columns is not None)]
    lines += ["", LEGEND if columns is None else _legend(cols, metrics), ""]
    lines += _plots(plots)
    return "\n".join(lines)


def markdown_report(
    title: str, metrics: Sequence[dict], notes: Sequence[str], *, preprocessing: str | None = None,
    normalization: str | None = None, plots: Mapping[str, str | Path] | Sequence[str | Path] | None = None,
    columns: str | None = None, keys: Sequence[str] = (),
) -> str:
    """A heading, the notes as bullets, the metrics table and a legend of its columns; with the
    feature's preprocessing and the corpus's normalization policy above the table and the plots
    (caption -> path, or paths) linked below it, when given. `columns="auto"`: a protocol's long
    table (`table_columns`), `keys` naming its leading columns."""
    lines = [f"# {title}", ""]
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    lines.append(markdown_table(metrics, columns=columns, keys=keys, preprocessing=preprocessing,
                                normalization=normalization, plots=plots))
    return "\n".join(lines)


@dataclass
class Section:
    """One table of a `protocol_report`."""

    heading: str
    rows: Sequence[dict]
    keys: Sequence[str] = ()
    notes: Sequence[str] = ()
    plots: Mapping[str, str | Path] | Sequence[str | Path] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def section(result: Any, heading: str | None = None, plots: Mapping[str, str | Path] | Sequence[str | Path] | None = None) -> Section:
    """A `Section` from a `protocols.Result` (anything with protocol, keys, rows, notes)."""
    return Section(heading or result.protocol.replace("_", " "), result.rows, result.keys, result.notes, plots)


def protocol_report(
    title: str, sections: Sequence[Section], notes: Sequence[str], *, preprocessing: str | None = None,
    normalization: str | None = None,
) -> str:
    """Several tables under one title; each repeats the preprocessing and normalization policy."""
    lines = [f"# {title}", ""]
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    for s in sections:
        lines += [f"## {s.heading}", ""]
        if s.notes:
            lines += [f"- {n}" for n in s.notes] + [""]
        lines.append(markdown_table(s.rows, columns="auto", keys=s.keys, preprocessing=preprocessing,
                                    normalization=normalization, plots=s.plots))
    return "\n".join(lines)


def format_table(metrics: Sequence[dict], *, columns: str | None = None, keys: Sequence[str] = ()) -> str:
    """The same columns as a fixed-width plain-text table for a terminal."""
    cols = _columns(metrics, columns, keys)
    headers = [h for h, _ in cols]
    rows = _cells(metrics, cols, spread=columns is not None)
    n_text = sum(1 for _, k in cols if any(isinstance(m.get(k), str) for m in metrics)) or 1
    widths = [max(len(x) for x in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        first = [c.ljust(w) for c, w in zip(cells[:n_text], widths[:n_text], strict=True)]
        rest = [c.rjust(w) for c, w in zip(cells[n_text:], widths[n_text:], strict=True)]
        return "  ".join([*first, *rest]).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])
