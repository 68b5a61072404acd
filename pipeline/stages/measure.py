"""Stage: codec and size measurements of every original image, a shard per image shard."""

from __future__ import annotations

from typing import Any

from aigi.manifests.schema import MEASURES
from aigi.pipeline.stages.common import PerImageShardStage


class MeasureStage(PerImageShardStage):
    name = "measure"
    kind = "measures"
    version = 1
    schema = MEASURES

    def compute(self, images: Any) -> Any:
        from aigi.curation.measure import measure_rows

        return measure_rows(images)
