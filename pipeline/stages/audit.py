"""Stage: the bias audit (one unit): codec and size properties of real vs generated images,
before normalization and, when the config normalizes, after it.

Writes `curation/bias_audit.parquet` (one row per source, property and moment) and
`curation/bias_audit.md` (the readable report with the format-only classifier's AUC).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import BIAS_AUDIT, MEASURES
from aigi.manifests.shards import read_shards, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import normalizing, planned_outputs, producer_of

AUDIT_VERSION = 1


class AuditStage(Stage):
    name = "audit"
    item_name = "rows"

    def plan(self) -> list[Unit]:
        inputs = {"before": [str(p) for p in planned_outputs(self.ctx, "measure")]}
        if normalizing(self.ctx.config):
            inputs["after"] = [str(p) for p in normalized_measures(self.ctx)]
        producer = fingerprint(
            ["audit", AUDIT_VERSION, self.ctx.config.run.seed,
             {k: [producer_of(Path(p)) for p in v] for k, v in inputs.items()}]
        )
        out = self.ctx.run.curation / "bias_audit.parquet"
        return [Unit(self.label, "bias_audit", str(out), producer, 0, inputs, replaceable=True)]

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        import pyarrow as pa

        from aigi.curation.audit import audit_markdown, bias_audit

        tables = {
            when: bias_audit(read_shards([Path(p) for p in paths], MEASURES), when, seed=self.ctx.config.run.seed)
            for when, paths in unit.payload.items()
        }
        table = pa.concat_tables(list(tables.values()))
        # the report first: the Parquet file is the unit's completion marker
        Path(unit.output).with_suffix(".md").write_text(audit_markdown(list(tables.values())), encoding="utf-8")
        write_shard(table, unit.output, BIAS_AUDIT, unit.producer)
        return {"items": table.num_rows, "format_only_auc": auc_by_moment(table)}


def normalized_measures(ctx: Any) -> list[Path]:
    """The measures of the normalized images, written by the normalize stage beside them."""
    from aigi.pipeline.stages.normalize import measures_path

    return [measures_path(ctx, p) for p in planned_outputs(ctx, "normalize")]


def auc_by_moment(table: Any) -> dict[str, float | None]:
    from aigi.curation.audit import AUC_PROPERTY

    return {r["when"]: r["auc"] for r in table.to_pylist() if r["property"] == AUC_PROPERTY}
