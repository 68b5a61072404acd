"""Tables with one row per image, computed from its stored bytes (hashes, measurements).

Every such table starts with the image's `image_id`, `source` and `label`, taken as they are, and
goes on with the values a function computes from the bytes. An image that cannot be computed
fails the whole table with its id named: these run on images ingestion already decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from aigi.manifests.schema import Schema

KEYS = ("image_id", "source", "label")


def per_image_table(images: pa.Table, fn: Callable[[bytes], dict[str, Any]], schema: Schema, who: str) -> pa.Table:
    """A `schema` table for an IMAGES table (needs image_id, image, label, source), in row order."""
    missing = [c for c in ("image_id", "image", "label", "source") if c not in images.column_names]
    if missing:
        raise ValueError(f"{who}: input lacks column(s) {missing}")
    ids = images.column("image_id").to_pylist()
    blobs = images.column("image").combine_chunks().field("bytes").to_pylist()
    names = [f.name for f in schema.arrow if f.name not in KEYS]
    cols: dict[str, list] = {k: [] for k in names}
    for image_id, data in zip(ids, blobs, strict=True):
        if not data:
            raise ValueError(f"{who}: image {image_id!r} has no bytes")
        try:
            values = fn(data)
        except Exception as exc:
            raise ValueError(f"{who}: image {image_id!r}: {exc}") from exc
        for k in names:
            cols[k].append(values[k])
    given = {c: images.column(c).combine_chunks() for c in KEYS}
    arrays = [
        given[f.name].cast(f.type) if f.name in given else pa.array(cols[f.name], type=f.type)
        for f in schema.arrow
    ]
    return pa.Table.from_arrays(arrays, schema=schema.arrow)
