"""Run stages in order over their units; skip finished units; record plans for `aigi status`."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from aigi.core import atomic
from aigi.pipeline.cluster import StageStalled, UnitFailed
from aigi.pipeline.events import EventLog
from aigi.pipeline.progress import Progress
from aigi.pipeline.stage import SetupFailed, Stage, Unit, is_done


class Executor(Protocol):
    def map(self, stage: Stage, units: list[Unit]) -> Any: ...


class StageFailed(RuntimeError):
    pass


@dataclass
class StageResult:
    label: str
    units: int
    skipped: int
    ran: int
    items: int
    seconds: float
    summaries: list[dict[str, Any]] = field(default_factory=list)


def plan_path(logs: Path, label: str) -> Path:
    return logs / "plans" / (label.replace("/", "__") + ".json")


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` unless the file already holds it, so a re-run rewrites nothing."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    atomic.write_text(path, text)
    return True


def record_plan(logs: Path, order: int, stage: Stage, units: list[Unit]) -> None:
    plan = {
        "order": order,
        "stage": stage.label,
        "item_name": stage.item_name,
        # relative to the run root, so a moved run directory still reports correctly
        "units": [
            {
                "key": u.key,
                "producer": u.producer,
                "output": os.path.relpath(u.output, logs.parent),
                "also": [os.path.relpath(o, logs.parent) for o, _ in u.also],
                "items": u.n_items,
            }
            for u in units
        ],
    }
    write_if_changed(plan_path(logs, stage.label), json.dumps(plan, indent=1))


def run_stages(
    stages: list[Stage], executor: Executor, logs: Path, stream: TextIO | None = None,
    before_work: Callable[[], None] | None = None,
) -> list[StageResult]:
    """Run each stage to completion before planning the next (later plans read earlier outputs).

    `before_work` is called once, when the first stage with units to run has passed its checks
    (a stale output refuses the stage before its plan or anything else is written).

    A failing unit does not stop its siblings: they finish and persist, then the stage raises
    `StageFailed` naming every failed unit; a re-run redoes only what is missing.
    """
    stream = stream or sys.stdout
    events = EventLog(logs)
    results = []
    for order, stage in enumerate(stages):
        t0 = time.perf_counter()
        units = stage.plan()
        pending = [u for u in units if not is_done(u)]  # raises StaleOutput before anything is written
        skipped = len(units) - len(pending)
        if pending and before_work is not None:
            before_work()
            before_work = None
        record_plan(logs, order, stage, units)
        if not pending:
            stream.write(f"  [{stage.label}] {len(units)}/{len(units)} units already done, skipped\n")
            results.append(StageResult(stage.label, len(units), skipped, 0, 0, 0.0))
            continue
        if skipped:
            stream.write(f"  [{stage.label}] {skipped} of {len(units)} units already done, running {len(pending)}\n")
        cleaned = clean_partials(logs.parent, pending)
        events.write("stage_start", stage.label, units=len(pending), of=len(units),
                     items=sum(u.n_items for u in pending), partials_removed=[str(p) for p in cleaned])
        progress = Progress(
            stage.label, len(pending), sum(u.n_items for u in pending), stage.item_name, stream
        )
        summaries, failures = [], []
        try:
            for out in executor.map(stage, pending):
                if isinstance(out, UnitFailed):
                    failures.append(out)
                    events.unit_failed(stage.label, out.unit.key, out.error)
                    progress.update(0, failed=True)
                else:
                    summaries.append(out)
                    # recorded as each unit finishes, so a killed run keeps what it paid for
                    record_costs(logs, stage.label, [out])
                    events.write("unit_done", stage.label, unit=out.get("key"), items=int(out.get("items", 0)),
                                 seconds=round(float(out.get("work_s", 0.0)), 3),
                                 quarantined=int(out.get("quarantined", 0)),
                                 failed_items=int(out.get("failed_items", 0)))
                    progress.update(int(out.get("items", 0)))
        except StageStalled as e:
            events.write("stage_stalled", stage.label, error=str(e), ran=len(summaries), failed=len(failures))
            raise
        finally:
            progress.close()
        seconds = time.perf_counter() - t0
        if failures:
            events.write("stage_failed", stage.label, failed=len(failures), ran=len(pending),
                         seconds=round(seconds, 3))
            if all("scheduler-connection-lost" in str(f.error) for f in failures):
                raise StageFailed(
                    f"stage {stage.label}: lost the connection to the Dask scheduler ({len(failures)} of "
                    f"{len(pending)} units not finished). Finished units are kept; restart the cluster and re-run."
                ) from failures[0].error
            setup = {str(f.error) for f in failures if isinstance(f.error, SetupFailed)}
            if setup:  # one line: the cause is the stage's, not each unit's
                raise StageFailed(
                    f"{'; '.join(sorted(setup))} ({len(failures)} of {len(pending)} units not run; "
                    "finished units are kept, re-run once it is fixed)"
                ) from failures[0].error
            detail = "; ".join(str(f) for f in failures[:5])
            raise StageFailed(
                f"stage {stage.label}: {len(failures)} of {len(pending)} units failed ({detail}). "
                "Finished units are kept; re-run to redo the rest."
            ) from failures[0].error
        events.write("stage_done", stage.label, ran=len(pending),
                     items=sum(int(s.get("items", 0)) for s in summaries), seconds=round(seconds, 3))
        failed_items = sum(int(s.get("failed_items", 0)) for s in summaries)
        if failed_items:
            stream.write(f"  [{stage.label}] {failed_items} items failed and were left out (errors in "
                         "logs/events.jsonl and `aigi status`); the next run retries just those\n")
        bad = sum(int(s.get("quarantined", 0)) for s in summaries)
        not_images = sum(int(s.get("skipped", 0)) for s in summaries)
        if bad or not_images:
            from aigi.pipeline.quarantine import summary_line

            stream.write(f"  [{stage.label}] {summary_line(bad, not_images, logs.parent / 'quarantine')}\n")
        results.append(
            StageResult(
                stage.label, len(units), skipped, len(pending),
                sum(int(s.get("items", 0)) for s in summaries), seconds, summaries,
            )
        )
    return results


def clean_partials(root: Path, units: list[Unit]) -> list[Path]:
    """Remove the temporary files that writers killed mid-write (SIGKILL, power loss) left in the
    folders the units write to, before the units run again. Only one stage of a run runs at a
    time (and one run per directory), so no live writer owns them."""
    folders = {Path(out).parent for u in units for out, _ in u.outputs()}
    gone: list[Path] = []
    for folder in sorted(folders):
        if not folder.is_dir():
            continue
        # the run root itself holds other stages' folders: only its own files there
        walk = [folder] if folder.resolve() == root.resolve() else [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        for d in walk:
            gone += atomic.clean_partials(d)
    return gone


def record_costs(logs: Path, label: str, summaries: list[dict[str, Any]]) -> None:
    """Append each unit's cost (seconds, items, GPU, peak GPU memory) to logs/costs.jsonl, which
    `aigi status` sums per stage."""
    if not summaries:
        return
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "costs.jsonl", "a", encoding="utf-8") as f:
        for s in summaries:
            f.write(json.dumps({
                "stage": label, "unit": s.get("key"), "items": int(s.get("items", 0)),
                "setup_s": round(float(s.get("setup_s", 0.0)), 4), "work_s": round(float(s.get("work_s", 0.0)), 4),
                "gpu": bool(s.get("gpu", False)), "peak_gpu_bytes": int(s.get("peak_gpu_bytes", 0)),
            }) + "\n")


def stage_costs(logs: Path) -> dict[str, dict[str, Any]]:
    """Per stage: units run, seconds of work (and GPU-seconds), images/s, peak GPU memory; the
    latest record of each unit counts (a unit redone replaces its earlier cost)."""
    path = logs / "costs.jsonl"
    if not path.exists():
        return {}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            latest[(r["stage"], str(r["unit"]))] = r
    out: dict[str, dict[str, Any]] = {}
    for r in latest.values():
        c = out.setdefault(r["stage"], {"units_run": 0, "items": 0, "work_s": 0.0, "gpu_s": 0.0, "peak_gpu_bytes": 0})
        c["units_run"] += 1
        c["items"] += r["items"]
        c["work_s"] += r["work_s"]
        c["gpu_s"] += r["work_s"] if r["gpu"] else 0.0
        c["peak_gpu_bytes"] = max(c["peak_gpu_bytes"], r["peak_gpu_bytes"])
    for c in out.values():
        c["items_per_s"] = c["items"] / c["work_s"] if c["work_s"] > 0 else None
    return out


def forget_other_plans(logs: Path, labels: list[str]) -> None:
    """Remove the recorded plans of stages this config no longer has (a feature group that
    changed its members, a generator removed), so `aigi status` shows the run as configured.
    Their outputs stay on disk."""
    keep = {plan_path(logs, label) for label in labels}
    for p in (logs / "plans").glob("*.json"):
        if p not in keep:
            p.unlink()


def stage_status(logs: Path) -> list[dict[str, Any]]:
    """Per planned stage: units done / total, from the recorded plans and the files on disk. A
    unit is done when its outputs exist and carry the producer its plan recorded (a file left by
    another config does not count); `failed_items` are items that failed and await their retry."""
    rows = []
    for p in sorted((logs / "plans").glob("*.json")):
        plan = json.loads(p.read_text(encoding="utf-8"))
        done, stale, failed, retried = [], 0, 0, 0
        for u in plan["units"]:
            out = logs.parent / u["output"]
            if not all((logs.parent / o).exists() for o in [u["output"], *u.get("also", [])]):
                continue
            meta = _meta(out)
            if meta is None or ("producer" in u and meta["producer"] is not None and meta["producer"] != u["producer"]):
                stale += 1
                continue
            done.append(u)
            failed += len(meta["extra"].get("failed") or [])
            retried += u["items"] if "/retry-" in u["key"] else 0
        rows.append(
            {
                "order": plan["order"],
                "stage": plan["stage"],
                "done": len(done),
                "total": len(plan["units"]),
                "items_done": sum(u["items"] for u in done) - failed,
                "items_total": sum(u["items"] for u in plan["units"] if "/retry-" not in u["key"]),
                "item_name": plan["item_name"],
                "failed_items": max(failed - retried, 0),
                "stale": stale,
            }
        )
    return sorted(rows, key=lambda r: (r["order"], r["stage"]))


def _meta(path: Path) -> dict[str, Any] | None:
    from aigi.manifests.shards import ManifestError, shard_meta

    if path.suffix != ".parquet":
        return {"producer": None, "extra": {}}
    try:
        return shard_meta(path)
    except (ManifestError, OSError):
        return None
