"""Helpers shared by the stages: which sources a run has, and where their shards are."""

from __future__ import annotations

from pathlib import Path

from aigi.manifests.shards import shard_meta
from aigi.pipeline.stage import RunContext


def sources(ctx: RunContext) -> list[str]:
    """Image sources of this config (other folders under images/ are not this run's)."""
    names = [g.name for g in ctx.config.generators]
    if ctx.config.real is not None:
        names.append(ctx.config.real.name)
    return names


def image_shards(ctx: RunContext) -> list[Path]:
    out: list[Path] = []
    for s in sources(ctx):
        out += ctx.run.image_shards(s)
    return out


def producer_of(path: Path) -> str:
    return shard_meta(path)["producer"]


def num_rows(path: Path) -> int:
    """Rows of a Parquet file, from its footer."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def shard_index(i: int) -> str:
    return f"shard-{i:05d}"


def chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]
