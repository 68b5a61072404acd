"""Stage: exact-duplicate groups over all hashes (one unit). Annotates; deletes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import DUPLICATES, HASHES
from aigi.manifests.shards import read_shards, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import image_shards, producer_of
from aigi.pipeline.stages.hash import hash_shard_path

DEDUPE_VERSION = 1


class DedupeStage(Stage):
    name = "dedupe"
    item_name = "rows"

    def plan(self) -> list[Unit]:
        inputs = [str(hash_shard_path(self.ctx, s)) for s in image_shards(self.ctx)]
        producer = fingerprint(["dedupe", DEDUPE_VERSION, [producer_of(Path(p)) for p in inputs]])
        out = self.ctx.run.curation / "duplicates.parquet"
        return [Unit(self.label, "duplicates", str(out), producer, 0, inputs)]

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.dedupe import exact_duplicates

        hashes = read_shards([Path(p) for p in unit.payload], HASHES)
        dups = exact_duplicates(hashes)
        write_shard(dups, unit.output, DUPLICATES, unit.producer)
        dropped = dups.num_rows - sum(dups.column("keep").to_pylist())
        return {"items": dups.num_rows, "dropped": dropped}
