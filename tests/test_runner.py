"""The stage contract: a re-run skips finished units, redoes missing ones, refuses stale ones."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from aigi.manifests.rundir import RunDir
from aigi.manifests.schema import PROMPTS
from aigi.manifests.shards import write_shard
from aigi.pipeline.cluster import SerialExecutor
from aigi.pipeline.runner import StageFailed, run_stages, stage_status
from aigi.pipeline.stage import RunContext, Stage, StaleOutput, Unit

CALLS: list[str] = []
SETUPS: list[str] = []


class ToyStage(Stage):
    name = "toy"
    item_name = "rows"

    def __init__(self, ctx: RunContext, n: int = 4, version: str = "v1", fail: frozenset = frozenset()) -> None:
        super().__init__(ctx)
        self.n, self.version, self.fail = n, version, fail

    def plan(self) -> list[Unit]:
        return [
            Unit(self.label, f"u{i}", str(self.ctx.run.root / "toy" / f"u{i}.parquet"), f"{self.version}-{i}", 2, i)
            for i in range(self.n)
        ]

    def setup_key(self) -> str:
        return f"toy-{self.version}"

    def setup(self, device: str) -> Any:
        SETUPS.append(device)
        return {"model": "loaded"}

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        assert state == {"model": "loaded"}
        if unit.payload in self.fail:
            raise RuntimeError(f"boom {unit.payload}")
        CALLS.append(unit.key)
        rows = [{"prompt_id": f"{unit.key}-{j}", "prompt": "x", "class_id": None, "class_name": None, "source": "t"} for j in range(2)]
        write_shard(pa.Table.from_pylist(rows, schema=PROMPTS.arrow), unit.output, PROMPTS, unit.producer)
        return {"items": 2}


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    from aigi.pipeline import worker_state

    worker_state.clear()
    CALLS.clear()
    SETUPS.clear()
    return RunContext(config=None, run=RunDir(tmp_path / "run").make())


def run(ctx: RunContext, stage: Stage) -> Any:
    return run_stages([stage], SerialExecutor(), ctx.run.logs, io.StringIO())


def test_rerun_skips_finished_and_redoes_missing(ctx: RunContext) -> None:
    res = run(ctx, ToyStage(ctx))
    assert sorted(CALLS) == ["u0", "u1", "u2", "u3"] and res[0].ran == 4 and res[0].items == 8
    assert SETUPS == ["cpu"]  # set up once, not once per unit
    mtimes = {p: p.stat().st_mtime_ns for p in ctx.run.root.rglob("*") if p.is_file()}

    CALLS.clear()
    res = run(ctx, ToyStage(ctx))
    assert CALLS == [] and res[0].skipped == 4
    assert {p: p.stat().st_mtime_ns for p in ctx.run.root.rglob("*") if p.is_file()} == mtimes

    (ctx.run.root / "toy" / "u2.parquet").unlink()
    CALLS.clear()
    res = run(ctx, ToyStage(ctx))
    assert CALLS == ["u2"] and res[0].skipped == 3


def test_changed_producer_is_refused_not_overwritten(ctx: RunContext) -> None:
    run(ctx, ToyStage(ctx))
    with pytest.raises(StaleOutput, match="different config"):
        run(ctx, ToyStage(ctx, version="v2"))


def test_failed_unit_does_not_stop_siblings(ctx: RunContext) -> None:
    with pytest.raises(StageFailed, match=r"1 of 4 units failed.*u1"):
        run(ctx, ToyStage(ctx, fail=frozenset({1})))
    assert sorted(CALLS) == ["u0", "u2", "u3"]
    status = stage_status(ctx.run.logs)
    assert status[0]["done"] == 3 and status[0]["total"] == 4
    CALLS.clear()
    run(ctx, ToyStage(ctx))
    assert CALLS == ["u1"]
    assert stage_status(ctx.run.logs)[0]["done"] == 4


def test_dask_executor_matches_serial(ctx: RunContext) -> None:
    """The same stage on a real LocalCluster (processes, loopback): same outputs, skip on re-run."""
    from aigi.pipeline.cluster import DaskExecutor, open_client
    from aigi.pipeline.config import DaskSection

    with open_client(DaskSection(n_workers=1, threads_per_worker=2)) as client:
        res = run_stages([ToyStage(ctx)], DaskExecutor(client), ctx.run.logs, io.StringIO())
        assert res[0].ran == 4 and res[0].items == 8
        assert sorted(p.name for p in (ctx.run.root / "toy").iterdir()) == [f"u{i}.parquet" for i in range(4)]
        res = run_stages([ToyStage(ctx)], DaskExecutor(client), ctx.run.logs, io.StringIO())
        assert res[0].skipped == 4
        with pytest.raises(StageFailed):
            (ctx.run.root / "toy" / "u0.parquet").unlink()
            run_stages([ToyStage(ctx, fail=frozenset({0}))], DaskExecutor(client), ctx.run.logs, io.StringIO())


def test_events_log_records_each_unit_and_the_failure_with_its_traceback(ctx: RunContext) -> None:
    from aigi.pipeline.events import read_events
    from aigi.pipeline.runner import stage_costs

    with pytest.raises(StageFailed):
        run(ctx, ToyStage(ctx, fail=frozenset({2})))
    events = read_events(ctx.run.logs)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "stage_start" and kinds[-1] == "stage_failed"
    done = [e for e in events if e["event"] == "unit_done"]
    assert sorted(e["unit"] for e in done) == ["u0", "u1", "u3"] and all(e["items"] == 2 for e in done)
    (failed,) = [e for e in events if e["event"] == "unit_failed"]
    assert failed["unit"] == "u2" and "boom 2" in failed["error"] and "Traceback" in failed["traceback"]
    assert all(e["stage"] == "toy" and e["time"].endswith("+00:00") for e in events)
    # the finished units' costs are kept although the stage failed
    assert stage_costs(ctx.run.logs)["toy"]["units_run"] == 3

    run(ctx, ToyStage(ctx))  # redoes u2 only
    later = read_events(ctx.run.logs)[len(events):]
    assert [e["event"] for e in later] == ["stage_start", "unit_done", "stage_done"]
    assert later[1]["unit"] == "u2" and later[2]["ran"] == 1
    before = (ctx.run.logs / "events.jsonl").read_bytes()
    run(ctx, ToyStage(ctx))  # nothing to do: nothing written
    assert (ctx.run.logs / "events.jsonl").read_bytes() == before
