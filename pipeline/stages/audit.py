"""Stage: the bias audit (one unit): codec and size properties of real vs generated images,
before normalization and, when the config normalizes, after it.

Writes `curation/bias_audit.parquet` (one row per source, property and moment),
`curation/frequency_parity.parquet` (aligned fakes against their parents, per generator and
mode) and `curation/bias_audit.md` (the readable report with the format-only classifier's AUC).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aigi.core import atomic
from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import BIAS_AUDIT, FREQUENCY_PARITY, IMAGES, MEASURES
from aigi.manifests.shards import read_shards, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import image_shards, normalizing, planned_outputs, producer_of

AUDIT_VERSION = 2  # v2: frequency parity of aligned fakes


class AuditStage(Stage):
    name = "audit"
    item_name = "rows"

    def plan(self) -> list[Unit]:
        inputs = {"before": [str(p) for p in planned_outputs(self.ctx, "measure")]}
        if normalizing(self.ctx.config):
            inputs["after"] = [str(p) for p in normalized_measures(self.ctx)]
        images = [str(p) for p in image_shards(self.ctx)]
        producer = fingerprint(
            ["audit", AUDIT_VERSION, self.ctx.config.run.seed,
             {k: [producer_of(Path(p)) for p in v] for k, v in inputs.items()},
             [producer_of(Path(p)) for p in images]]
        )
        out = self.ctx.run.curation / "bias_audit.parquet"
        parity = self.ctx.run.curation / "frequency_parity.parquet"
        return [Unit(self.label, "bias_audit", str(out), producer, 0, {**inputs, "images": images},
                     also=((str(parity), producer),), replaceable=True)]

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        import pyarrow as pa

        from aigi.curation.audit import audit_markdown, bias_audit
        from aigi.curation.frequency_parity import frequency_parity, parity_markdown

        links = read_shards([Path(p) for p in unit.payload["images"]], IMAGES,
                            columns=["image_id", "parent_id", "source", "aligned_mode"])
        tables, parity = {}, []
        for when in ("before", "after"):
            if when not in unit.payload:
                continue
            measures = read_shards([Path(p) for p in unit.payload[when]], MEASURES)
            tables[when] = bias_audit(measures, when, seed=self.ctx.config.run.seed)
            parity.append(frequency_parity(measures, links, when))
        table = pa.concat_tables(list(tables.values()))
        parity_table = pa.concat_tables(parity)
        # the report first: the Parquet files are the unit's completion markers
        report = audit_markdown(list(tables.values())) + "\n" + parity_markdown(parity_table)
        atomic.write_text(Path(unit.output).with_suffix(".md"), report.rstrip() + "\n")
        write_shard(parity_table, unit.also[0][0], FREQUENCY_PARITY, unit.producer)
        write_shard(table, unit.output, BIAS_AUDIT, unit.producer)
        return {"items": table.num_rows, "format_only_auc": auc_by_moment(table)}


def normalized_measures(ctx: Any) -> list[Path]:
    """The measures of the normalized images, written by the normalize stage beside them."""
    from aigi.pipeline.stages.normalize import measures_path

    return [measures_path(ctx, p) for p in planned_outputs(ctx, "normalize")]


def auc_by_moment(table: Any) -> dict[str, float | None]:
    from aigi.curation.audit import AUC_PROPERTY

    return {r["when"]: r["auc"] for r in table.to_pylist() if r["property"] == AUC_PROPERTY}
