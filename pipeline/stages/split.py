"""Stage: leakage-safe train/val/test split of the kept images (one unit), and its audit.

Writes `curation/splits.parquet` and `curation/split_audit.{parquet,md}`: every near-duplicate
pair (within the dedupe radius, any labels) whose two images are both in the split, and whether
it straddles two splits. With `near_duplicates = "merge"` their groups are merged before the cut,
so none straddles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.compute as pc

from aigi.core import atomic
from aigi.core.configtools import to_dict
from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import DUPLICATES, IMAGES, NEAR_PAIRS, PAIRS, SPLIT_AUDIT, SPLITS
from aigi.manifests.shards import read_shard, read_shards, write_shard
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.stages.common import image_shards, producer_of

SPLIT_COLUMNS = ["image_id", "source", "label", "prompt_id", "class_name"]
SPLIT_VERSION = 3  # v3: strata by the labels a group holds


class SplitStage(Stage):
    name = "split"
    item_name = "rows"

    def plan(self) -> list[Unit]:
        shards = [str(s) for s in image_shards(self.ctx)]
        cur = self.ctx.run.curation
        inputs = {"duplicates": cur / "duplicates.parquet", "pairs": cur / "pairs.parquet",
                  "near_pairs": cur / "near_pairs.parquet"}
        split = self.ctx.config.curation.split
        producer = fingerprint(
            ["split", SPLIT_VERSION, to_dict(split), sorted(self.holdout_sources()), self.ctx.config.run.seed,
             {k: producer_of(p) for k, p in inputs.items()}, [producer_of(Path(s)) for s in shards]]
        )
        payload = {"images": shards, **{k: str(p) for k, p in inputs.items()}}
        return [Unit(self.label, "splits", str(cur / "splits.parquet"), producer, 0, payload,
                     also=((str(cur / "split_audit.parquet"), producer),), replaceable=True)]

    def holdout_sources(self) -> set[str]:
        """Generator names held out: named directly, or by family (every fine-tune of it)."""
        names = set(self.ctx.config.curation.split.holdout)
        return {g.name for g in self.ctx.config.generators if g.name in names or g.family in names}

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        from aigi.curation.split import assign_splits, straddling

        p = unit.payload
        rows = read_shards([Path(s) for s in p["images"]], IMAGES, columns=SPLIT_COLUMNS)
        dups = read_shard(p["duplicates"], DUPLICATES, columns=["image_id", "keep"])
        kept = dups.filter(dups.column("keep")).column("image_id")
        rows = rows.filter(pc.is_in(rows.column("image_id"), value_set=kept))
        pairs = read_shard(p["pairs"], PAIRS, columns=["image_id", "pair_id", "pair_group"])
        where = pc.index_in(rows.column("image_id"), value_set=pairs.column("image_id"))
        for col in ("pair_id", "pair_group"):
            rows = rows.append_column(col, pairs.column(col).take(where))
        near = read_shard(p["near_pairs"], NEAR_PAIRS)
        split = self.ctx.config.curation.split
        links = None
        if split.near_duplicates == "merge":
            links = list(zip(near.column("image_id_a").to_pylist(), near.column("image_id_b").to_pylist(), strict=True))
        table = assign_splits(rows, by=split.by, fractions=split.fractions, seed=self.ctx.config.run.seed,
                              holdout=self.holdout_sources(), links=links)
        audit = straddling(table, near)
        n_straddle = int(pc.sum(audit.column("straddles")).as_py() or 0)
        # the report first: the Parquet files are the unit's completion markers
        atomic.write_text(Path(unit.output).with_name("split_audit.md"),
                          audit_markdown(audit, n_straddle, split.near_duplicates))
        write_shard(audit, unit.also[0][0], SPLIT_AUDIT, unit.producer)
        write_shard(table, unit.output, SPLITS, unit.producer)
        counts = {s: int(pc.sum(pc.equal(table.column("split"), s)).as_py() or 0) for s in ("train", "val", "test")}
        return {"items": table.num_rows, "counts": counts, "straddling_near_duplicates": n_straddle}


def audit_markdown(audit: Any, n_straddle: int, mode: str) -> str:
    lines = [
        "# Cross-split near-duplicate audit",
        "",
        f"{audit.num_rows} near-duplicate pairs among the split images; **{n_straddle}** straddle two splits "
        f"(mode: {mode}{'; groups were merged before the cut' if mode == 'merge' else ''}).",
        "",
    ]
    if n_straddle:
        lines += ["| image a | image b | distance | split a | split b |", "|---|---|---|---|---|"]
        for r in audit.filter(audit.column("straddles")).slice(0, 50).to_pylist():
            lines.append(f"| {r['image_id_a']} | {r['image_id_b']} | {r['distance']} | {r['split_a']} | {r['split_b']} |")
        if n_straddle > 50:
            lines.append(f"\n... and {n_straddle - 50} more (split_audit.parquet).")
    return "\n".join(lines) + "\n"
