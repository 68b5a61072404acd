"""Stage: codec and size measurements of every original image, a shard per image shard."""

from __future__ import annotations

from typing import Any

from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import IMAGES, MEASURES
from aigi.manifests.shards import read_shard, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import curation_path, image_shards, num_rows, producer_of

MEASURE_VERSION = 1


class MeasureStage(Stage):
    name = "measure"

    def plan(self) -> list[Unit]:
        units = []
        for shard in image_shards(self.ctx):
            producer = fingerprint(["measure", MEASURE_VERSION, producer_of(shard)])
            out = curation_path(self.ctx, "measures", shard)
            units.append(Unit(self.label, f"{shard.parent.name}/{shard.stem}", str(out), producer,
                              num_rows(shard), str(shard)))
        return units

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.measure import measure_rows

        table = read_shard(unit.payload, IMAGES, columns=["image_id", "image", "label", "source"])
        measures = measure_rows(table)
        write_shard(measures, unit.output, MEASURES, unit.producer)
        return {"items": measures.num_rows}
