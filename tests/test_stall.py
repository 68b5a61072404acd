"""A GPU stage whose only GPU worker dies stops with `StageStalled` after `stall_timeout` instead
of waiting forever with its units in "no-worker"; finished units are kept and a re-run resumes.
A long unit on a live worker that can run it is not a stall."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from aigi.manifests.rundir import RunDir
from aigi.manifests.schema import PROMPTS
from aigi.manifests.shards import write_shard
from aigi.pipeline.cluster import DaskExecutor, StageStalled
from aigi.pipeline.runner import run_stages
from aigi.pipeline.stage import RunContext, Stage, Unit

CALLS: list[str] = []


class SleepyGpuStage(Stage):
    name = "toy-gpu"
    item_name = "rows"
    gpu = True

    def __init__(self, ctx: RunContext, n: int, seconds: float) -> None:
        super().__init__(ctx)
        self.n, self.seconds = n, seconds

    def plan(self) -> list[Unit]:
        return [
            Unit(self.label, f"u{i}", str(self.ctx.run.root / "toy" / f"u{i}.parquet"), f"v1-{i}", 1, i)
            for i in range(self.n)
        ]

    def setup_key(self) -> str:
        return "toy-gpu"

    def setup(self, device: str) -> Any:
        return None

    def process(self, unit: Unit, state: Any) -> dict[str, Any]:
        time.sleep(self.seconds)
        rows = [{"prompt_id": unit.key, "prompt": "x", "class_id": None, "class_name": None, "source": "t"}]
        write_shard(pa.Table.from_pylist(rows, schema=PROMPTS.arrow), unit.output, PROMPTS, unit.producer)
        CALLS.append(unit.key)
        return {"items": 1}


def two_workers() -> Any:
    """A scheduler and two in-process workers on loopback (threads: they start in well under a
    second): `gpu` offers GPU=1, `cpu` offers nothing."""
    from distributed import Scheduler, SpecCluster, Worker

    common = {"nthreads": 1, "host": "127.0.0.1", "dashboard": False}
    return SpecCluster(
        scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "protocol": "tcp://",
                                             "dashboard": False, "dashboard_address": "127.0.0.1:0"}},
        workers={"gpu": {"cls": Worker, "options": {**common, "resources": {"GPU": 1}}},
                 "cpu": {"cls": Worker, "options": common}},
    )


@pytest.fixture
def gpu_cluster() -> Iterator[Any]:
    from distributed import Client

    from aigi.pipeline import worker_state

    worker_state.clear()
    CALLS.clear()
    with two_workers() as cluster, Client(cluster) as client:
        yield cluster, client


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """`fn()`, or a test failure after `seconds`: without stall detection the run never returns."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test thread
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"still running after {seconds} s: the stage hangs instead of stalling")
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_a_gpu_stage_whose_gpu_worker_died_stops_and_keeps_finished_units(gpu_cluster, tmp_path: Path) -> None:
    cluster, client = gpu_cluster
    ctx = RunContext(config=None, run=RunDir(tmp_path / "run").make())
    stage = SleepyGpuStage(ctx, n=4, seconds=0.3)
    executor = DaskExecutor(client, stall_timeout=2)

    def kill_the_worker_after_the_first_unit() -> None:
        deadline = time.monotonic() + 20
        while not (ctx.run.logs / "costs.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        cluster.sync(cluster.workers["gpu"].close)
        killed_at.append(time.monotonic())

    killed_at: list[float] = []
    killer = threading.Thread(target=kill_the_worker_after_the_first_unit, daemon=True)
    killer.start()
    with pytest.raises(StageStalled) as err:
        within(30, lambda: run_stages([stage], executor, ctx.run.logs, io.StringIO()))
    stopped_after = time.monotonic() - killed_at[0]
    killer.join(5)
    msg = str(err.value)
    # the CPU worker is alive, but cannot run a GPU stage
    assert "toy-gpu" in msg and "no worker offers the GPU resource: the GPU worker died" in msg, msg
    assert "no worker at all" not in msg, msg
    assert "finished units are kept" in msg and "re-run" in msg, msg
    assert stopped_after < 8, stopped_after  # stall_timeout and a few polls

    # the finished units' summaries reached the runner before the raise, and their outputs stay
    reported = (ctx.run.logs / "costs.jsonl").read_text().splitlines()
    done = sorted(p.name for p in (ctx.run.root / "toy").glob("u*.parquet"))
    assert 1 <= len(reported) <= len(done) < 4
    assert f"{4 - len(reported)} of 4 units cannot be scheduled" in msg, msg

    # A fresh GPU worker: the re-run does only what is missing.
    from distributed import Client

    first = list(CALLS)
    with two_workers() as cluster2, Client(cluster2) as client2:
        within(20, lambda: run_stages([SleepyGpuStage(ctx, n=4, seconds=0.01)], DaskExecutor(client2, 2),
                                      ctx.run.logs, io.StringIO()))
    assert sorted(CALLS[len(first):]) == sorted(set(f"u{i}" for i in range(4)) - set(first))
    assert len(list((ctx.run.root / "toy").glob("u*.parquet"))) == 4


def test_a_long_unit_on_a_live_gpu_worker_is_not_a_stall(gpu_cluster, tmp_path: Path) -> None:
    _, client = gpu_cluster
    ctx = RunContext(config=None, run=RunDir(tmp_path / "run").make())
    res = within(20, lambda: run_stages([SleepyGpuStage(ctx, n=1, seconds=2.5)], DaskExecutor(client, stall_timeout=0.5),
                                        ctx.run.logs, io.StringIO()))
    assert res[0].ran == 1 and CALLS == ["u0"]
