"""Metric rows (from `aigi.detectors.metrics.per_generator` or a METRICS shard) as tables.

`markdown_report` writes the report a detector run leaves beside its model; `format_table` prints
the same columns in a terminal. Undefined values (NaN, or null read back from Parquet) show as "—".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

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


def _cell(value: object) -> str:
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        return MISSING
    if isinstance(value, numbers.Real):  # float, numpy float32/64
        return f"{float(value):.3f}"
    return str(value)


def _cells(metrics: Sequence[dict]) -> list[list[str]]:
    rows = []
    for i, m in enumerate(metrics):
        missing = [key for _, key in COLUMNS if key not in m]
        if missing:
            raise KeyError(f"metrics row {i} lacks {', '.join(missing)}")
        rows.append([_cell(m[key]) for _, key in COLUMNS])
    return rows


def markdown_report(title: str, metrics: Sequence[dict], notes: Sequence[str]) -> str:
    """A heading, the notes as bullets, the metrics table and a legend of its columns."""
    headers = [h for h, _ in COLUMNS]
    lines = [f"# {title}", ""]
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    lines.append("| " + " | ".join(headers) + " |")
    # Left-align the generator name, right-align the numbers.
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in _cells(metrics)]
    lines += ["", LEGEND, ""]
    return "\n".join(lines)


def format_table(metrics: Sequence[dict]) -> str:
    """The same columns as a fixed-width plain-text table for a terminal."""
    headers = [h for h, _ in COLUMNS]
    rows = _cells(metrics)
    widths = [max(len(x) for x in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])
