"""An external Dask cluster for tests: a `dask scheduler` and `dask worker` processes on loopback.
Imported as `from cluster_util import Cluster` (tests/ is on sys.path)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):  # workers first, the scheduler last
        if p.poll() is None:
            p.terminate()
    for p in reversed(procs):
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


class Cluster:
    """`workers` maps a worker name to its extra `dask worker` arguments (e.g. resources). Every
    process is bound to 127.0.0.1, single-threaded, without a dashboard; logs go to `base`."""

    def __init__(self, base: Path, workers: dict[str, list[str]], env: dict[str, str] | None = None) -> None:
        self.base, self.worker_args = base, workers
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                    "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self.procs: list[subprocess.Popen] = []
        self._logs: list[Any] = []
        self.address = ""

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        p = subprocess.Popen([sys.executable, "-m", *args], env=self.env, cwd=self.base, stdout=log, stderr=log)
        self.procs.append(p)
        return p

    def start(self, timeout: float = 90) -> Cluster:
        from distributed import Client

        self.base.mkdir(parents=True, exist_ok=True)
        sched_file = self.base / "scheduler.json"
        sched_file.unlink(missing_ok=True)
        self.scheduler = self._spawn("scheduler", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                     "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file))
        deadline = time.monotonic() + timeout
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert self.scheduler.poll() is None, (self.base / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "scheduler did not start"
            time.sleep(0.1)
        self.address = json.loads(sched_file.read_text())["address"]
        common = ["--scheduler-file", str(sched_file), "--host", "127.0.0.1", "--nthreads", "1",
                  "--nworkers", "1", "--no-dashboard"]
        for name, extra in self.worker_args.items():
            self._spawn(f"worker-{name}", "distributed.cli.dask_worker", *common, "--name", name, *extra)
        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(len(self.worker_args), timeout=timeout)
        return self

    def workers(self) -> dict[str, str]:
        """Worker name -> address."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            return {w["name"]: a for a, w in client.scheduler_info()["workers"].items()}

    def kill_worker_running(self, prefix: str) -> str | None:
        """SIGKILL the worker process (not its nanny) that is running a task whose key starts with
        `prefix`; return its address, or None when no such task is running now."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            for addr, keys in client.processing().items():
                if any(str(k).startswith(prefix) for k in keys):
                    pid = client.run(os.getpid, workers=[addr])[addr]
                    os.kill(pid, signal.SIGKILL)
                    return addr
        return None

    def stop(self) -> None:
        stop(self.procs)
        for log in self._logs:
            log.close()
