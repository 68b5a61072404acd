"""The Parquet shard writer and reader. Every Parquet write in aigi goes through here.

Writes are atomic (temporary name, then rename), so a file that exists is complete: the file
itself is the completion marker. Every file carries its schema name and version and the
fingerprint of what produced it; readers check them and fail loudly on a mismatch. A file that
cannot be read at all (cut short by a full disk or a copy, damaged) raises UnreadableShard, an
OSError naming the path, where pyarrow's own errors name none.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from aigi.manifests.schema import REGISTRY, Schema

KEY_SCHEMA = b"aigi.schema"
KEY_VERSION = b"aigi.schema_version"
KEY_PRODUCER = b"aigi.producer"
KEY_EXTRA = b"aigi.extra"
KEY_HF = b"huggingface"


class ManifestError(RuntimeError):
    """A Parquet file is not what its reader expects (schema, version, producer)."""


class UnreadableShard(OSError):
    """A Parquet file that cannot be read (truncated, damaged, not Parquet); names the path.

    An OSError, not a ManifestError: the file is broken, not a readable file of another kind,
    and callers that redo a unit whose output cannot be opened already catch OSError."""


def _unreadable(path: str | os.PathLike, e: BaseException) -> UnreadableShard:
    return UnreadableShard(f"{path}: unreadable Parquet file (truncated or damaged?): {' '.join(str(e).split())}")


def write_shard(
    table: pa.Table | Mapping[str, Any],
    path: str | os.PathLike,
    schema: Schema,
    producer: str,
    extra: Mapping[str, Any] | None = None,
    row_group_size: int = 256,
    byte_stream_split: tuple[str, ...] = (),
) -> Path:
    """Write `table` (or a column dict) to `path` atomically, conformed to `schema`.

    Columns must match the schema's names exactly (order is fixed by the schema); a missing or
    extra column is an error, not a silent fill. `byte_stream_split` names leaf columns (e.g.
    "lare.list.element") written with that encoding instead of dictionary/plain: floats then
    compress better under zstd.
    """
    path = Path(path)
    if not isinstance(table, pa.Table):
        table = _table_from_columns(table, schema)
    names = set(table.column_names)
    want = set(schema.arrow.names)
    if names != want:
        raise ManifestError(
            f"{path}: columns do not match schema {schema.name} v{schema.version}: "
            f"missing {sorted(want - names)}, unexpected {sorted(names - want)}"
        )
    table = table.select(schema.arrow.names).cast(schema.arrow)
    meta = {
        KEY_SCHEMA: schema.name.encode(),
        KEY_VERSION: str(schema.version).encode(),
        KEY_PRODUCER: producer.encode(),
        KEY_EXTRA: json.dumps(dict(extra or {}), sort_keys=True).encode(),
    }
    hf = schema.hf_metadata()
    if hf is not None:
        meta[KEY_HF] = hf
    table = table.replace_schema_metadata(meta)
    compression: str | dict[str, str] = "zstd"
    if schema.uncompressed:
        compression = {c: "zstd" for c in _leaf_paths(schema.arrow)}
        compression.update({c: "NONE" for c in schema.uncompressed})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        options: dict[str, Any] = {}
        if byte_stream_split:
            split = set(byte_stream_split)
            options["use_dictionary"] = [c for c in _leaf_paths(table.schema) if c not in split]
            options["column_encoding"] = {c: "BYTE_STREAM_SPLIT" for c in byte_stream_split}
        pq.write_table(
            table,
            tmp,
            compression=compression,
            row_group_size=row_group_size,
            write_page_index=True,
            **options,
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _leaf_paths(schema: pa.Schema) -> list[str]:
    out: list[str] = []

    def walk(prefix: str, t: pa.DataType) -> None:
        if pa.types.is_struct(t):
            for f in t:
                walk(f"{prefix}.{f.name}", f.type)
        elif pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
            walk(f"{prefix}.list.element", t.value_type)
        else:
            out.append(prefix)

    for f in schema:
        walk(f.name, f.type)
    return out


def _table_from_columns(cols: Mapping[str, Any], schema: Schema) -> pa.Table:
    arrays = []
    for f in schema.arrow:
        if f.name not in cols:
            raise ManifestError(f"column {f.name!r} missing for schema {schema.name}")
        arrays.append(pa.array(cols[f.name], type=f.type))
    extra = set(cols) - set(schema.arrow.names)
    if extra:
        raise ManifestError(f"unexpected columns {sorted(extra)} for schema {schema.name}")
    return pa.Table.from_arrays(arrays, schema=schema.arrow)


def shard_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The aigi metadata of a Parquet file, read from its footer only."""
    try:
        md = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, e) from e
    if KEY_SCHEMA not in md:
        raise ManifestError(f"{path}: not an aigi shard (no {KEY_SCHEMA.decode()} metadata)")
    try:
        meta = {
            "schema": md[KEY_SCHEMA].decode(),
            "version": int(md[KEY_VERSION].decode()),
            "producer": md[KEY_PRODUCER].decode(),
            "extra": json.loads(md.get(KEY_EXTRA, b"{}").decode()),
        }
    except (KeyError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ManifestError(f"{path}: damaged aigi metadata ({type(e).__name__}: {e})") from None
    if not isinstance(meta["extra"], dict):
        raise ManifestError(f"{path}: damaged aigi metadata ({KEY_EXTRA.decode()} is not a JSON object)")
    return meta


def check_shard(path: str | os.PathLike, schema: Schema | str, producer: str | None = None) -> dict:
    """Check a shard's schema (and producer, when given); return its metadata."""
    name = schema if isinstance(schema, str) else schema.name
    meta = shard_meta(path)
    if meta["schema"] != name:
        raise ManifestError(f"{path}: schema is {meta['schema']!r}, expected {name!r}")
    expected_version = (
        schema.version if isinstance(schema, Schema) else REGISTRY[name].version if name in REGISTRY else None
    )
    if expected_version is not None and meta["version"] != expected_version:
        raise ManifestError(
            f"{path}: {name} version {meta['version']}, this aigi reads version {expected_version}"
        )
    if producer is not None and meta["producer"] != producer:
        raise ManifestError(
            f"{path}: produced by {meta['producer']}, expected {producer} (the config changed?)"
        )
    return meta


def read_shard(
    path: str | os.PathLike,
    schema: Schema | str,
    columns: list[str] | None = None,
    producer: str | None = None,
) -> pa.Table:
    """Read a shard after checking its schema name, version and (optionally) producer."""
    check_shard(path, schema, producer)
    return read_table(path, columns=columns)


def read_table(path: str | os.PathLike, **kwargs: Any) -> pa.Table:
    """`pq.read_table(path, **kwargs)`, except that a damaged file raises `UnreadableShard`
    naming it (pyarrow's errors name no file)."""
    try:
        return pq.read_table(path, **kwargs)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as e:  # a footer intact over damaged pages, or no footer
        raise _unreadable(path, e) from e


def parquet_file(path: str | os.PathLike) -> pq.ParquetFile:
    """`pq.ParquetFile(path)` (its footer read), a damaged file raising `UnreadableShard`."""
    try:
        return pq.ParquetFile(path)
    except FileNotFoundError:
        raise
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, e) from e


def read_row_groups(path: str | os.PathLike, groups: list[int], columns: list[str] | None = None) -> pa.Table:
    """Some row groups of a file, a damaged file raising `UnreadableShard` naming it."""
    pf = parquet_file(path)
    try:
        return pf.read_row_groups(groups, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, e) from e


def read_shards(paths: list[Path], schema: Schema | str, columns: list[str] | None = None) -> pa.Table:
    """Read and concatenate several shards of one schema."""
    tables = [read_shard(p, schema, columns=columns) for p in paths]
    if not tables:
        s = schema if isinstance(schema, Schema) else REGISTRY[schema]
        arrow = s.arrow if columns is None else pa.schema([s.arrow.field(c) for c in columns])
        return arrow.empty_table()
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
