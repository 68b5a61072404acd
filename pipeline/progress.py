"""Progress lines for long stages: units done/total, items, items/s, ETA."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total_units: int, total_items: int, item_name: str,
                 stream: TextIO | None = None, min_interval: float = 1.0) -> None:
        self.label = label
        self.total_units = total_units
        self.total_items = total_items
        self.item_name = item_name
        self.stream = stream or sys.stdout
        self.min_interval = min_interval
        self.units = 0
        self.items = 0
        self.failed = 0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, items: int, failed: bool = False) -> None:
        self.units += 1
        self.items += items
        self.failed += int(failed)
        now = time.perf_counter()
        if now - self._last >= self.min_interval or self.units == self.total_units:
            self._last = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.items / dt
        left = self.total_items - self.items
        eta = f"ETA {left / rate:.0f}s" if rate > 0 and left > 0 else ""
        failed = f"  {self.failed} failed" if self.failed else ""
        return (
            f"  [{self.label}] {self.units}/{self.total_units} units  {self.items} {self.item_name}"
            f"  {rate:.1f} {self.item_name}/s  {eta}{failed}".rstrip()
        )
