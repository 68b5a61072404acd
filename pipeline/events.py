"""The run's structured log: `RUN/logs/events.jsonl`, one JSON object per line, appended as the run goes.

Events: `run_start` (where it runs, the Dask dashboard), `stage_start` (units to run, items), `unit_done` (unit, items, seconds, quarantined),
`unit_failed` (unit, error, the worker's traceback), `stage_done` (ran, items, seconds) and
`stage_failed`. Every event carries `time` (UTC, ISO 8601) and `event`; stage events `stage`. A stage with nothing
to run writes nothing: a re-run that finds everything done adds one `run_start` line. Lines are
flushed as they are written: `tail -f RUN/logs/events.jsonl` follows a run, and a killed run keeps
every event before the kill.
"""

from __future__ import annotations

import json
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


class EventLog:
    def __init__(self, logs: Path) -> None:
        self.path = Path(logs) / "events.jsonl"

    def write(self, event: str, stage: str | None = None, **fields: Any) -> None:
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "event": event,
                  **({"stage": stage} if stage else {}), **fields}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one write per line in append mode: concurrent appenders never interleave within a line
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")

    def unit_failed(self, stage: str, unit: str, error: BaseException) -> None:
        self.write("unit_failed", stage, unit=unit, error=f"{type(error).__name__}: {error}",
                   traceback="".join(traceback.format_exception(error)))


def read_events(logs: Path) -> list[dict[str, Any]]:
    path = Path(logs) / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line torn by a kill mid-write: the rest still reads
            continue
    return out
