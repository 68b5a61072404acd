"""The model-level Anomaly Score stage: per generator against the reals, non-finite points counted."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from planted import plant_plan

from aigi.features.anomaly import Anomaly, AnomalyConfig
from aigi.features.store import write_features
from aigi.manifests.rundir import RunDir
from aigi.manifests.schema import IMAGES
from aigi.manifests.shards import write_shard
from aigi.pipeline.cluster import SerialExecutor
from aigi.pipeline.config import parse_config
from aigi.pipeline.runner import run_stages
from aigi.pipeline.stage import RunContext
from aigi.pipeline.stages.anomaly_report import AnomalyReportStage


def brute_force_d(a: np.ndarray, b: np.ndarray) -> float:
    """Fasano–Franceschini D by explicit loops over points and quadrants (methods.md §4.4)."""

    def one_side(s1, s2):
        n1, n2, best_lo, best_hi = len(s1), len(s2), 0.0, 0.0
        for px, py in s1:
            quads = []
            for sx, sy in ((True, True), (True, False), (False, True), (False, False)):
                def inside(x, y, sx=sx, sy=sy, px=px, py=py):
                    return (x <= px if sx else x > px) and (y <= py if sy else y > py)

                quads.append(sum(inside(x, y) for x, y in s1) / n1 - sum(inside(x, y) for x, y in s2) / n2)
            quads[0] -= 1 / n1
            best_lo, best_hi = min(best_lo, min(quads)), max(best_hi, max(quads))
        return max(-best_lo, best_hi + 1 / n1)

    return (one_side(a, b) + one_side(b, a)) / 2


def test_report_per_generator_with_non_finite_points(tmp_path: Path) -> None:
    cfg_anomaly = AnomalyConfig(model=str(tmp_path / "no-model"))
    cfg = parse_config({
        "run": {"out": str(tmp_path / "run"), "seed": 5},
        "prompts": {"classes": ["tench"]},
        "real": {"path": str(tmp_path)},
        "generators": [{"name": "gen-a", "family": "stable_diffusion", "model": "x"}],
        "features": {"anomaly": {"model": cfg_anomaly.model}},
    })
    ctx = RunContext(cfg, RunDir(tmp_path / "run").make())
    rng = np.random.default_rng(0)
    ex = Anomaly(cfg.features["anomaly"])
    feat_dir = ctx.run.feature_dir("anomaly", ex.fingerprint())
    points = {}
    for source, label, n, shift in (("real", 0, 12, 0.0), ("gen-a", 1, 10, 0.7)):
        ids = [f"{source}-{i}" for i in range(n)]
        rows = [{**dict.fromkeys(IMAGES.arrow.names), "image_id": i, "label": label, "source": source,
                 "image": {"bytes": b"", "path": None}} for i in ids]
        shard = ctx.run.image_dir(source) / "shard-00000.parquet"
        write_shard({k: [r[k] for r in rows] for k in IMAGES.arrow.names}, shard, IMAGES, f"p-{source}")
        plant_plan(ctx, f"generate/{source}" if label else f"ingest/{source}", [shard])
        c = rng.random(n).astype(np.float32) + shift
        v = rng.random(n).astype(np.float32)
        if source == "gen-a":
            c[0] = np.nan  # a trajectory that did not move
        points[source] = np.stack([c, v], 1)
        write_features(feat_dir / source / shard.name, ids, list(range(n)),
                       {"complexity": c, "vulnerability": v, "as_i": v / c}, ex, f"f-{source}")
    [res] = run_stages([AnomalyReportStage(ctx, cfg.features["anomaly"], seed=5)], SerialExecutor(),
                       ctx.run.logs, io.StringIO())
    [row] = pq.read_table(feat_dir / "anomaly_scores.parquet").to_pylist()
    assert row["generator"] == "gen-a" and row["n_nonfinite"] == 1
    assert row["n_real"] == row["n_generated"] == 9  # equal N: 12 reals subsampled to the 9 usable fakes
    # The statistic equals a brute-force count when no subsampling is needed (same N).
    real, gen = points["real"], points["gen-a"][1:]
    from aigi.features.anomaly import model_level_as

    assert np.isclose(model_level_as(real[:9], gen)["as"], brute_force_d(real[:9].tolist(), gen.tolist()))
    assert 0 < row["anomaly_score"] <= 1
    assert np.isclose(row["mean_as_i"], float(np.mean(gen[:, 1] / gen[:, 0])), rtol=1e-5)
    md = (feat_dir / "anomaly_scores.md").read_text()
    assert "| gen-a | 9 | 9 |" in md and "left out" in md
