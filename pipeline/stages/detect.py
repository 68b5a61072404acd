"""Stage: train one detector on the train split of cached features and evaluate it (one unit).

The model trains on train (early stopping, where the head has it, on val), is saved without
pickle (`model/detector.json`, `model/state.safetensors`) and scores every split image
(`predictions.parquet`). Metrics per generator (each generator's test fakes against all real
test images) with bootstrap intervals go to `metrics.{parquet,csv}`; the protocols of
`[evaluate]` (the cross-generator matrix, leave-one-out, chronological) to
`protocols.{parquet,csv}`; `report.md` and the plots (ROC curves, metric bars, the
cross-generator heatmap, the most confidently wrong images) beside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from aigi.core import atomic
from aigi.core.atomic import atomic_path
from aigi.core.configtools import to_dict
from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import CROSS_METRICS, IMAGES, METRICS, PERTURBATIONS, PREDICTIONS, SPLITS
from aigi.manifests.shards import read_shard, read_shards, write_shard
from aigi.pipeline.stage import RunContext, Stage, Unit
from aigi.pipeline.stages.common import curated_shards, producer_of
from aigi.pipeline.stages.features import feature_shards, make_extractor

EVAL_SPLITS = ("val", "test")
DETECT_VERSION = 2  # v2: no pickle, intervals, protocols, plots


class DetectStage(Stage):
    name = "detect"
    item_name = "images"
    gpu = True

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

    def _shards(self) -> dict[str, list[Path]]:
        """Each feature input's shards (with the perturbed copies' when there are any)."""
        from aigi.detectors.data import IMAGE

        det = self._make()
        by_feature = {f: feature_shards(self.ctx, f, self.ctx.config.features[f], perturbed=True)
                      for f in det.features()}
        return {i: by_feature[i.split(".", 1)[0]] for i in det.inputs() if i != IMAGE}

    def _image_inputs(self) -> list[Path]:
        """The image shards, for a head whose inputs include the pixels."""
        from aigi.detectors.data import IMAGE
        from aigi.pipeline.stages.features import featurized_shards

        return featurized_shards(self.ctx) if IMAGE in self._make().inputs() else []

    def _perturbations(self) -> list[Path]:
        if not self.ctx.config.evaluate.perturbations:
            return []
        from aigi.pipeline.stages.perturb import perturbation_records

        return perturbation_records(self.ctx)

    def plan(self) -> list[Unit]:
        shards = self._shards()
        splits = self.ctx.run.curation / "splits.parquet"
        evaluate = to_dict(self.ctx.config.evaluate)
        inputs_fp = fingerprint([DETECT_VERSION, evaluate, producer_of(splits),
                                 {k: [producer_of(s) for s in v] for k, v in shards.items()},
                                 [producer_of(p) for p in self._perturbations()],
                                 [producer_of(p) for p in self._image_inputs()]])
        producer = self._make().fingerprint(inputs_fp)
        out_dir = self.ctx.run.detector_dir(self.detector, producer[:12])
        payload = {"features": {k: [str(s) for s in v] for k, v in shards.items()}, "splits": str(splits),
                   "dir": str(out_dir), "perturbations": [str(p) for p in self._perturbations()],
                   "images": [str(p) for p in self._image_inputs()]}
        # metrics.parquet is written last: it marks the unit done
        return [Unit(self.label, self.detector, str(out_dir / "metrics.parquet"), producer, 0, payload)]

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.detectors import protocols
        from aigi.detectors.data import FeatureSet
        from aigi.detectors.metrics import per_generator, with_intervals

        out_dir = Path(unit.payload["dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        ev = self.ctx.config.evaluate
        splits = read_shard(unit.payload["splits"], SPLITS).to_pydict()
        variant = np.array(["none"] * len(splits["image_id"]), dtype=object)
        if unit.payload["perturbations"]:
            # the perturbed copies: scored and evaluated as variants, never trained on
            copies = read_shards([Path(p) for p in unit.payload["perturbations"]], PERTURBATIONS).to_pylist()
            row_of = {i: k for k, i in enumerate(splits["image_id"])}
            copies = [c for c in copies if c["original_id"] in row_of]
            for key in ("label", "source"):
                splits[key] = list(splits[key]) + [splits[key][row_of[c["original_id"]]] for c in copies]
            splits["image_id"] = list(splits["image_id"]) + [c["image_id"] for c in copies]
            splits["split"] = list(splits["split"]) + ["perturbed"] * len(copies)
            variant = np.concatenate([variant, np.array([c["variant"] for c in copies], dtype=object)])
        split = np.asarray(splits["split"])
        data = FeatureSet.from_store({k: [Path(p) for p in v] for k, v in unit.payload["features"].items()},
                                     splits["image_id"], np.asarray(splits["label"]), np.asarray(splits["source"]))
        if unit.payload["images"]:  # a head that reads the pixels (EGRE end to end)
            data = data.with_images([Path(p) for p in unit.payload["images"]])
        train, val = data.subset(split == "train"), data.subset(split == "val")
        det = self._make().fit(train, val if len(np.unique(val.labels)) == 2 else None)
        det.save(out_dir / "model")
        score = det.score(data)
        preds = pa.table({"image_id": data.ids, "source": data.sources, "label": data.labels.astype(np.int8),
                          "split": split, "score": score}, schema=PREDICTIONS.arrow)
        write_shard(preds, out_dir / "predictions.parquet", PREDICTIONS, unit.producer)

        rows = []
        for s in EVAL_SPLITS:
            m = split == s
            if not m.any():
                continue
            got = per_generator(data.sources[m], data.labels[m], score[m])
            if ev.bootstrap:
                got = with_intervals(got, data.sources[m], data.labels[m], score[m], n=ev.bootstrap)
            rows += [{"detector": self.detector, "feature": "+".join(det.features()), "split": s, **r} for r in got]
        metrics = pa.Table.from_pylist([{k: r.get(k) for k in METRICS.arrow.names} for r in rows], schema=METRICS.arrow)
        with atomic_path(out_dir / "metrics.csv") as tmp:
            pa_csv.write_csv(metrics, tmp)

        def make() -> Any:
            return self._make()

        orig = split != "perturbed"
        base, base_split = data.subset(orig), split[orig]
        extra = self._protocols(base, base_split, make, ev)
        if ev.perturbations:
            # variants of the test images; the originals ("none") train and are evaluated beside them
            robust_split = np.where(split == "perturbed", "test", split)
            extra.append(protocols.robustness(data, robust_split, make, variant.astype(str),
                                              intervals=ev.bootstrap > 0))
        protocol_rows = [r for res in extra for r in _long_rows(self.detector, res)]
        if protocol_rows:
            table = pa.Table.from_pylist(protocol_rows, schema=CROSS_METRICS.arrow)
            write_shard(table, out_dir / "protocols.parquet", CROSS_METRICS, unit.producer)
            with atomic_path(out_dir / "protocols.csv") as tmp:
                pa_csv.write_csv(table, tmp)
        seeds = None
        if ev.seeds > 1:
            seeds = protocols.over_seeds(lambda s: protocols.per_generator(base, base_split, protocols.reseed(make, s),
                                                                           intervals=False), ev.seeds)
        test = split == "test"
        test_rows = [r for r in rows if r["split"] == "test"]
        plots = self._plots(out_dir, data, score, test, test_rows, extra)
        self._report(out_dir, det, data, split, test_rows, extra, seeds, plots)
        write_shard(metrics, unit.output, METRICS, unit.producer)
        return {"items": int(test.sum()), "dir": str(out_dir)}

    def _protocols(self, data: Any, split: np.ndarray, make: Any, ev: Any) -> list[Any]:
        from aigi.detectors import protocols

        gens = sorted(set(data.sources[data.labels == 1].tolist()))
        family = {g.name: g.family for g in self.ctx.config.generators}
        release = {g.name: g.release_date for g in self.ctx.config.generators if g.release_date}
        intervals = ev.bootstrap > 0
        out = []
        for name in ev.protocols:
            if name == "per_generator" or len(gens) < 2:
                continue
            if name == "cross_generator":
                out.append(protocols.cross_generator(data, split, make, intervals=intervals))
            elif name == "leave_one_generator_out":
                out.append(protocols.leave_one_out(data, split, make, intervals=intervals))
            elif name == "leave_one_family_out" and len(set(family.values())) >= 2:
                out.append(protocols.leave_one_out(data, split, make, {g: family[g] for g in gens}, intervals=intervals))
            elif name == "chronological" and len(set(release.values())) >= 2:
                out.append(protocols.chronological(data, split, make, release, intervals=intervals))
        return out

    def _plots(self, out_dir: Path, data: Any, score: np.ndarray, test: np.ndarray, test_rows: list[dict],
               extra: list[Any]) -> dict[str, str]:
        from aigi.detectors import plots

        made: dict[str, str] = {}
        if len(np.unique(data.labels[test])) == 2:
            made["ROC curves per generator (test)"] = plots.roc_curves(
                data.labels[test], score[test], data.sources[test], out_dir / "roc.png").name
        made["AUROC per generator with 95% intervals (test)"] = plots.metric_bars(
            test_rows, "auroc", out_dir / "auroc.png").name
        for res in extra:
            if res.protocol == "cross_generator":
                made["cross-generator AUROC (train → test)"] = plots.heatmap(
                    res.rows, "auroc", out_dir / "cross_generator.png").name
            if res.protocol == "robustness":
                made["AUROC per perturbation and generator (test)"] = plots.heatmap(
                    res.rows, "auroc", out_dir / "robustness.png", row_key="variant", col_key="generator").name
        rows = [{"image_id": i, "source": s, "label": int(y), "score": float(p)}
                for i, s, y, p in zip(data.ids[test], data.sources[test], data.labels[test], score[test], strict=True)]
        wrong_real, wrong_fake = plots.pick_mistakes(rows, 8)
        if wrong_real or wrong_fake:
            images = _image_bytes(self.ctx, {r["image_id"] for r in wrong_real + wrong_fake})
            made["the most confidently wrong test images"] = plots.confident_mistakes(
                rows, images, out_dir / "mistakes.png", k=8).name
        return made

    def _report(self, out_dir: Path, det: Any, data: Any, split: np.ndarray, test_rows: list[dict],
                extra: list[Any], seeds: Any, plots: dict[str, str]) -> None:
        from aigi.detectors.report import Section, format_table, protocol_report, section

        train = split == "train"
        preprocessing = "; ".join(
            f"{f}: {make_extractor(f, self.ctx.config.features[f]).preprocessing()}" for f in det.features()
        )
        norm = self.ctx.config.curation.normalize
        normalization = ", ".join(f"{k} = {v}" for k, v in to_dict(norm).items())
        notes = [
            f"detector `{self.detector}` on {', '.join(det.inputs())}, trained on {int(train.sum())} train images "
            f"({int(data.labels[train].sum())} generated); threshold 0.5, no threshold search (`oracle_acc` is "
            "the best accuracy over thresholds, for reference only)",
            "each generator's test images are scored against all real test images (GenImage-style); "
            "intervals are bootstrap 95% (reals and fakes resampled separately)",
            "val metrics are in metrics.csv; predictions for every split are in predictions.parquet; "
            "the model is in model/ (JSON + safetensors, no pickle)",
        ]
        shown = [{k: v for k, v in r.items() if k not in ("detector", "feature", "split")} for r in test_rows]
        sections = [Section("per generator (test split)", shown, ("generator",), plots=plots)]
        sections += [section(res) for res in extra]
        if seeds is not None:
            sections.append(section(seeds, heading=f"per generator, mean ± std over {len(seeds.runs)} seeds"))
        text = protocol_report(f"{self.detector}", sections, notes, preprocessing=preprocessing,
                               normalization=normalization)
        atomic.write_text(out_dir / "report.md", text)
        policy = f"feature preprocessing: {preprocessing}\ncorpus normalization: {normalization}\n"
        atomic.write_text(out_dir / "table.txt", format_table(test_rows) + "\n" + policy)


def _long_rows(detector: str, res: Any) -> list[dict]:
    """A protocol's rows in the CROSS_METRICS layout: what it trained on, what it tested on."""
    out = []
    for r in res.rows:
        trained = next((str(r[k]) for k in res.keys if k not in ("generator", "test_generator")), "")
        tested = r.get("test_generator", r.get("generator"))
        out.append({**{k: r.get(k) for k in CROSS_METRICS.arrow.names}, "detector": detector,
                    "protocol": res.protocol, "train": trained, "generator": tested})
    return out


def _image_bytes(ctx: RunContext, ids: set[str]) -> dict[str, bytes]:
    """The stored bytes of a few images (for the grid of mistakes), as the features saw them."""
    import pyarrow.compute as pc

    table = read_shards(curated_shards(ctx), IMAGES, columns=["image_id", "image"])
    table = table.filter(pc.is_in(table.column("image_id"), value_set=pa.array(sorted(ids))))
    return {r["image_id"]: r["image"]["bytes"] for r in table.to_pylist()}
