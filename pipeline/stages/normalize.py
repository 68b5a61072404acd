"""Stages: codec and size normalization, the same code for real and generated images.

`normalize-plan` (one unit) decides every image's treatment from all measurements at once (the
per-pair policy needs each fake's real; `jpeg_sampled` needs every real's quality) and writes
`curation/normalize_plan.parquet`. `normalize` then re-encodes a shard per image shard into
`curation/normalized/<source>/`, with a NORMALIZED record per image and the new bytes' measures
beside it. The originals are never touched; later stages (features, anomaly report) read the
normalized shards. Shard names carry the unit's fingerprint, so a changed policy writes new
shards and the features computed on the old ones are not mixed in; a shard whose images keep
their treatment keeps its name (and its features) when the rest of the corpus grows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aigi.core.configtools import to_dict
from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import IMAGES, MEASURES, NORMALIZE_PLAN, NORMALIZED, PAIRS
from aigi.manifests.shards import read_shard, read_shards, read_table, write_shard
from aigi.pipeline.stage import RunContext, Stage, Unit
from aigi.pipeline.stages.common import curation_path, image_shards, planned_outputs, producer_of

NORMALIZE_VERSION = 1


class NormalizePlanStage(Stage):
    name = "normalize-plan"
    item_name = "rows"

    def plan(self) -> list[Unit]:
        measures = [str(p) for p in planned_outputs(self.ctx, "measure")]
        pairs = self.ctx.run.curation / "pairs.parquet"
        producer = fingerprint(
            ["normalize-plan", NORMALIZE_VERSION, to_dict(self.ctx.config.curation.normalize),
             self.ctx.config.run.seed, producer_of(pairs), [producer_of(Path(p)) for p in measures]]
        )
        out = self.ctx.run.curation / "normalize_plan.parquet"
        payload = {"measures": measures, "pairs": str(pairs)}
        return [Unit(self.label, "normalize_plan", str(out), producer, 0, payload, replaceable=True)]

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.normalize import plan_rows

        measures = read_shards([Path(p) for p in unit.payload["measures"]], MEASURES)
        pairs = read_shard(unit.payload["pairs"], PAIRS, columns=["image_id", "label", "pair_id"])
        fakes = pairs.filter(pc.and_(pc.equal(pairs.column("label"), 1), pc.is_valid(pairs.column("pair_id"))))
        links = dict(zip(fakes.column("image_id").to_pylist(), fakes.column("pair_id").to_pylist(), strict=True))
        plans = plan_rows(measures, self.ctx.config.curation.normalize, self.ctx.config.run.seed, links)
        table = pa.Table.from_pylist(plans, schema=NORMALIZE_PLAN.arrow)
        write_shard(table, unit.output, NORMALIZE_PLAN, unit.producer)
        return {"items": table.num_rows, "re_encoded": int(pc.sum(table.column("encode")).as_py() or 0)}


class NormalizeStage(Stage):
    name = "normalize"

    def plan(self) -> list[Unit]:

        plan_path = self.ctx.run.curation / "normalize_plan.parquet"
        plan = read_shard(plan_path, NORMALIZE_PLAN)
        row_of = {image_id: i for i, image_id in enumerate(plan.column("image_id").to_pylist())}
        units = []
        for shard in image_shards(self.ctx):
            ids = read_table(shard, columns=["image_id"]).column("image_id").to_pylist()
            # A unit's identity is its own images' treatment, not the whole plan's: a generator
            # added later (new pairs elsewhere) leaves these shards, and their features, alone.
            mine = plan.take(pa.array([row_of[i] for i in ids], pa.int64()))
            producer = fingerprint(["normalize", NORMALIZE_VERSION, mine.to_pylist(), producer_of(shard)])
            out = self.ctx.run.curation / "normalized" / shard.parent.name / f"{shard.stem}-n{producer[:8]}.parquet"
            records = curation_path(self.ctx, "normalized_records", out)
            measures = measures_path(self.ctx, out)
            units.append(Unit(self.label, f"{shard.parent.name}/{shard.stem}", str(out), producer, len(ids),
                              {"images": str(shard), "plan": str(plan_path)},
                              also=((str(records), producer), (str(measures), producer))))
        return units

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:

        from aigi.curation.measure import measure_rows
        from aigi.curation.normalize import normalize_rows, normalize_seed

        images = read_shard(unit.payload["images"], IMAGES)
        ids = images.column("image_id")
        plan = read_table(unit.payload["plan"], filters=pc.is_in(pc.field("image_id"), value_set=ids.combine_chunks()))
        where = pc.index_in(ids, value_set=plan.column("image_id")).to_pylist()
        if any(w is None for w in where):
            raise RuntimeError(f"{unit.payload['plan']} has no plan for some images of {unit.payload['images']}")
        plans = plan.take(pa.array(where)).to_pylist()
        seed = self.ctx.config.run.seed
        out, records = normalize_rows(images, plans, [normalize_seed(seed, i) for i in ids.to_pylist()])
        (records_path, _), (measures, _) = unit.also
        write_shard(records, records_path, NORMALIZED, unit.producer)
        write_shard(measure_rows(out), measures, MEASURES, unit.producer)
        write_shard(out, unit.output, IMAGES, unit.producer, extra={"normalized": to_dict(self.ctx.config.curation.normalize)})
        changed = sum(1 for p in plans if p["encode"])
        return {"items": out.num_rows, "re_encoded": changed}


def measures_path(ctx: RunContext, normalized_shard: Path) -> Path:
    """The measures of a normalized shard's new bytes (the audit's "after")."""
    return curation_path(ctx, "measures_normalized", Path(normalized_shard))
