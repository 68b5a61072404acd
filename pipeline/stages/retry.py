"""Items that fail are left out of their shard, recorded, and retried alone by the next run.

A generator stage makes a batch of images at a time. When a batch raises, `one_by_one` makes
its items one at a time; the items that still raise are recorded (`failure`: the item's index in
the unit, its error, and what identifies it) and the unit writes its shard without them, listing
them in the shard's metadata (`extra.failed`). The next run's plan adds, for each such shard, a
**retry unit** for exactly those items (`retry_units`), whose shard is written beside the first
(`<name>-retry-<fp>.parquet`): no finished image is redone and no shard changes once written, so
later stages never see a file change under them. A unit whose every item fails raises
(`raise_if_all_failed`): that is the model's or the machine's problem, not an item's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aigi.manifests.ids import fingerprint
from aigi.manifests.shards import shard_meta
from aigi.pipeline.stage import Unit


class ItemsFailed(RuntimeError):
    """Every item of a unit failed."""


def failure(index: int, error: BaseException, **what: Any) -> dict[str, Any]:
    """The record of a failed item: its index in the unit, its error, and `what` names it."""
    return {"index": index, **what, "error": f"{type(error).__name__}: {str(error)[:500]}"}


def one_by_one(call: Callable[[list[int]], list[Any]], batch: list[int], failed: list[dict[str, Any]],
               record: Callable[[int, BaseException], dict[str, Any]]) -> tuple[list[int], list[Any]]:
    """`call(batch)`; if it raises, `call([i])` for each item. Returns (the items that
    succeeded, their outputs); each item that still raises is appended to `failed` as
    `record(i, error)`."""
    try:
        return batch, call(batch)
    except Exception as e:  # noqa: BLE001 - narrowed below, item by item
        if len(batch) == 1:
            failed.append(record(batch[0], e))
            return [], []
    good, outputs = [], []
    for i in batch:
        try:
            outputs += call([i])
            good.append(i)
        except Exception as e:  # noqa: BLE001 - recorded with its error, retried next run
            failed.append(record(i, e))
    return good, outputs


def raise_if_all_failed(failed: list[dict[str, Any]], n: int) -> None:
    if failed and len(failed) == n:
        raise ItemsFailed(f"every one of its {n} images failed; the first: {failed[0]['error']}")


def retry_units(unit: Unit) -> list[Unit]:
    """For a finished unit whose shard lists failed items: a unit for those items (its payload
    gains `only`: their indices), then (if that one has run and some still failed) one for those,
    and so on."""
    out: list[Unit] = []
    current = unit
    while Path(current.output).exists():
        meta = shard_meta(current.output)  # one footer read per shard
        failed = meta["extra"].get("failed") or []
        if meta["producer"] != current.producer or not failed:
            break
        indices = sorted(f["index"] for f in failed)
        producer = fingerprint([unit.producer, "retry", indices])
        base = Path(unit.output)
        retry_out = base.with_name(f"{base.stem}-retry-{producer[:8]}.parquet")
        current = Unit(unit.stage, f"{unit.key}/retry-{producer[:8]}", str(retry_out), producer,
                       len(indices), {**unit.payload, "only": indices})
        out.append(current)
    return out
