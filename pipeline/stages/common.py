"""Helpers shared by the stages: which sources a run has, and where their shards are."""

from __future__ import annotations

from pathlib import Path

from aigi.manifests.shards import shard_meta
from aigi.pipeline.stage import RunContext


def image_shards(ctx: RunContext) -> list[Path]:
    """The image shards of this config: a generator's shards carry its fingerprint in their name,
    so shards made with other weights or settings (kept on disk, never overwritten) are not
    picked up by later stages."""
    out: list[Path] = []
    for g in ctx.config.generators:
        out += [p for p in ctx.run.image_shards(g.name) if p.stem.endswith(generator_tag(g))]
    if ctx.config.real is not None:
        out += ctx.run.image_shards(ctx.config.real.name)
    return out


def generator_tag(gen) -> str:
    """The suffix of a generator's shard names: the first 8 characters of its fingerprint."""
    return "-" + gen.fingerprint()[:8]


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
