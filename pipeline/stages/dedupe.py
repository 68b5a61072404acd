"""Stage: exact and near-duplicate groups over all hashes (one unit). Annotates; deletes nothing.

Writes `curation/duplicates.parquet` (a decision per image) and `curation/near_pairs.parquet`
(every pair within the radius, across labels: the split audit reads it). With `reference` runs
(the incremental mode), new images are also searched against those runs' hashes, without
re-searching the reference corpus itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aigi.core.configtools import to_dict
from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import DUPLICATES, HASHES, NEAR_PAIRS
from aigi.manifests.shards import read_shards, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import planned_outputs, producer_of

DEDUPE_VERSION = 2  # v2: near-duplicates (pHash within a radius) beside exact ones


class DedupeStage(Stage):
    name = "dedupe"
    item_name = "rows"

    def plan(self) -> list[Unit]:
        cfg = self.ctx.config.curation.dedupe
        inputs = [str(p) for p in planned_outputs(self.ctx, "hash")]
        refs = [str(p) for ref in cfg.reference for p in reference_hashes(Path(ref))]
        settings = {k: v for k, v in to_dict(cfg).items() if k not in ("device", "reference")}
        producer = fingerprint(
            ["dedupe", DEDUPE_VERSION, settings, [producer_of(Path(p)) for p in inputs],
             [producer_of(Path(p)) for p in refs]]
        )
        out = self.ctx.run.curation / "duplicates.parquet"
        pairs = self.ctx.run.curation / "near_pairs.parquet"
        payload = {"hashes": inputs, "reference": refs}
        return [Unit(self.label, "duplicates", str(out), producer, 0, payload,
                     also=((str(pairs), producer),), replaceable=True)]

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.dedupe import against_reference
        from aigi.curation.neardup import near_duplicates, pairs_table

        cfg = self.ctx.config.curation.dedupe
        confirm = cfg.confirm_dhash or None
        hashes = read_shards([Path(p) for p in unit.payload["hashes"]], HASHES)
        dups = near_duplicates(hashes, cfg.radius, method=cfg.method, confirm_dhash=confirm, device=cfg.device)
        if unit.payload["reference"]:
            ref = read_shards([Path(p) for p in unit.payload["reference"]], HASHES)
            dups = against_reference(dups, hashes, ref, cfg.radius)
        pairs = pairs_table(hashes, cfg.radius, confirm_dhash=confirm, device=cfg.device)
        write_shard(pairs, unit.also[0][0], NEAR_PAIRS, unit.producer, extra={"radius": cfg.radius})
        write_shard(dups, unit.output, DUPLICATES, unit.producer,
                    extra={"radius": cfg.radius, "method": cfg.method, "confirm_dhash": cfg.confirm_dhash})
        dropped = dups.num_rows - sum(dups.column("keep").to_pylist())
        flagged = dups.num_rows - dups.column("nearest_real").null_count
        return {"items": dups.num_rows, "dropped": dropped, "near_copies_of_real": flagged, "pairs": pairs.num_rows}


def reference_hashes(run: Path) -> list[Path]:
    """The hash shards of another run (its recorded hash plan), for the incremental mode."""
    import json

    from aigi.pipeline.runner import plan_path

    plan = plan_path(run / "logs", "hash")
    if not plan.exists():
        raise FileNotFoundError(f"curation.dedupe.reference: {run} has no hash stage (no {plan})")
    return [run / u["output"] for u in json.loads(plan.read_text(encoding="utf-8"))["units"]]
