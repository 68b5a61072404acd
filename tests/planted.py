"""Shards written by hand in a test, recorded as an upstream stage's plan.

Stages plan from the plans earlier stages recorded (never from a glob of the disk), so a test
that writes image shards itself records them as the plan of the stage that would have made them.
"""

from __future__ import annotations

from pathlib import Path

from aigi.pipeline.runner import record_plan
from aigi.pipeline.stage import RunContext, Unit


def plant_plan(ctx: RunContext, label: str, outputs: list[Path], order: int = 0) -> None:
    units = [Unit(label, Path(p).stem, str(p), "planted", 0) for p in outputs]
    record_plan(ctx.run.logs, order, _Named(label), units)  # type: ignore[arg-type]


class _Named:
    item_name = "images"

    def __init__(self, label: str) -> None:
        self.label = label
