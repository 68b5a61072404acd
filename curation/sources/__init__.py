"""Real-image sources: folders, Parquet files, WebDataset tar shards, local Hugging Face datasets.

`open_source(config)` gives a `Source`: `units()` plans cheap, content-named work units and
`read(unit)` yields one `RawItem` per item; `ingest_item` turns an item into an IMAGES row
(bytes unchanged) or raises `BadImage` with the reason for the quarantine.
"""

from __future__ import annotations

from importlib import import_module

from aigi.curation.sources.base import (
    RawItem,
    Source,
    SourceError,
    SourceUnit,
    ingest_item,
)
from aigi.curation.sources.config import RealSourceConfig, SourceKind

# kind -> (module, class); modules import lazily so one kind's dependency never breaks another
_KINDS = {
    "imagefolder": ("imagefolder", "ImageFolderSource"),
    "parquet": ("parquet", "ParquetSource"),
    "webdataset": ("webdataset", "WebDatasetSource"),
    "hf": ("hf", "HFSource"),
}


def open_source(config: RealSourceConfig) -> Source:
    """The source for `config`; touches no file until `units` or `read`."""
    module, cls = _KINDS[config.source]
    return getattr(import_module(f"aigi.curation.sources.{module}"), cls)(config)


__all__ = [
    "RawItem",
    "RealSourceConfig",
    "Source",
    "SourceError",
    "SourceKind",
    "SourceUnit",
    "ingest_item",
    "open_source",
]
