"""Frequency parity of aligned fakes: is a fake as sharp as the real image it was made from?

Reconstructions restore detail their JPEG parents lost, so they come out sharper than their
reals (DDA, NeurIPS 2025), and a detector can learn sharpness instead of the generation trace.
For every fake with a parent, the ratio of the fakes's `hf_energy` (the high-band share of its
block-DCT energy, `aigi.curation.measure`) to its parent's is summarised per generator and mode:
the 5th/50th/95th percentiles and the share of pairs outside `tolerance` (|ratio − 1| > 0.10 by
default). Computed on the original images and again after normalization, where per-pair codec
parity should bring the ratios towards 1.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from aigi.manifests.schema import FREQUENCY_PARITY

TOLERANCE = 0.10


def frequency_parity(measures: pa.Table, links: pa.Table, when: str, tolerance: float = TOLERANCE) -> pa.Table:
    """FREQUENCY_PARITY rows for MEASURES `measures` (both fakes and parents among them) and
    `links` (image_id, parent_id, source, aligned_mode of the fakes). Pairs where either image
    has no hf_energy (too small, or flat) are left out and counted in `n_missing`."""
    hf = dict(zip(measures.column("image_id").to_pylist(), measures.column("hf_energy").to_pylist(), strict=True))
    groups: dict[tuple[str, str], list[float | None]] = {}
    for image_id, parent, source, mode in zip(
        *(links.column(c).to_pylist() for c in ("image_id", "parent_id", "source", "aligned_mode")), strict=True
    ):
        if parent is None or image_id not in hf or parent not in hf:
            continue
        a, b = hf[image_id], hf[parent]
        ratio = a / b if a is not None and b is not None and b > 0 else None
        groups.setdefault((source, mode or "text"), []).append(ratio)
    rows = []
    for (source, mode), ratios in sorted(groups.items()):
        r = np.array([x for x in ratios if x is not None], dtype=np.float64)
        have = r.size > 0
        rows.append({
            "when": when, "source": source, "mode": mode, "n_pairs": len(ratios),
            "n_missing": len(ratios) - int(r.size),
            "ratio_p05": float(np.percentile(r, 5)) if have else None,
            "ratio_p50": float(np.percentile(r, 50)) if have else None,
            "ratio_p95": float(np.percentile(r, 95)) if have else None,
            "share_outside": float(np.mean(np.abs(r - 1.0) > tolerance)) if have else None,
            "tolerance": tolerance,
        })
    return pa.Table.from_pylist(rows, schema=FREQUENCY_PARITY.arrow)


def parity_markdown(table: pa.Table) -> str:
    """The report's section: one line per generator, mode and moment."""
    if table.num_rows == 0:
        return ""
    out = [
        "## Frequency parity of aligned fakes",
        "",
        "hf_energy of each fake over its parent's (1 = as sharp). Share outside: pairs with "
        f"|ratio − 1| > {table.column('tolerance')[0].as_py():.2f}.",
        "",
        "| generator | mode | moment | pairs | ratio p05 / p50 / p95 | share outside |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.to_pylist():
        q = "–" if r["ratio_p50"] is None else f"{r['ratio_p05']:.3f} / {r['ratio_p50']:.3f} / {r['ratio_p95']:.3f}"
        share = "–" if r["share_outside"] is None else f"{r['share_outside']:.2f}"
        out.append(f"| {r['source']} | {r['mode']} | {r['when']} | {r['n_pairs']} | {q} | {share} |")
    return "\n".join(out) + "\n"
