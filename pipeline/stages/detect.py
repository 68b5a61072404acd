"""Stage: train one detector on the train split of cached features; evaluate on val and test."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import METRICS, PREDICTIONS, SPLITS
from aigi.manifests.shards import read_shard, write_shard
from aigi.pipeline.stage import RunContext, Stage, Unit
from aigi.pipeline.stages.common import producer_of
from aigi.pipeline.stages.features import feature_shards, make_extractor

EVAL_SPLITS = ("val", "test")


class DetectStage(Stage):
    name = "detect"
    item_name = "images"

    def __init__(self, ctx: RunContext, detector: str, config: Any) -> None:
        super().__init__(ctx)
        self.detector = detector
        self.config = config

    @property
    def label(self) -> str:
        return f"detect/{self.detector}"

    def _make(self) -> Any:
        from aigi.detectors.registry import get

        return get(self.detector)(self.config)

    def plan(self) -> list[Unit]:
        feat_cfg = self.ctx.config.features[self.config.feature]
        shards = feature_shards(self.ctx, self.config.feature, feat_cfg)
        splits = self.ctx.run.curation / "splits.parquet"
        inputs_fp = fingerprint([producer_of(splits), [producer_of(s) for s in shards]])
        det = self._make()
        producer = det.fingerprint(inputs_fp)
        out_dir = self.ctx.run.detector_dir(self.detector, producer[:12])
        payload = {"features": [str(s) for s in shards], "splits": str(splits), "dir": str(out_dir)}
        # metrics.parquet is written last: it marks the unit done
        return [Unit(self.label, self.detector, str(out_dir / "metrics.parquet"), producer, 0, payload)]

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.detectors.metrics import per_generator
        from aigi.detectors.report import format_table, markdown_report
        from aigi.features.store import read_features

        out_dir = Path(unit.payload["dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        ids, x = read_features([Path(p) for p in unit.payload["features"]], self.config.column)
        splits = read_shard(unit.payload["splits"], SPLITS).to_pydict()
        where = {i: n for n, i in enumerate(ids)}
        missing = [i for i in splits["image_id"] if i not in where]
        if missing:
            raise RuntimeError(f"{len(missing)} split images have no cached {self.config.feature} feature (e.g. {missing[0]})")
        idx = np.array([where[i] for i in splits["image_id"]], dtype=np.int64)
        x = x[idx]
        y = np.asarray(splits["label"], dtype=np.int64)
        split = np.asarray(splits["split"])
        source = np.asarray(splits["source"])
        train = split == "train"
        det = self._make().fit(x[train], y[train])
        score = det.score(x)
        with open(out_dir / "model.pkl", "wb") as f:
            pickle.dump(det, f)
        preds = pa.table(
            {"image_id": splits["image_id"], "source": source, "label": y.astype(np.int8), "split": split, "score": score},
            schema=PREDICTIONS.arrow,
        )
        write_shard(preds, out_dir / "predictions.parquet", PREDICTIONS, unit.producer)
        rows = []
        for s in EVAL_SPLITS:
            m = split == s
            for r in per_generator(source[m], y[m], score[m]):
                rows.append({"detector": self.detector, "feature": self.config.feature, "split": s, **r})
        metrics = pa.Table.from_pylist(rows, schema=METRICS.arrow)
        pa_csv.write_csv(metrics, out_dir / "metrics.csv")
        test_rows = [r for r in rows if r["split"] == "test"]
        feat_fp = make_extractor(self.config.feature, self.ctx.config.features[self.config.feature]).fingerprint()
        notes = [
            f"detector `{self.detector}` on feature `{self.config.feature}-{feat_fp}`, trained on {int(train.sum())} "
            f"train images ({int(y[train].sum())} generated); threshold 0.5, no threshold search",
            "each generator's test images are scored against all real test images (GenImage-style)",
            "val metrics are in metrics.csv; predictions for every split are in predictions.parquet",
        ]
        (out_dir / "report.md").write_text(markdown_report(f"{self.detector}: test split", test_rows, notes), encoding="utf-8")
        (out_dir / "table.txt").write_text(format_table(test_rows) + "\n", encoding="utf-8")
        write_shard(metrics, unit.output, METRICS, unit.producer)
        return {"items": int((split == "test").sum()), "dir": str(out_dir)}
