"""Dask: the embedded LocalCluster or an existing cluster, and the executor that maps units on it.

This and nothing else in aigi imports Dask (design.md §4).
"""

from __future__ import annotations

import contextlib
import logging
import os
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


@contextlib.contextmanager
def open_client(dask_cfg: Any, address: str | None = None, quiet: bool = True) -> Iterator[Any]:
    """A `distributed.Client`: attached to `address` (or `[dask] address`), else an embedded
    LocalCluster on loopback with one worker per GPU (each with a `GPU` resource), or one
    CPU worker on a machine without GPUs."""
    from distributed import Client, LocalCluster

    if quiet:
        for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker"):
            logging.getLogger(name).setLevel(logging.ERROR)
    address = address or dask_cfg.address
    if address:
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
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def dashboard_link(client: Any) -> str | None:
    try:
        return client.dashboard_link
    except Exception:  # no dashboard (bokeh missing, or disabled): nothing to show
        return None


class DaskExecutor:
    """Maps a stage's units onto the cluster; yields summaries as units finish."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._has_gpu = self._cluster_has_gpu()

    def _cluster_has_gpu(self) -> bool:
        info = self.client.scheduler_info()
        return any(w.get("resources", {}).get("GPU") for w in info.get("workers", {}).values())

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
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as e:  # the unit failed; the others go on
                yield UnitFailed(by_key[fut.key], e)
            finally:
                fut.release()


class SerialExecutor:
    """Runs units in this process, one after another (tests, debugging, `--serial`)."""

    def map(self, stage: Stage, units: list[Unit]) -> Iterator[dict[str, Any] | UnitFailed]:
        for u in units:
            try:
                yield execute_unit(stage, u)
            except Exception as e:
                yield UnitFailed(u, e)
