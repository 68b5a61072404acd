"""Stage: build the prompt table (one unit, prompts/prompts.parquet)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import PROMPTS
from aigi.manifests.shards import write_shard
from aigi.pipeline.stage import Stage, Unit


class PromptsStage(Stage):
    name = "prompts"
    item_name = "prompts"

    def plan(self) -> list[Unit]:
        from aigi.prompts.table import build_prompt_table

        rows = build_prompt_table(self.ctx.config.prompts)
        # The rows themselves (not just the config) name the output: an edited prompt file is new work.
        producer = fingerprint(["prompts", rows])
        out = self.ctx.run.prompts / "prompts.parquet"
        return [Unit(self.label, "prompts", str(out), producer, len(rows), rows)]

    def preview(self) -> tuple[int, int]:
        [unit] = self.plan()
        return 1, unit.n_items

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        table = pa.Table.from_pylist(unit.payload, schema=PROMPTS.arrow)
        write_shard(table, unit.output, PROMPTS, unit.producer)
        return {"items": table.num_rows}
