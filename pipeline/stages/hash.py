"""Stage: sha256, pixel hash and perceptual hashes of every image, a shard per image shard."""

from __future__ import annotations

from typing import Any

from aigi.manifests.schema import HASHES
from aigi.pipeline.stages.common import PerImageShardStage


class HashStage(PerImageShardStage):
    name = "hash"
    kind = "hashes"
    version = 2  # v2: pixels of the one shared decoder (EXIF orientation, 16-bit scaling)
    schema = HASHES

    def compute(self, images: Any) -> Any:
        from aigi.curation.hashing import hash_rows

        return hash_rows(images)
