"""Stage: sha256, pixel hash and perceptual hashes of every image, a shard per image shard."""

from __future__ import annotations

from typing import Any

from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import HASHES, IMAGES
from aigi.manifests.shards import read_shard, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import curation_path, image_shards, num_rows, producer_of

HASH_VERSION = 2  # v2: pixels of the one shared decoder (EXIF orientation, 16-bit scaling)


class HashStage(Stage):
    name = "hash"

    def plan(self) -> list[Unit]:
        units = []
        for shard in image_shards(self.ctx):
            producer = fingerprint(["hash", HASH_VERSION, producer_of(shard)])
            out = curation_path(self.ctx, "hashes", shard)
            n = num_rows(shard)
            units.append(Unit(self.label, f"{shard.parent.name}/{shard.stem}", str(out), producer, n, str(shard)))
        return units

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.hashing import hash_rows

        table = read_shard(unit.payload, IMAGES, columns=["image_id", "image", "label", "source"])
        hashes = hash_rows(table)
        write_shard(hashes, unit.output, HASHES, unit.producer)
        return {"items": hashes.num_rows}
