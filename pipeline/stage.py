"""The stage contract: plan units, set up once per worker, process one unit idempotently.

A unit is done exactly when its output file exists (written atomically by the manifests writer)
and carries the fingerprint the unit expects. Stages are plain Python: they know nothing of
Dask and run unchanged under a cluster or a for-loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from aigi.manifests.rundir import RunDir
from aigi.manifests.shards import ManifestError, shard_meta


class StaleOutput(RuntimeError):
    """An output exists but was produced by a different config or input."""


class SetupFailed(RuntimeError):
    """A stage's per-worker setup (loading its model) failed: no unit of it can run there."""


@dataclass(frozen=True)
class Unit:
    """One piece of work: small and picklable; the output path is its completion marker."""

    stage: str
    key: str
    output: str
    producer: str
    n_items: int = 0
    payload: Any = None
    #: Further (output, producer) pairs of a unit that writes several files (one per feature of a
    #: feature group); the unit is done when every one of them is.
    also: tuple[tuple[str, str], ...] = ()
    #: A whole-corpus summary (duplicate groups, pairs, splits, audits) that is cheap to redo: when
    #: its inputs change it is replaced, not refused as stale. Its inputs are kept.
    replaceable: bool = False

    def outputs(self) -> list[tuple[str, str]]:
        return [(self.output, self.producer), *self.also]


@dataclass(frozen=True)
class RunContext:
    config: Any  # aigi.pipeline.config.RunConfig
    run: RunDir


class Stage:
    name: ClassVar[str]
    #: GPU stages request a `GPU` resource from the cluster (one GPU per worker).
    gpu: ClassVar[bool] = False
    #: What a unit counts in progress output ("images", "rows").
    item_name: ClassVar[str] = "images"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    @property
    def label(self) -> str:
        """Name shown in progress and status; one stage class may run per generator or feature."""
        return self.name

    def plan(self) -> list[Unit]:
        raise NotImplementedError

    def preview(self) -> tuple[int, int] | None:
        """(units, items) known from the config alone, for `aigi run --plan`; None when the
        stage plans from outputs of earlier stages that do not exist yet."""
        return None

    def setup_key(self) -> str | None:
        """Identity of the per-worker state (a loaded model); None when the stage needs none."""
        return None

    def setup(self, device: str) -> Any:
        """Build the per-worker state (load models). Called once per worker and key."""
        return None

    def device_request(self) -> str:
        return "cpu"

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        """Do the unit's work and write its output atomically; return a small summary."""
        raise NotImplementedError


def is_done(unit: Unit) -> bool:
    """True when every output of the unit exists and was made by the same producer.

    An output made by a different producer is never overwritten silently: the config or the
    inputs changed under an existing run directory, and the user must choose.
    """
    if unit.replaceable:
        return all(Path(out).exists() and _producer(out) == producer for out, producer in unit.outputs())
    return all(output_done(unit.stage, out, producer) for out, producer in unit.outputs())


def _producer(path: str) -> str | None:
    try:
        return shard_meta(path)["producer"]
    except (ManifestError, OSError):
        return None


def output_done(stage: str, output: str, producer: str) -> bool:
    path = Path(output)
    if not path.exists():
        return False
    try:
        meta = shard_meta(path)
    except (ManifestError, OSError) as e:
        raise StaleOutput(f"{path}: unreadable output of {stage} ({e}); delete it to redo the unit") from None
    if meta["producer"] != producer:
        raise StaleOutput(
            f"{path} was produced by a different config or input ({meta['producer']} != "
            f"{producer}). Use a new run directory, or delete "
            f"{os.path.dirname(path)} to redo this {stage} work."
        )
    return True
