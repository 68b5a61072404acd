"""Stage: build the prompt table (one unit, prompts/prompts.parquet).

With `[prompts] source = "real"` the table comes from a real source's captions or classes, so
this stage plans from that source's ingest plan (it runs after ingestion)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import IMAGES, PROMPTS
from aigi.manifests.shards import read_shards, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import planned_outputs


class PromptsStage(Stage):
    name = "prompts"
    item_name = "prompts"

    def plan(self) -> list[Unit]:
        from aigi.prompts.table import build_prompt_table

        section = self.ctx.config.prompts
        rows = build_prompt_table(section, self._real_rows() if section.source == "real" else None)
        # The rows themselves (not just the config) name the output: an edited prompt file is new work.
        producer = fingerprint(["prompts", rows])
        out = self.ctx.run.prompts / "prompts.parquet"
        return [Unit(self.label, "prompts", str(out), producer, len(rows), rows, replaceable=True)]

    def _real_rows(self) -> list[dict[str, Any]]:
        section = self.ctx.config.prompts
        name = section.real or self.ctx.config.reals[0].name
        shards = planned_outputs(self.ctx, f"ingest/{name}")
        cols = ["prompt", "class_id", "class_name"]
        return read_shards([Path(s) for s in shards], IMAGES, columns=cols).to_pylist()

    def preview(self) -> tuple[int, int] | None:
        if self.ctx.config.prompts.source == "real":
            return None  # known once the real source is ingested
        [unit] = self.plan()
        return 1, unit.n_items

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        table = pa.Table.from_pylist(unit.payload, schema=PROMPTS.arrow)
        write_shard(table, unit.output, PROMPTS, unit.producer)
        return {"items": table.num_rows}
