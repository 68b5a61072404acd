"""Stage: link each kept generated image to its real counterpart(s) (one unit, pairs.parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from aigi.core.configtools import to_dict
from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import DUPLICATES, IMAGES, PAIRS
from aigi.manifests.shards import read_shard, read_shards, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import image_shards, producer_of

PAIR_VERSION = 1
PAIR_INPUT = ["image_id", "label", "prompt_id", "class_id", "class_name", "parent_id"]


class PairStage(Stage):
    name = "pair"
    item_name = "rows"

    def plan(self) -> list[Unit]:
        shards = [str(s) for s in image_shards(self.ctx)]
        dups = self.ctx.run.curation / "duplicates.parquet"
        cfg = self.ctx.config.curation.pair
        producer = fingerprint(
            ["pair", PAIR_VERSION, to_dict(cfg), self.ctx.config.run.seed, producer_of(dups),
             [producer_of(Path(s)) for s in shards]]
        )
        out = self.ctx.run.curation / "pairs.parquet"
        payload = {"images": shards, "duplicates": str(dups)}
        return [Unit(self.label, "pairs", str(out), producer, 0, payload, replaceable=True)]

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.pairing import pair_rows

        cfg = self.ctx.config.curation.pair
        rows = read_shards([Path(p) for p in unit.payload["images"]], IMAGES, columns=PAIR_INPUT)
        # Dropped duplicates are neither paired nor paired with: their kept twin stands for them.
        dups = read_shard(unit.payload["duplicates"], DUPLICATES, columns=["image_id", "keep"])
        kept = dups.filter(dups.column("keep")).column("image_id")
        rows = rows.filter(pc.is_in(rows.column("image_id"), value_set=kept))
        pairs = pair_rows(rows, by=cfg.by, k=cfg.k, seed=self.ctx.config.run.seed)
        write_shard(pairs, unit.output, PAIRS, unit.producer, extra={"by": cfg.by, "k": cfg.k})
        fakes = pc.equal(pairs.column("label"), 1)
        unpaired = int(pc.sum(pc.and_(fakes, pc.is_null(pairs.column("pair_id")))).as_py() or 0)
        return {"items": pairs.num_rows, "unpaired_generated": unpaired}
