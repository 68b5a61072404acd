"""Stage: perturbed copies of the test images, one shard per curated image shard (robustness).

For each `[evaluate] perturbations` variant, every test-split image of the shard gets a copy with
that perturbation (`aigi.curation.perturb`), under an id of its own; the copies go through the
same feature stage and are scored by each detector as a variant × generator grid. They never
enter training or the per-generator metrics. `curation/perturbations/` records which original
each copy was made from, with which variant and seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aigi.manifests.ids import content_id, derive_seed, fingerprint, sha256_bytes
from aigi.manifests.schema import IMAGES, PERTURBATIONS, SPLITS
from aigi.manifests.shards import read_shard, read_table, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import curated_shards, curation_path, producer_of

PERTURB_VERSION = 1


class PerturbStage(Stage):
    name = "perturb"

    def plan(self) -> list[Unit]:
        variants = list(self.ctx.config.evaluate.perturbations)
        splits = read_shard(self.ctx.run.curation / "splits.parquet", SPLITS, columns=["image_id", "split"])
        test = set(splits.filter(pc.equal(splits.column("split"), "test")).column("image_id").to_pylist())
        units = []
        for shard in curated_shards(self.ctx):
            ids = [i for i in read_table(shard, columns=["image_id"]).column("image_id").to_pylist() if i in test]
            if not ids:
                continue
            producer = fingerprint(["perturb", PERTURB_VERSION, variants, self.ctx.config.run.seed,
                                    producer_of(shard), sorted(ids)])
            out = self.ctx.run.curation / "perturbed" / shard.parent.name / f"{shard.stem}-p{producer[:8]}.parquet"
            record = curation_path(self.ctx, "perturbations", out)
            units.append(Unit(self.label, f"{shard.parent.name}/{shard.stem}", str(out), producer,
                              len(ids) * len(variants), {"images": str(shard), "ids": ids},
                              also=((str(record), producer),)))
        return units

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.perturb import perturb
        from aigi.manifests.imagebytes import decode_rgb

        images = read_shard(unit.payload["images"], IMAGES)
        images = images.filter(pc.is_in(images.column("image_id"), value_set=pa.array(unit.payload["ids"])))
        rows, records = [], []
        for row in images.to_pylist():
            for variant in self.ctx.config.evaluate.perturbations:
                seed = derive_seed(self.ctx.config.run.seed, "perturb", row["image_id"], variant)
                data = perturb(row["image"]["bytes"], variant, seed)
                pic = decode_rgb(data)
                new_id = content_id("perturbed", row["image_id"], variant, seed)
                rows.append({**row, "image_id": new_id, "image": {"bytes": data, "path": None},
                             "sha256": sha256_bytes(data), "width": pic.width, "height": pic.height,
                             "format": "JPEG" if variant.startswith("jpeg") else "PNG",
                             "jpeg_quality": int(variant[4:]) if variant.startswith("jpeg") else None})
                records.append({"image_id": new_id, "original_id": row["image_id"], "variant": variant, "seed": seed})
        write_shard(pa.Table.from_pylist(records, schema=PERTURBATIONS.arrow), unit.also[0][0], PERTURBATIONS, unit.producer)
        write_shard(pa.Table.from_pylist(rows, schema=IMAGES.arrow), unit.output, IMAGES, unit.producer)
        return {"items": len(rows)}


def perturbation_records(ctx: Any) -> list[Path]:
    from aigi.pipeline.stages.common import planned_outputs

    return [curation_path(ctx, "perturbations", p) for p in planned_outputs(ctx, "perturb")]
