"""The "hf" source: a local Hugging Face dataset, saved with `save_to_disk` or any local folder
`datasets.load_dataset` understands (imagefolder, parquet, csv, ...). Never a hub id: the path
must be an existing folder, so nothing reaches the network.

Rows are read as Arrow (`with_format("arrow")`), so Image cells come back as their stored
struct<bytes, path>, never decoded: the original bytes are kept; a cell stored only by path (what
`load_dataset("imagefolder")` does for local files) reads that file. ClassLabel columns map ids
to their names. Units are row ranges. A unit's identity is the dataset's fingerprint (from
`save_to_disk`'s state.json) or, for a folder `load_dataset` reads, the relative names and sizes
of all its files (the fingerprint `load_dataset` computes depends on the folder's location).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from aigi.curation.sources.base import RawItem, Source, SourceError, SourceUnit
from aigi.curation.sources.columns import Columns
from aigi.manifests.ids import fingerprint


def _saved(root: Path) -> bool:
    return (root / "state.json").is_file() or (root / "dataset_dict.json").is_file()


def folder_digest(root: Path) -> str:
    """A digest of every non-hidden file's relative name and size under `root`."""
    listing = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith("."):
                f = Path(dirpath) / name
                listing.append((f.relative_to(root).as_posix(), f.stat().st_size))
    return fingerprint(sorted(listing), length=32)


@lru_cache(maxsize=4)
def open_dataset(path: str, split: str) -> Any:
    """The dataset at `path` (one split of it), opened once per process (memory-mapped)."""
    import datasets

    root = Path(path)
    if not root.is_dir():
        raise SourceError(f"hf dataset folder not found: {path} (hub ids are not accepted)")
    if _saved(root):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise SourceError(f"split = {split!r}: not in {path} (splits: {', '.join(ds)})")
            ds = ds[split]
        return ds
    try:
        return datasets.load_dataset(path, split=split)
    except ValueError as e:
        if "split" in str(e).lower():
            raise SourceError(f"split = {split!r}: {e}") from e
        raise


class HFSource(Source):
    kind = "hf"

    def _open(self) -> tuple[Any, Any, Columns]:
        """(the dataset, a view of the configured columns, the checked column mapping)."""
        ds = open_dataset(str(Path(self.config.path).resolve()), self.config.split)
        col = self.config.class_column
        names = getattr(ds.features.get(col), "names", None) if col else None
        where = f"hf dataset {self.config.path}"
        cols = Columns.for_schema(self.config, ds.features.arrow_schema, where, names)
        return ds, ds.select_columns(cols.needed()), cols

    def units(self, unit_size: int | None = None) -> list[SourceUnit]:
        size = self._unit_size(unit_size)
        ds, _, _ = self._open()
        root = Path(self.config.path)
        identity = ds._fingerprint if _saved(root) else folder_digest(root)
        split = self.config.split
        out = []
        for a in range(0, len(ds), size):
            b = min(a + size, len(ds))
            listing = {"dataset": identity, "split": split, "rows": [a, b]}
            out.append(SourceUnit(f"{split}[{a}:{b}]", b - a, listing, (a, b)))
        return out

    def read(self, unit: SourceUnit) -> Iterator[RawItem]:
        _, ds, cols = self._open()
        a, b = unit.payload
        if b > len(ds):
            raise SourceError(f"hf dataset {self.config.path} has {len(ds)} rows, planned {b}")
        root = Path(self.config.path)
        # the dataset is opened by its resolved path, so the paths `datasets` stored are under that
        base_dirs = list(dict.fromkeys([root, root.resolve()]))
        view = ds.with_format("arrow")
        step = 128  # images are large: bounded memory per slice
        for lo in range(a, b, step):
            table = view[lo : min(lo + step, b)]
            yield from cols.items(table, lo, lambda i: f"row:{i}", base_dirs)
