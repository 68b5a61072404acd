"""`aigi run --scheduler ADDRESS` on an external Dask cluster (a `dask scheduler` and two
`dask worker` processes on loopback, one of them advertising a `GPU` resource) writes the same
images as the same config run serially in this process."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cluster_util import Cluster
from small_run import photo_folder


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[dict]:
    """A scheduler and two single-threaded workers, all separate processes bound to 127.0.0.1;
    the worker named `gpu` advertises GPU=1 (no GPU is needed: it only exercises the resource
    path). Yields the scheduler address and the workers' addresses by name."""
    c = Cluster(tmp_path_factory.mktemp("cluster"), {"gpu": ["--resources", "GPU=1"], "cpu": []})
    try:
        c.start()
        workers = c.workers()
        assert c.address.startswith("tcp://127.0.0.1:") and set(workers) == {"gpu", "cpu"}
        yield {"address": c.address, "workers": workers}
    finally:
        c.stop()


@pytest.fixture(scope="module")
def config_for(tmp_path_factory):
    """8 tiny photos as [real] and one tiny SD generator making 8 images; no features."""
    from aigi.generators.tiny import tiny_stable_diffusion
    from aigi.pipeline.config import parse_config

    base = tmp_path_factory.mktemp("inputs")
    photo_folder(base, 8)
    model = tiny_stable_diffusion(base / "sd", seed=4)

    def make(out: Path):
        return parse_config({
            "run": {"out": str(out), "seed": 1},
            "prompts": {"source": "classes", "classes": ["cat", "dog"], "templates": ["a photo of a {class}"]},
            "real": {"path": str(base / "photos"), "class_from_folder": True, "unit_size": 4},
            "generators": [{"name": "sd", "family": "stable_diffusion", "model": str(model), "steps": 2,
                            "size": [32, 32], "images_per_prompt": 4, "batch_size": 2}],
        })

    return make


def image_rows(run_dir: Path) -> list[tuple[str, str, str]]:
    shards = sorted(p for p in (run_dir / "images").glob("**/*.parquet") if not p.name.startswith("."))
    rows = pq.read_table(shards, columns=["image_id", "sha256", "source"]).to_pylist()
    return sorted((r["image_id"], r["sha256"], r["source"]) for r in rows)


@pytest.mark.slow  # ~40 s: each fresh worker process imports torch/diffusers once
def test_run_on_an_external_cluster_matches_the_serial_run(cluster, config_for, tmp_path):
    from distributed import Client, get_task_stream

    from aigi.pipeline.run import run

    out = io.StringIO()
    with Client(cluster["address"]) as watcher, get_task_stream(client=watcher) as tasks:
        report = run(config_for(tmp_path / "dask"), scheduler=cluster["address"], stream=out)
    assert f"dask: {cluster['address']}" in out.getvalue()
    assert {r.label: r.ran for r in report.results}["generate/sd"] > 0, out.getvalue()

    # every unit pins torch's threads ([run] torch_threads = 1), in a worker or in this process
    run(config_for(tmp_path / "serial"), serial=True, stream=io.StringIO())

    rows = image_rows(tmp_path / "dask")
    assert len(rows) == 16 and {s for *_, s in rows} == {"real", "sd"}
    assert rows == image_rows(tmp_path / "serial")

    # Units ran on the external workers; generation (a GPU stage) requested the GPU resource,
    # so only the worker that advertises it ran those units.
    ran = [(t["key"], t["worker"]) for t in tasks.data]
    assert ran and {w for _, w in ran} <= set(cluster["workers"].values())
    generate = [w for k, w in ran if str(k).startswith("generate/")]
    assert generate and set(generate) == {cluster["workers"]["gpu"]}

    # A second run against the same cluster finds every unit done and redoes none.
    again = run(config_for(tmp_path / "dask"), scheduler=cluster["address"], stream=io.StringIO())
    assert all(r.ran == 0 for r in again.results)
