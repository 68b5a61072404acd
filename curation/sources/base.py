"""The interface every real-image source implements: cheap planning, then streaming items.

A source is planned into `SourceUnit`s (small, picklable, named by content: a listing that
changes when the unit's input changes and never holds an absolute path, so a copied dataset
plans to the same units) and each unit is read into `RawItem`s, exactly one per item: an item
that cannot even be read still comes out, with the reason in `error`, so nothing vanishes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from aigi.curation.sources.config import RealSourceConfig


class SourceError(ValueError):
    """A source that cannot be planned or read as configured; the message names the thing."""


@dataclass(frozen=True)
class SourceUnit:
    """One work unit of a source.

    key: readable and unique within the source (for logs; not a file name).
    listing: JSON-able, the unit's content identity (names relative to the source, sizes, row
    ranges, dataset fingerprints); fingerprint it together with `RealSourceConfig.identity()`.
    payload: what `read` needs (may hold absolute paths; never part of the identity).
    """

    key: str
    n_items: int
    listing: Any
    payload: Any


class RawItem(NamedTuple):
    """One item as read from its source, before decoding. `error` set: it cannot be used."""

    origin: str
    data: bytes | None
    caption: str | None = None
    class_name: str | None = None
    class_id: int | None = None
    error: str | None = None
    #: the source's object mask: encoded image bytes or a box [x, y, w, h] (mask_column)
    mask: Any = None


class Source(ABC):
    """Constructing stores the config and touches nothing; `units` lists, `read` reads."""

    kind: ClassVar[str]

    def __init__(self, config: RealSourceConfig) -> None:
        if config.source != self.kind:
            raise SourceError(f"{type(self).__name__} got a config for source {config.source!r}")
        self.config = config

    @abstractmethod
    def units(self, unit_size: int | None = None) -> list[SourceUnit]:
        """All units, in a stable order; each item in exactly one unit. Reads no image."""

    @abstractmethod
    def read(self, unit: SourceUnit) -> Iterator[RawItem]:
        """Exactly `unit.n_items` items, in order."""

    def _unit_size(self, unit_size: int | None) -> int:
        size = self.config.unit_size if unit_size is None else unit_size
        if size <= 0:
            raise SourceError(f"unit_size must be > 0, got {size}")
        return size


def ingest_item(item: RawItem, source: str, max_pixels: int | None = None) -> dict:
    """The IMAGES row of a read item, bytes unchanged; BadImage (with the reason) if unusable."""
    from aigi.curation.ingest import BadImage, ingest_bytes

    if item.error is not None:
        raise BadImage(item.origin, item.error)
    if item.data is None:  # a source bug, not bad input: every item has bytes or a reason
        raise SourceError(f"{item.origin}: item has neither bytes nor an error")
    return ingest_bytes(
        item.data,
        item.origin,
        source,
        caption=item.caption,
        class_name=item.class_name,
        class_id=item.class_id,
        mask=item.mask,
        **({} if max_pixels is None else {"max_pixels": max_pixels}),
    )
