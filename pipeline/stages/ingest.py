"""Stage: ingest a folder of real images, a shard per unit of files; bad files are quarantined."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from aigi.core.configtools import to_dict
from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import IMAGES, QUARANTINE
from aigi.manifests.shards import write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import chunks, shard_index


class IngestStage(Stage):
    name = "ingest"

    @property
    def label(self) -> str:
        return f"ingest/{self.ctx.config.real.name}"

    def plan(self) -> list[Unit]:
        from aigi.curation.ingest import list_images

        real = self.ctx.config.real
        root = Path(real.path)
        files = list_images(root, recursive=real.recursive)
        cfg = to_dict(real)
        cfg.pop("unit_size")
        units = []
        for i, chunk in enumerate(chunks(files, real.unit_size)):
            # names and sizes: a replaced file is new input, a copied folder is not
            listing = [(rel, (root / rel).stat().st_size) for rel in chunk]
            producer = fingerprint(["ingest", cfg, listing])
            out = self.ctx.run.image_dir(real.name) / f"{shard_index(i)}.parquet"
            units.append(Unit(self.label, f"{real.name}/{shard_index(i)}", str(out), producer, len(chunk), chunk))
        return units

    def preview(self) -> tuple[int, int]:
        units = self.plan()  # lists the files; reads none
        return len(units), sum(u.n_items for u in units)

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.ingest import BadImage, ingest_file

        real = self.ctx.config.real
        root = Path(real.path)
        rows, bad = [], []
        for rel in unit.payload:
            try:
                rows.append(ingest_file(root, rel, real.name, class_from_folder=real.class_from_folder))
            except BadImage as e:
                bad.append({"stage": self.label, "unit": unit.key, "item": str(root / rel), "reason": e.reason})
            except OSError as e:  # vanished or unreadable since listing
                bad.append({"stage": self.label, "unit": unit.key, "item": str(root / rel), "reason": f"unreadable: {e}"})
        if bad:
            # Written before the shard: a finished unit always has its quarantine rows on disk.
            qpath = self.ctx.run.quarantine / "ingest" / real.name / Path(unit.output).name
            write_shard(pa.Table.from_pylist(bad, schema=QUARANTINE.arrow), qpath, QUARANTINE, unit.producer)
        table = pa.Table.from_pylist(rows, schema=IMAGES.arrow)
        write_shard(table, unit.output, IMAGES, unit.producer, extra={"source": real.name, "root": str(root)})
        return {"items": len(rows), "quarantined": len(bad)}
