"""Stage: leakage-safe train/val/test split of the kept images (one unit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from aigi.core.configtools import to_dict
from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import DUPLICATES, IMAGES, SPLITS
from aigi.manifests.shards import read_shard, read_shards, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import image_shards, producer_of

SPLIT_COLUMNS = ["image_id", "source", "label", "prompt_id", "class_name"]


class SplitStage(Stage):
    name = "split"
    item_name = "rows"

    def plan(self) -> list[Unit]:
        shards = [str(s) for s in image_shards(self.ctx)]
        dups = self.ctx.run.curation / "duplicates.parquet"
        split = self.ctx.config.curation.split
        producer = fingerprint(
            ["split", to_dict(split), self.ctx.config.run.seed, producer_of(dups), [producer_of(Path(s)) for s in shards]]
        )
        out = self.ctx.run.curation / "splits.parquet"
        return [Unit(self.label, "splits", str(out), producer, 0, {"images": shards, "duplicates": str(dups)})]

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.split import assign_splits

        rows = read_shards([Path(p) for p in unit.payload["images"]], IMAGES, columns=SPLIT_COLUMNS)
        dups = read_shard(unit.payload["duplicates"], DUPLICATES, columns=["image_id", "keep"])
        kept = dups.filter(dups.column("keep")).column("image_id")
        rows = rows.filter(pc.is_in(rows.column("image_id"), value_set=kept))
        split = self.ctx.config.curation.split
        table = assign_splits(rows, by=split.by, fractions=split.fractions, seed=self.ctx.config.run.seed)
        write_shard(table, unit.output, SPLITS, unit.producer)
        counts = {s: int(pc.sum(pc.equal(table.column("split"), s)).as_py() or 0) for s in ("train", "val", "test")}
        return {"items": table.num_rows, "counts": counts}
