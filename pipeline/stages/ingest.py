"""Stage: ingest one real source (folder, Parquet, WebDataset, local HF dataset), a shard per unit.

Every item ends as an image row or a quarantine row with its reason (`RUN/quarantine/ingest/
<source>/`), never silently skipped. Shard names carry the unit's fingerprint, so a source whose
content changed writes new shards beside the old ones, and later stages, which plan from this
stage's plan, never pick up shards the source no longer has.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import IMAGES, QUARANTINE
from aigi.manifests.shards import write_shard
from aigi.pipeline.stage import RunContext, Stage, Unit
from aigi.pipeline.stages.common import shard_index

INGEST_VERSION = 2  # v2: one decoder for every stage; sources beyond folders


class IngestStage(Stage):
    name = "ingest"

    def __init__(self, ctx: RunContext, real: Any) -> None:
        super().__init__(ctx)
        self.real = real

    @property
    def label(self) -> str:
        return f"ingest/{self.real.name}"

    def plan(self) -> list[Unit]:
        from aigi.curation.sources import open_source

        units = []
        for i, su in enumerate(open_source(self.real).units()):
            # the source's identity and the unit's listing, never a path: a copied dataset is
            # the same input, a changed file is new input
            producer = fingerprint(["ingest", INGEST_VERSION, self.real.identity(), su.listing])
            out = self.ctx.run.image_dir(self.real.name) / f"{shard_index(i)}-{producer[:8]}.parquet"
            units.append(Unit(self.label, f"{self.real.name}/{su.key}", str(out), producer, su.n_items, su))
        return units

    def preview(self) -> tuple[int, int]:
        units = self.plan()  # lists the source; decodes nothing
        return len(units), sum(u.n_items for u in units)

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.ingest import BadImage
        from aigi.curation.sources import open_source
        from aigi.curation.sources.base import ingest_item
        from aigi.prompts.table import prompt_id

        rows, bad = [], []
        for item in open_source(self.real).read(unit.payload):
            try:
                row = ingest_item(item, self.real.name, max_pixels=self.real.max_pixels)
            except BadImage as e:
                bad.append({"stage": self.label, "unit": unit.key, "item": item.origin, "reason": e.reason})
                continue
            except OSError as e:  # vanished or unreadable since listing
                bad.append({"stage": self.label, "unit": unit.key, "item": item.origin, "reason": f"unreadable: {e}"})
                continue
            if row["prompt"] is not None:
                # the caption's prompt id: a prompt made from this caption links back here (D³)
                row["prompt_id"] = prompt_id(row["prompt"])
            rows.append(row)
        if bad:
            # Written before the shard: a finished unit always has its quarantine rows on disk.
            write_shard(pa.Table.from_pylist(bad, schema=QUARANTINE.arrow), quarantine_path(self.ctx, unit),
                        QUARANTINE, unit.producer)
        table = pa.Table.from_pylist(rows, schema=IMAGES.arrow)
        write_shard(table, unit.output, IMAGES, unit.producer, extra={"source": self.real.name})
        skipped = sum(1 for b in bad if b["reason"].startswith("skipped"))
        return {"items": len(rows), "quarantined": len(bad) - skipped, "skipped": skipped}


def quarantine_path(ctx: RunContext, unit: Unit):
    from pathlib import Path

    return ctx.run.quarantine / "ingest" / Path(unit.output).parent.name / Path(unit.output).name
