"""Kills lose nothing: the whole `aigi run` SIGKILLed mid-unit, a worker SIGKILLed mid-generation
and mid-features on an external cluster of two workers, and the scheduler SIGKILLed. After each,
the run resumes to exactly the rows of an undisturbed run, `aigi verify` passes and no partial
file is left. Units are slowed (tests/killhelp/sitecustomize.py) so the kills land inside them."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cluster_util import Cluster
from small_run import photo_folder

from aigi.manifests.verify import verify_run

HERE = Path(__file__).resolve().parent
SLOW = {"PYTHONPATH": f"{HERE / 'killhelp'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "AIGI_TEST_SLOW": "1.0", "AIGI_TEST_SLOW_STAGES": "generate/,features/"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """8 photos, a tiny SD making 16 images in 4 units, tiny CLIP features; and the rows of an
    undisturbed serial run."""
    from aigi.core.configtools import to_dict
    from aigi.features.registry import get
    from aigi.generators.tiny import tiny_stable_diffusion
    from aigi.pipeline.config import load_config
    from aigi.pipeline.run import run

    base = tmp_path_factory.mktemp("kill")
    photo_folder(base, 8)
    model = tiny_stable_diffusion(base / "sd", seed=4)
    clip = to_dict(get("clip_rn50").tiny(base / "clip"))
    toml = "\n".join([
        "[run]", "seed = 1", "",
        "[prompts]", 'source = "classes"', 'classes = ["cat", "dog"]', 'templates = ["a photo of a {class}"]', "",
        "[real]", f"path = {json.dumps(str(base / 'photos'))}", "class_from_folder = true", "unit_size = 4", "",
        "[[generators]]", 'name = "sd"', 'family = "stable_diffusion"', f"model = {json.dumps(str(model))}",
        "steps = 2", "size = [32, 32]", "images_per_prompt = 8", "batch_size = 4", "unit_size = 4", "",
        "[features.clip_rn50]", *(f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in clip.items()),
        "",
    ])
    config = base / "config.toml"
    config.write_text(toml)
    # this process's torch threads stay as they are: every unit pins its own ([run] torch_threads)
    run(load_config(config, out=str(base / "reference")), serial=True, stream=io.StringIO())
    return {"base": base, "config": config, "reference": rows(base / "reference")}


def rows(run_dir: Path) -> dict[str, list]:
    """Every image row (id, sha256) and every feature row (id, values), sorted."""
    def table(folder: Path, columns: list[str] | None = None) -> list:
        files = sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))
        return sorted(tuple(map(repr, r.values())) for f in files for r in pq.read_table(f, columns=columns).to_pylist())

    return {"images": table(run_dir / "images", ["image_id", "sha256", "source"]),
            "features": table(run_dir / "features")}


def events(run_dir: Path) -> list[dict]:
    from aigi.pipeline.events import read_events

    return read_events(run_dir / "logs")


def wait_for(cond, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"aigi exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def aigi(config: Path, out: Path, *args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **SLOW}
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "aigi.pipeline.cli", "run", str(config), "--out", str(out),
                                 *args], env=env, stdout=f, stderr=subprocess.STDOUT)


def done_units(run_dir: Path, stage: str) -> int:
    return sum(1 for e in events(run_dir) if e["event"] == "unit_done" and e["stage"].startswith(stage))


def resume_and_check(inputs: dict, out: Path, **kw) -> str:
    from aigi.pipeline.config import load_config
    from aigi.pipeline.run import run

    console = io.StringIO()
    run(load_config(inputs["config"], out=str(out)), stream=console, **kw)
    assert rows(out) == inputs["reference"]  # nothing missing, nothing twice, the same bytes
    assert verify_run(out) == []
    assert not [p for p in out.rglob("*.tmp")]
    return console.getvalue()


def test_the_whole_run_killed_mid_unit_resumes_exactly(inputs: dict, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = aigi(inputs["config"], out, "--serial", log=tmp_path / "aigi.log")
    try:
        wait_for(lambda: done_units(out, "generate/") >= 1, proc, 120, "a generation unit")
        time.sleep(0.5)  # inside the next unit's sleep
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    assert (out / ".aigi.lock").exists()  # it died holding the run
    assert 1 <= done_units(out, "generate/") < 4
    printed = resume_and_check(inputs, out, serial=True)
    assert "taking over a stale lock" in printed


def test_workers_killed_mid_generation_and_mid_features_lose_nothing(inputs: dict, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", {"a": ["--resources", "GPU=1"], "b": ["--resources", "GPU=1"]},
                      env=SLOW).start()
    out = tmp_path / "run"
    proc = aigi(inputs["config"], out, "--scheduler", cluster.address, log=tmp_path / "aigi.log")
    try:
        killed = []
        for stage in ("generate/", "features/"):
            wait_for(lambda s=stage: any(e["event"] == "stage_start" and e["stage"].startswith(s)
                                         for e in events(out)), proc, 120, f"stage {stage}")
            deadline = time.monotonic() + 60
            while not (addr := cluster.kill_worker_running(stage)):
                assert time.monotonic() < deadline and proc.poll() is None, f"no {stage} task ran"
                time.sleep(0.2)
            killed.append(addr)
        assert proc.wait(180) == 0, (tmp_path / "aigi.log").read_text()[-3000:]
        assert len(killed) == 2
        # run.json lists the workers' environments: one, shared by both workers
        [env] = json.loads((out / "run.json").read_text())["workers"]
        assert env["workers"] == 2 and env["versions"]["torch"]
        # the run finished by itself; nothing is lost and a resume finds nothing to do
        assert rows(out) == inputs["reference"] and verify_run(out) == []
    finally:
        proc.kill()
        cluster.stop()


def test_a_killed_scheduler_stops_the_run_and_a_new_cluster_resumes_it(inputs: dict, tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", {"a": ["--resources", "GPU=1"]}, env=SLOW).start()
    out = tmp_path / "run"
    proc = aigi(inputs["config"], out, "--scheduler", cluster.address, log=tmp_path / "aigi.log")
    try:
        wait_for(lambda: done_units(out, "generate/") >= 1, proc, 120, "a generation unit")
        cluster.scheduler.send_signal(signal.SIGKILL)
        rc = proc.wait(120)  # stops: it does not wait forever for a scheduler that is gone
        assert rc != 0
    finally:
        proc.kill()
        cluster.stop()
    assert "lost the connection to the Dask scheduler" in (tmp_path / "aigi.log").read_text()
    fresh = Cluster(tmp_path / "cluster2", {"a": ["--resources", "GPU=1"]}).start()
    try:
        resume_and_check(inputs, out, scheduler=fresh.address)
    finally:
        fresh.stop()
