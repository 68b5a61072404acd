"""The feature store: feature shards in Parquet, one row per image, keyed by image_id.

Each tensor column is stored flat (row-major) as a fixed-size list, so pyarrow, `datasets`,
DuckDB and polars read it; the per-image shape, dtype, extractor config and model revision live
in the file metadata, from which `read_features` rebuilds (N, *shape) arrays without touching
rows one by one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from aigi.core.configtools import to_dict
from aigi.features.base import FeatureExtractor
from aigi.manifests.schema import feature_schema
from aigi.manifests.shards import ManifestError, read_shard, shard_meta, write_shard

SCHEMA_PREFIX = "aigi.features."
#: Float widths whose columns are byte-stream-split by default. DuckDB (2.0) cannot read that
#: encoding on float16 (a FIXED_LEN_BYTE_ARRAY in Parquet), so float16 opts in explicitly.
SPLIT_BY_DEFAULT = ("float32", "float64")


def write_features(
    path: str | os.PathLike,
    image_ids: list[str],
    seeds: list[int],
    arrays: dict[str, np.ndarray],
    extractor: FeatureExtractor,
    producer: str,
    extra: dict[str, Any] | None = None,
    split_float16: bool = False,
) -> Path:
    """Write one feature shard; `arrays` maps each of `extractor.columns()` to (N, *shape).

    Float columns are written with zstd over byte-stream-split values (float16 only with
    `split_float16`, see SPLIT_BY_DEFAULT).
    """
    columns = extractor.columns()
    n = len(image_ids)
    if len(seeds) != n:
        raise ValueError(f"{path}: {n} image_ids but {len(seeds)} seeds")
    if set(arrays) != set(columns):
        raise ValueError(
            f"{path}: arrays {sorted(arrays)} do not match the columns of {extractor.name}: {sorted(columns)}"
        )
    schema = feature_schema(extractor.name, extractor.version, columns)
    data: dict[str, pa.Array] = {
        "image_id": pa.array(image_ids, type=pa.string()),
        "seed": pa.array(seeds, type=pa.int64()),
    }
    for col, (shape, dtype) in columns.items():
        arr = arrays[col]
        want = (n, *shape)
        if tuple(arr.shape) != want:
            raise ValueError(f"{path}: column {col!r} has shape {tuple(arr.shape)}, expected {want}")
        if arr.dtype != np.dtype(dtype):
            raise ValueError(f"{path}: column {col!r} has dtype {arr.dtype}, expected {dtype}")
        flat = pa.array(np.ascontiguousarray(arr).reshape(-1))
        if shape:
            data[col] = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(shape, dtype=np.int64)))
        else:
            data[col] = flat
    table = pa.Table.from_pydict(data)
    split_dtypes = SPLIT_BY_DEFAULT + (("float16",) if split_float16 else ())
    split = tuple(
        f"{col}.list.element" if shape else col
        for col, (shape, dtype) in columns.items()
        if str(np.dtype(dtype)) in split_dtypes
    )
    meta = {
        "shapes": {col: list(shape) for col, (shape, _) in columns.items()},
        "dtypes": {col: str(np.dtype(dtype)) for col, (_, dtype) in columns.items()},
        "extractor": extractor.name,
        "version": extractor.version,
        "config": to_dict(extractor.config),
        "preprocessing": extractor.preprocessing(),
        "model_revision": extractor.model_revision(),
        **(extra or {}),
    }
    return write_shard(table, path, schema, producer, extra=meta, byte_stream_split=split)


def feature_meta(path: str | os.PathLike) -> dict[str, Any]:
    """A feature shard's metadata: schema, producer, shapes, dtypes, extractor, config, revision."""
    meta = shard_meta(path)
    if not meta["schema"].startswith(SCHEMA_PREFIX):
        raise ManifestError(f"{path}: schema is {meta['schema']!r}, not a feature shard ({SCHEMA_PREFIX}*)")
    return {"schema": meta["schema"], "producer": meta["producer"], **meta["extra"]}


def read_features(paths: list[Path], column: str) -> tuple[list[str], np.ndarray]:
    """image_ids and the (N, *shape) array of `column`, concatenated over the shards in order."""
    if not paths:
        raise ValueError(f"read_features({column!r}): no feature shards given")
    ids: list[str] = []
    parts: list[np.ndarray] = []
    first: tuple[Path, str, list[int], str] | None = None
    for p in paths:
        meta = feature_meta(p)
        if column not in meta.get("shapes", {}):
            raise ManifestError(f"{p}: no feature column {column!r} (has {sorted(meta.get('shapes', {}))})")
        shape, dtype = meta["shapes"][column], meta["dtypes"][column]
        if first is None:
            first = (Path(p), meta["schema"], shape, dtype)
        elif (meta["schema"], shape, dtype) != first[1:]:
            raise ManifestError(
                f"{p}: {meta['schema']} {column} {shape} {dtype} does not match "
                f"{first[0]}: {first[1]} {column} {first[2]} {first[3]}"
            )
        table = read_shard(p, meta["schema"], columns=["image_id", column])
        values = table.column(column).combine_chunks()
        if values.null_count:
            raise ManifestError(f"{p}: column {column!r} has {values.null_count} null rows")
        flat = (values.flatten() if shape else values).to_numpy(zero_copy_only=False)
        parts.append(flat.astype(np.dtype(dtype), copy=False).reshape(len(table), *shape))
        ids.extend(table.column("image_id").to_pylist())
    return ids, np.concatenate(parts)


def store_summary(folder: str | os.PathLike) -> dict[str, Any]:
    """One feature store (`features/<name>-<fingerprint>/`): extractor, columns, rows, bytes.

    Bytes are the Parquet files on disk, so `bytes_per_image` is what the store really costs.
    """
    import pyarrow.parquet as pq

    folder = Path(folder)
    # Shards live in one folder per image source; files beside them (reports) are not shards.
    shards = sorted(p for p in folder.glob("*/*.parquet") if not p.name.startswith("."))
    out: dict[str, Any] = {"dir": str(folder), "shards": len(shards), "rows": 0, "bytes": 0}
    for p in shards:
        out["rows"] += pq.ParquetFile(p).metadata.num_rows
        out["bytes"] += p.stat().st_size
    if shards:
        meta = feature_meta(shards[0])
        out.update(
            extractor=meta.get("extractor"),
            version=meta.get("version"),
            columns={c: {"shape": meta["shapes"][c], "dtype": meta["dtypes"][c]} for c in meta["shapes"]},
            model_revision=meta.get("model_revision"),
            preprocessing=meta.get("preprocessing"),
        )
    out["bytes_per_image"] = out["bytes"] / out["rows"] if out["rows"] else 0.0
    return out
