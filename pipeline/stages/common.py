"""Helpers shared by the stages: which sources a run has, and where their shards are."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from aigi.manifests.ids import fingerprint
from aigi.manifests.schema import IMAGES, Schema
from aigi.manifests.shards import parquet_file, read_shard, shard_meta, write_shard
from aigi.pipeline.stage import RunContext, Stage, Unit


def planned_outputs(ctx: RunContext, label: str) -> list[Path]:
    """The outputs an earlier stage planned in this run (logs/plans), in plan order.

    Downstream stages plan from upstream plans, never from a glob of the disk: shards a source no
    longer has (files removed, weights changed) stay on disk but are not picked up."""
    import json

    from aigi.pipeline.runner import plan_path

    path = plan_path(ctx.run.logs, label)
    if not path.exists():
        raise FileNotFoundError(f"stage {label} has no recorded plan in {ctx.run.root}: run it first")
    plan = json.loads(path.read_text(encoding="utf-8"))
    return [ctx.run.root / u["output"] for u in plan["units"]]


def image_shards(ctx: RunContext) -> list[Path]:
    """The original image shards of this config: every generator's and every real source's."""
    out: list[Path] = []
    for g in ctx.config.generators:
        out += planned_outputs(ctx, f"generate/{g.name}" if g.mode == "text" else f"aligned/{g.name}")
    for r in ctx.config.reals:
        out += planned_outputs(ctx, f"ingest/{r.name}")
    return out


def normalizing(config) -> bool:
    """Whether the config re-encodes or resizes images (features then see the normalized ones)."""
    n = config.curation.normalize
    return n.format != "keep" or n.short_side > 0 or n.crop != "none"


def curated_shards(ctx: RunContext) -> list[Path]:
    """The image shards later stages use: normalized ones when normalization is configured (the
    originals stay where they are), else the originals."""
    return planned_outputs(ctx, "normalize") if normalizing(ctx.config) else image_shards(ctx)


def curation_path(ctx: RunContext, kind: str, image_shard: Path) -> Path:
    """Where a per-shard curation output of `kind` (hashes, measures, ...) lives."""
    return ctx.run.curation / kind / image_shard.parent.name / image_shard.name


def producer_of(path: Path) -> str:
    return shard_meta(path)["producer"]


def num_rows(path: Path) -> int:
    """Rows of a Parquet file, from its footer."""
    return parquet_file(path).metadata.num_rows


def shard_index(i: int) -> str:
    return f"shard-{i:05d}"


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class PerImageShardStage(Stage):
    """One unit per original image shard, writing one table per shard to curation/<kind>/;
    subclasses say what (`kind`, `version`, `schema`) and compute it (`compute`)."""

    kind: ClassVar[str]
    version: ClassVar[int]
    schema: ClassVar[Schema]

    def plan(self) -> list[Unit]:
        units = []
        for shard in image_shards(self.ctx):
            producer = fingerprint([self.name, self.version, producer_of(shard)])
            out = curation_path(self.ctx, self.kind, shard)
            units.append(Unit(self.label, f"{shard.parent.name}/{shard.stem}", str(out), producer,
                              num_rows(shard), str(shard)))
        return units

    def compute(self, images: Any) -> Any:
        raise NotImplementedError

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        images = read_shard(unit.payload, IMAGES, columns=["image_id", "image", "label", "source"])
        table = self.compute(images)
        write_shard(table, unit.output, self.schema, unit.producer)
        return {"items": table.num_rows}
