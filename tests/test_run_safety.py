"""A run refused (stale output, a directory aigi did not make, another run holding it) writes
nothing first; one run per directory; a killed writer's partial files are cleaned."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from small_run import png

from aigi.manifests.rundir import MARKER, NotARunDir, RunDir
from aigi.pipeline.config import parse_config
from aigi.pipeline.lock import LOCK_NAME, RunLocked, run_lock
from aigi.pipeline.run import run


def _config(base: Path, seed: int = 1, out: Path | None = None):
    folder = base / "photos" / "cat"
    if not folder.exists():
        folder.mkdir(parents=True)
        for i in range(6):
            (folder / f"{i}.png").write_bytes(png(i))
    return parse_config({
        "run": {"out": str(out or base / "run"), "seed": seed},
        "real": {"path": str(base / "photos"), "class_from_folder": True, "unit_size": 3},
    }, file=str(base / f"config-{seed}.toml"))


def _records(root: Path) -> dict[str, bytes]:
    files = [root / "config.toml", root / "run.json", *sorted((root / "logs" / "plans").glob("*.json"))]
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    run(_config(tmp_path), config_text="# seed 1\n", serial=True, stream=io.StringIO())
    return tmp_path


def test_a_refused_run_rewrites_no_record(finished: Path) -> None:
    from aigi.manifests.schema import IMAGES
    from aigi.manifests.shards import read_shard, write_shard
    from aigi.pipeline.stage import StaleOutput

    root = finished / "run"
    # an output made by something else: the next run must refuse, not overwrite
    shard = sorted((root / "images").rglob("shard-*.parquet"))[0]
    write_shard(read_shard(shard, IMAGES), shard, IMAGES, "someone-else")
    before = _records(root)
    with pytest.raises(StaleOutput):
        run(_config(finished, seed=2), config_text="# seed 2\n", serial=True, stream=io.StringIO())
    assert _records(root) == before  # config.toml, run.json and every plan as they were


def test_out_that_aigi_did_not_make_is_refused_untouched(tmp_path: Path) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(NotARunDir, match="thesis.tex"):
        run(_config(tmp_path, out=out), config_text="x", serial=True, stream=io.StringIO())
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
    run(_config(tmp_path, out=out), config_text="x", serial=True, stream=io.StringIO(), allow_existing=True)
    assert (out / "run.json").exists() and (out / MARKER).exists()
    assert (out / "thesis.tex").read_text() == "years of work"
    # once adopted it is aigi's: a re-run needs no flag
    run(_config(tmp_path, out=out), config_text="x", serial=True, stream=io.StringIO())


def test_a_second_run_on_a_held_directory_is_refused_naming_the_holder(finished: Path) -> None:
    import os
    import socket

    root = finished / "run"
    before = _records(root)
    with run_lock(root, io.StringIO()):
        with pytest.raises(RunLocked) as e:
            run(_config(finished, seed=2), config_text="# seed 2\n", serial=True, stream=io.StringIO())
        assert f"pid {os.getpid()}" in str(e.value) and socket.gethostname() in str(e.value)
    assert _records(root) == before
    assert not (root / LOCK_NAME).exists()  # released


def test_a_stale_lock_of_a_dead_process_is_taken_over(finished: Path) -> None:
    import json
    import socket

    root = finished / "run"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (root / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                              "started": "2026-01-01T00:00:00+00:00"}))
    out = io.StringIO()
    run(_config(finished), config_text="# seed 1\n", serial=True, stream=out)
    assert "taking over a stale lock" in out.getvalue() and not (root / LOCK_NAME).exists()


def test_racing_runs_get_one_lock(tmp_path: Path) -> None:
    barrier = threading.Barrier(6, timeout=10)
    got, refused = [], []
    hold = threading.Event()

    def take() -> None:
        barrier.wait()
        try:
            with run_lock(tmp_path, io.StringIO()):
                got.append(1)
                hold.wait(5)
        except RunLocked:
            refused.append(1)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for _ in range(100):
        if len(got) + len(refused) == 6 or (got and len(refused) == 5):
            break
        threading.Event().wait(0.05)
    hold.set()
    for t in threads:
        t.join(10)
    assert (len(got), len(refused)) == (1, 5)


def test_partial_files_of_a_killed_writer_are_cleaned_when_the_unit_reruns(finished: Path) -> None:
    from aigi.core.atomic import temp_path
    from aigi.pipeline.events import read_events

    root = finished / "run"
    shard = sorted((root / "images").rglob("shard-*.parquet"))[0]
    shard.unlink()  # the unit is redone ...
    partial = temp_path(shard)  # ... and a SIGKILLed writer left this
    partial.write_bytes(b"PAR1half")
    audit_partial = temp_path(root / "curation" / "bias_audit.md")  # killed as it wrote the report,
    audit_partial.write_text("half")
    (root / "curation" / "bias_audit.parquet").unlink()  # so the audit's marker was never written
    run(_config(finished), config_text="# seed 1\n", serial=True, stream=io.StringIO())
    assert shard.exists() and not partial.exists()
    assert not [p for p in root.rglob("*.tmp")], "a partial file survived the re-run"
    starts = [e for e in read_events(root / "logs") if e["event"] == "stage_start" and e["partials_removed"]]
    assert str(partial) in starts[0]["partials_removed"]


def test_demo_refuses_to_delete_a_folder_it_did_not_make(tmp_path: Path) -> None:
    from aigi.pipeline.demo import prepare

    out = tmp_path / "demo"
    user = out / "models" / "tiny-sd-a"
    user.mkdir(parents=True)
    (user / "mine.txt").write_text("keep me")
    with pytest.raises(NotARunDir):
        prepare(out)  # not an aigi directory at all
    RunDir(out).claim(allow_existing=True)  # adopted: the folder inside is still not the demo's
    with pytest.raises(NotARunDir, match="tiny-sd-a"):
        prepare(out)
    assert (user / "mine.txt").read_text() == "keep me"


def test_a_full_disk_fails_the_unit_leaves_no_partial_and_the_rerun_completes(
        finished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import pyarrow.parquet as pq

    from aigi.pipeline.runner import StageFailed

    root = finished / "run"
    victim = sorted((root / "images").rglob("shard-*.parquet"))[0]
    victim.unlink()
    real_write = pq.write_table

    def full_disk(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")  # some bytes made it before the disk filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(StageFailed, match="No space left on device"):
        run(_config(finished), config_text="# seed 1\n", serial=True, stream=io.StringIO())
    assert not victim.exists() and not [p for p in root.rglob("*.tmp")]
    monkeypatch.setattr(pq, "write_table", real_write)
    run(_config(finished), config_text="# seed 1\n", serial=True, stream=io.StringIO())
    assert victim.exists()
    from aigi.manifests.verify import verify_run

    assert verify_run(root) == []


def test_workers_of_different_environments_are_recorded_and_warned_about() -> None:
    from aigi.pipeline.runinfo import environment, environment_warnings, worker_environments

    here = environment()
    other = {**here, "versions": {**here["versions"], "torch": "0.0.1"}}

    class Client:  # what distributed's Client.run returns: worker address -> result
        def run(self, fn):
            assert fn is environment
            return {"tcp://a": here, "tcp://b": here, "tcp://c": other}

    envs = worker_environments(Client())
    assert [e["workers"] for e in envs] == [2, 1] and envs[1]["versions"]["torch"] == "0.0.1"
    assert environment_warnings(envs) == ["the workers run 2 different sets of library versions"]
    assert environment_warnings(envs[:1]) == []
