"""Progress of a stage: units done/total, items, items/s, ETA.

On a terminal it is a live bar (tqdm) redrawn in place; elsewhere (a log file, CI, a pipe) it is
plain lines at most one a second and one at the end, so logs stay readable. `AIGI_PROGRESS=plain`
or `=live` overrides the guess.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO


def live_wanted(stream: TextIO) -> bool:
    mode = os.environ.get("AIGI_PROGRESS", "auto").strip().lower()
    if mode in ("plain", "live"):
        return mode == "live"
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


class Progress:
    def __init__(self, label: str, total_units: int, total_items: int, item_name: str,
                 stream: TextIO | None = None, min_interval: float = 1.0, live: bool | None = None) -> None:
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
        self._bar: Any = None
        if live_wanted(self.stream) if live is None else live:
            import shutil

            from tqdm import tqdm

            # The bar counts items when the plan knows them (ETA from images, not units).
            by_items = total_items > 0
            # A terminal that reports no size (a fresh pty, `script`, some CI runners) gets 100 x 20:
            # tqdm draws nothing in 0 columns, and hides every bar below row 0 of a 0-row screen.
            size = shutil.get_terminal_size((100, 20))
            self._bar = tqdm(
                total=total_items if by_items else total_units, unit=item_name if by_items else "unit",
                desc=f"[{label}]", file=self.stream, ncols=size.columns or 100, nrows=size.lines or 20,
                leave=True, mininterval=0.2,
            )

    def update(self, items: int, failed: bool = False) -> None:
        self.units += 1
        self.items += items
        self.failed += int(failed)
        if self._bar is not None:
            self._bar.update(items if self.total_items > 0 else 1)
            failed_txt = f", {self.failed} failed" if self.failed else ""
            self._bar.set_postfix_str(f"{self.units}/{self.total_units} units{failed_txt}", refresh=False)
            if self.units == self.total_units:
                self.close()
            return
        now = time.perf_counter()
        if now - self._last >= self.min_interval or self.units == self.total_units:
            self._last = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

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
