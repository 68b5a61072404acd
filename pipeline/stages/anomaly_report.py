"""Stage: the model-level Anomaly Score of each generator against the real images (one unit).

AS (CVPR 2024) is the two-sample 2-D Kolmogorov–Smirnov statistic between the (complexity,
vulnerability) points of a generator's images and those of the real images; the per-image
AS-i is already a column of the anomaly feature store. Written beside that store as
`anomaly_scores.parquet` and `anomaly_scores.md`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aigi.core import atomic
from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import ANOMALY_SCORES, IMAGES
from aigi.manifests.shards import read_shards, write_shard
from aigi.pipeline.stage import RunContext, Stage, Unit
from aigi.pipeline.stages.common import curated_shards, producer_of
from aigi.pipeline.stages.features import feature_dir, feature_shards

REPORT_VERSION = 1


class AnomalyReportStage(Stage):
    name = "report/anomaly"
    item_name = "images"

    def __init__(self, ctx: RunContext, config: Any, seed: int = 0) -> None:
        super().__init__(ctx)
        self.config = config
        self.seed = seed

    def plan(self) -> list[Unit]:
        features = feature_shards(self.ctx, "anomaly", self.config)
        images = curated_shards(self.ctx)
        producer = fingerprint(["anomaly-report", REPORT_VERSION, self.seed, [producer_of(p) for p in features]])
        out = feature_dir(self.ctx, "anomaly", self.config) / "anomaly_scores.parquet"
        payload = {"features": [str(p) for p in features], "images": [str(p) for p in images]}
        # a corpus-level summary, cheap to redo: replaced when the corpus changes
        return [Unit(self.label, "anomaly_scores", str(out), producer, 0, payload, replaceable=True)]

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.features.anomaly import model_level_as
        from aigi.features.store import read_features

        feats = [Path(p) for p in unit.payload["features"]]
        ids, c = read_features(feats, "complexity")
        _, v = read_features(feats, "vulnerability")
        _, asi = read_features(feats, "as_i")
        meta = read_shards([Path(p) for p in unit.payload["images"]], IMAGES, columns=["image_id", "label", "source"])
        where = {i: k for k, i in enumerate(meta.column("image_id").to_pylist())}
        order = np.array([where[i] for i in ids])
        labels = np.asarray(meta.column("label").to_pylist())[order]
        sources = np.asarray(meta.column("source").to_pylist(), dtype=object)[order]
        points = np.stack([c, v], axis=1).astype(np.float64)
        # A feature trajectory that does not move gives C = NaN (as the original); such images
        # cannot enter the KS statistic. They are counted in the report, not dropped silently.
        finite = np.isfinite(points).all(axis=1)
        real = points[(labels == 0) & finite]
        rows = []
        for gen in sorted(set(sources[labels == 1])):
            mask = (labels == 1) & (sources == gen)
            usable = points[mask & finite]
            res = model_level_as(real, usable, equal_n=True, seed=self.seed) if len(real) and len(usable) else {}
            rows.append({
                "generator": gen,
                "n_real": int(res.get("n_real", 0)),
                "n_generated": int(res.get("n_generated", 0)),
                "anomaly_score": float(res.get("as", np.nan)),
                "p_value": float(res.get("p_value", np.nan)),
                "mean_as_i": float(np.mean(asi[mask & finite])) if (mask & finite).any() else float("nan"),
                "n_nonfinite": int((mask & ~finite).sum()),
            })
        write_shard({k: [r[k] for r in rows] for k in ANOMALY_SCORES.arrow.names}, unit.output, ANOMALY_SCORES, unit.producer)
        n_real_bad = int(((labels == 0) & ~finite).sum())
        atomic.write_text(Path(unit.output).with_suffix(".md"), markdown(rows, n_real_bad))
        return {"items": len(ids), "rows": rows}


def markdown(rows: list[dict[str, Any]], n_real_nonfinite: int = 0) -> str:
    lines = [
        "# Anomaly Score per generator",
        "",
        "AS = the 2-D Kolmogorov–Smirnov statistic (Fasano–Franceschini) between the (complexity,",
        "vulnerability) points of the generator's images and of the real images, on equal-size",
        "samples (the larger set is subsampled with the run seed, as the authors require equal N).",
        "Higher is more anomalous. The p-value is the analytic approximation (meaningful for N ≳ 20).",
        "",
        f"Images whose complexity or vulnerability is not finite are left out: {n_real_nonfinite} real, "
        "and per generator in the last column.",
        "",
        "| generator | n real | n generated | AS | p-value | mean AS-i | left out |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['generator']} | {r['n_real']} | {r['n_generated']} | {r['anomaly_score']:.4f} | "
            f"{r['p_value']:.3g} | {r['mean_as_i']:.4f} | {r['n_nonfinite']} |"
        )
    return "\n".join(lines) + "\n"
