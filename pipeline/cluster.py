"""Dask: the embedded LocalCluster or an existing cluster, and the executor that maps units on it.

This and nothing else in aigi imports Dask (design.md §4).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from aigi.core.devices import cuda_device_count
from aigi.pipeline.stage import Stage, Unit
from aigi.pipeline.worker_state import execute_unit


class UnitFailed(RuntimeError):
    def __init__(self, unit: Unit, error: BaseException) -> None:
        super().__init__(f"{unit.key}: {type(error).__name__}: {error}")
        self.unit = unit
        self.error = error


class StageStalled(RuntimeError):
    """A stage's units made no progress for `stall_timeout` seconds while no worker could run them."""


@contextlib.contextmanager
def open_client(dask_cfg: Any, address: str | None = None, quiet: bool = True) -> Iterator[Any]:
    """A `distributed.Client`: attached to `address` (or `[dask] address`), else an embedded
    LocalCluster on loopback with one worker per GPU (each with a `GPU` resource), or one
    CPU worker on a machine without GPUs.

    An existing cluster is reached with the TLS credentials of Dask's own config
    (`distributed.comm.tls.*`). The embedded one (`[dask] tls`, the default) speaks TLS with a
    key and certificate made in memory for this run: loopback alone would let any local user
    connect to the scheduler and run code as this user."""
    from distributed import Client, LocalCluster

    if quiet:
        for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker"):
            logging.getLogger(name).setLevel(logging.ERROR)
    address = address or dask_cfg.address
    if address:
        if address.startswith("tls://"):
            _check_tls_credentials(address)
        client = Client(address)
        try:
            yield client
        finally:
            client.close()
        return

    n_gpus = cuda_device_count()
    kwargs: dict[str, Any] = dict(
        host="127.0.0.1",
        dashboard_address=dask_cfg.dashboard_address or None,
        worker_dashboard_address="127.0.0.1:0",
        threads_per_worker=dask_cfg.threads_per_worker,
        processes=True,
    )
    security = None
    if dask_cfg.tls:
        from distributed.security import Security

        security = Security.temporary()
        kwargs.update(security=security, protocol="tls://")
    cluster = None
    if n_gpus:
        n = dask_cfg.n_workers or n_gpus
        try:
            from dask_cuda import LocalCUDACluster

            # dask-cuda pins each worker to its own GPU through CUDA_VISIBLE_DEVICES.
            os.environ["AIGI_DASK_CUDA"] = "1"
            kwargs.pop("processes")
            cluster = LocalCUDACluster(n_workers=n, resources={"GPU": 1}, **kwargs)
        except ImportError:
            cluster = LocalCluster(n_workers=n, resources={"GPU": 1}, **kwargs)
    else:
        cluster = LocalCluster(n_workers=dask_cfg.n_workers or 1, **kwargs)
    client = Client(cluster, security=security)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _check_tls_credentials(address: str) -> None:
    """One clear line instead of distributed's "TLS expects a `ssl_context` argument" traceback."""
    from distributed.security import Security

    from aigi.core.configtools import ConfigError

    dask_tls = Security()  # what `Client(address)` reads: Dask's config files and DASK_* variables
    if not (dask_tls.tls_ca_file and dask_tls.tls_client_cert):
        raise ConfigError(
            f"scheduler {address}: a tls:// cluster needs this client's credentials in Dask's config: "
            "distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and .client.key (a YAML file in "
            "~/.config/dask/, or DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ..._CLIENT__CERT, ..._CLIENT__KEY); "
            "see docs/scaling.md"
        )


def dashboard_link(client: Any) -> str | None:
    try:
        return client.dashboard_link
    except Exception:  # no dashboard (bokeh missing, or disabled): nothing to show
        return None


class DaskExecutor:
    """Maps a stage's units onto the cluster; yields summaries as units finish.

    A stage whose remaining units cannot be scheduled (no live worker offers the resource they
    need) and that finishes nothing for `stall_timeout` seconds raises `StageStalled`: Dask
    itself would keep them in "no-worker" and wait forever. A long unit on a live worker that can
    run it is never a stall."""

    def __init__(self, client: Any, stall_timeout: float = 300.0) -> None:
        self.client = client
        self.stall_timeout = stall_timeout
        # Fixed for the run: GPU stages keep asking for GPU workers even after the last one dies,
        # so they wait (and stall) rather than fall onto CPU workers.
        self._has_gpu = any(w.get("resources", {}).get("GPU") for w in self._workers())

    def _workers(self) -> list[dict[str, Any]]:
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except TypeError:  # distributed before 2025 lists every worker and takes no argument
            info = self.client.scheduler_info()
        # a retiring or closing worker takes no new tasks
        return [w for w in info.get("workers", {}).values() if w.get("status", "running") in ("running", "paused")]

    def _unschedulable(self, resources: dict[str, int] | None) -> str | None:
        """Why no live worker can run units asking for `resources`, or None when one can."""
        workers = self._workers()
        for name in resources or {}:
            if not any(w.get("resources", {}).get(name) for w in workers):
                alone = "" if workers else " (no worker at all is connected)"
                return f"no worker offers the {name} resource: the {name} worker died or never joined{alone}"
        if not workers:
            return "no worker is connected to the scheduler: the workers died or never joined"
        return None

    def map(self, stage: Stage, units: list[Unit]) -> Iterator[dict[str, Any] | UnitFailed]:
        from distributed import as_completed

        if not units:
            return
        resources = {"GPU": 1} if stage.gpu and self._has_gpu else None
        futures = [
            self.client.submit(execute_unit, stage, u, key=f"{stage.label}:{u.key}", pure=False, resources=resources)
            for u in units
        ]
        by_key = {f.key: u for f, u in zip(futures, units, strict=True)}
        pending = set(futures)
        done = 0
        # Results are fetched by as_completed in the background: a blocking `result()` on a unit
        # whose worker died before handing it over would wait for a recomputation that may never come.
        finished = as_completed(futures, loop=self.client.loop, with_results=True, raise_errors=False)
        # Asking the scheduler on every idle poll would be wasteful for units that run minutes.
        check_every = min(5.0, self.stall_timeout / 4)
        next_check = time.monotonic() + check_every
        stuck_since: float | None = None  # since when nothing finished and no worker could run the rest
        while pending:
            batch = finished.next_batch(block=False)
            for fut, result in batch:
                pending.discard(fut)
                try:
                    if fut.status == "error":  # the unit failed; the others go on
                        _, error, tb = result
                        yield UnitFailed(by_key[fut.key], error.with_traceback(tb))
                    elif isinstance(result, BaseException):  # cancelled behind our back
                        yield UnitFailed(by_key[fut.key], result)
                    else:
                        done += 1
                        yield result
                finally:
                    fut.release()
            if batch:
                stuck_since = None
                continue
            now = time.monotonic()
            if now >= next_check:
                next_check = now + check_every
                why = self._unschedulable(resources)
                if why is None:
                    stuck_since = None
                elif stuck_since is None:
                    stuck_since = now
                elif now - stuck_since >= self.stall_timeout:
                    self.client.cancel(list(pending))
                    raise StageStalled(
                        f"stage {stage.label}: {len(pending)} of {len(units)} units cannot be scheduled and "
                        f"none finished for {self.stall_timeout:g} s: {why}. The {done} finished units "
                        "are kept; re-run once a worker that can run them has joined, and the "
                        "run resumes where it stopped ([dask] stall_timeout sets how long to wait)."
                    )
            time.sleep(0.05)


class SerialExecutor:
    """Runs units in this process, one after another (tests, debugging, `--serial`)."""

    def map(self, stage: Stage, units: list[Unit]) -> Iterator[dict[str, Any] | UnitFailed]:
        for u in units:
            try:
                yield execute_unit(stage, u)
            except Exception as e:
                yield UnitFailed(u, e)
