"""The "parquet" source: Parquet files whose image column holds encoded images.

Units are row ranges aligned to row groups (whole consecutive row groups, or slices of one row
group larger than `unit_size`), read with only the needed row groups and columns. A unit's
identity is the file's relative name, its size and the row range. A file whose footer cannot be
read becomes one item with the reason, so a broken file is quarantined, not skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from aigi.curation.sources.base import RawItem, Source, SourceError, SourceUnit
from aigi.curation.sources.columns import Columns
from aigi.curation.sources.paths import resolve_files

_BATCH_ROWS = 128  # images are large: bounded memory per batch, whatever the row group size


def row_ranges(group_rows: list[int], unit_size: int) -> list[tuple[int, int]]:
    """[start, end) row ranges of at most `unit_size` rows that never split a row group unless
    the group alone exceeds `unit_size` (then it is cut into near-equal slices)."""
    out: list[tuple[int, int]] = []
    pos, cur_start = 0, 0
    for n in group_rows:
        if n > unit_size:
            if pos > cur_start:
                out.append((cur_start, pos))
            k = -(-n // unit_size)
            bounds = [pos + n * i // k for i in range(k + 1)]
            out += list(zip(bounds[:-1], bounds[1:], strict=True))
            pos += n
            cur_start = pos
            continue
        if pos + n - cur_start > unit_size:
            out.append((cur_start, pos))
            cur_start = pos
        pos += n
    if pos > cur_start:
        out.append((cur_start, pos))
    return out


def hf_class_names(schema, column: str) -> list[str] | None:
    """The ClassLabel names `datasets` records for `column` in the Parquet schema metadata."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw or not column:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][column]
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" and feature.get("names"):
        return list(feature["names"])
    return None


class ParquetSource(Source):
    kind = "parquet"

    def _columns(self, pf, rel: str) -> Columns:
        schema = pf.schema_arrow
        names = hf_class_names(schema, self.config.class_column)
        return Columns.for_schema(self.config, schema, f"Parquet file {rel}", names)

    def units(self, unit_size: int | None = None) -> list[SourceUnit]:
        import pyarrow.parquet as pq

        size = self._unit_size(unit_size)
        out = []
        for path, rel in resolve_files(
            self.config.path, (".parquet",), self.config.recursive, "Parquet"
        ):
            nbytes = path.stat().st_size
            try:
                pf = pq.ParquetFile(path)
            except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... on a bad footer
                reason = f"cannot read Parquet file: {e}"
                listing = {"file": rel, "size": nbytes, "unreadable": True}
                out.append(
                    SourceUnit(f"{rel}[unreadable]", 1, listing, (str(path), rel, None, reason))
                )
                continue
            self._columns(pf, rel)  # a wrong column is a config error: fail at planning
            groups = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
            for a, b in row_ranges(groups, size):
                listing = {"file": rel, "size": nbytes, "rows": [a, b]}
                out.append(SourceUnit(f"{rel}[{a}:{b}]", b - a, listing, (str(path), rel, a, b)))
        return out

    def read(self, unit: SourceUnit) -> Iterator[RawItem]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path, rel, a, b = unit.payload
        if a is None:
            yield RawItem(rel, None, error=b)
            return
        if Path(path).stat().st_size != unit.listing["size"]:
            raise SourceError(f"Parquet file {rel} changed since planning; plan again")
        done = a  # the next row to yield: a damaged page quarantines the rest of the unit
        try:
            pf = pq.ParquetFile(path)
            cols = self._columns(pf, rel)
            starts = [0]
            for g in range(pf.num_row_groups):
                starts.append(starts[-1] + pf.metadata.row_group(g).num_rows)
            groups = [g for g in range(pf.num_row_groups) if starts[g] < b and starts[g + 1] > a]
            row = starts[groups[0]]
            base_dirs = [Path(path).parent]
            batches = pf.iter_batches(
                batch_size=_BATCH_ROWS, row_groups=groups, columns=cols.needed(), use_threads=False
            )
            for batch in batches:
                lo, hi = max(a - row, 0), min(b - row, batch.num_rows)
                if hi > lo:
                    for item in cols.items(
                        batch.slice(lo, hi - lo), row + lo, lambda i: f"{rel}:{i}", base_dirs
                    ):
                        yield item
                        done += 1
                row += batch.num_rows
                if row >= b:
                    break
        except (pa.ArrowException, OSError) as e:  # pyarrow names no file in its errors
            reason = f"cannot read Parquet file: {' '.join(str(e).split())}"
            for i in range(done, b):
                yield RawItem(f"{rel}:{i}", None, error=reason)
