"""Frequency parity of aligned fakes against their parents, checked on hand-made measurements."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from aigi.curation.frequency_parity import frequency_parity, parity_markdown
from aigi.manifests.schema import FREQUENCY_PARITY


def test_ratios_percentiles_and_share_outside_the_tolerance() -> None:
    rng = np.random.default_rng(0)
    parents = rng.uniform(0.02, 0.08, 40)
    sharper = parents * rng.uniform(0.95, 1.4, 40)  # reconstructions: often sharper
    ids = [f"r{i}" for i in range(40)] + [f"f{i}" for i in range(40)] + ["flat", "fx"]
    hf = [*parents, *sharper, 0.0, 0.05]  # a flat parent: no ratio
    measures = pa.table({"image_id": ids, "hf_energy": pa.array(hf, pa.float32())})
    links = pa.table({
        "image_id": [f"f{i}" for i in range(40)] + ["fx", "r0"],
        "parent_id": [f"r{i}" for i in range(40)] + ["flat", None],
        "source": ["vae"] * 41 + [None],
        "aligned_mode": ["vae_roundtrip"] * 41 + [None],
    })
    [row] = frequency_parity(measures, links, "before").to_pylist()
    ratio = np.asarray(sharper, np.float32).astype(np.float64) / np.asarray(parents, np.float32).astype(np.float64)
    assert (row["source"], row["mode"], row["n_pairs"], row["n_missing"]) == ("vae", "vae_roundtrip", 41, 1)
    assert row["ratio_p50"] == pytest.approx(np.percentile(ratio, 50))
    assert row["ratio_p05"] == pytest.approx(np.percentile(ratio, 5))
    assert row["share_outside"] == pytest.approx(np.mean(np.abs(ratio - 1) > 0.10))
    table = frequency_parity(measures, links, "before")
    assert table.schema == FREQUENCY_PARITY.arrow
    assert "| vae | vae_roundtrip | before | 41 |" in parity_markdown(table)
