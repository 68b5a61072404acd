"""Atomic writes: two writers of one file never tear it; a killed writer's leftovers are cleaned."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from aigi.core import atomic


def test_two_concurrent_writers_of_one_file_each_land_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both writers reach their rename together: with a shared temporary name the second rename
    # would find its file gone (or the first would publish the second's half-written bytes).
    barrier = threading.Barrier(2, timeout=10)
    real_replace = os.replace

    def replace(src, dst):
        barrier.wait()
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    target = tmp_path / "metrics.csv"
    texts = ["a," * 50_000, "b," * 70_000]
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            atomic.write_text(target, text)
        except BaseException as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    assert target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_clean_partials_removes_only_temporaries(tmp_path: Path) -> None:
    keep = [tmp_path / "shard-00000-abc.parquet", tmp_path / ".hidden", tmp_path / "notes.tmp"]
    for p in keep:
        p.write_text("x")
    partial = atomic.temp_path(tmp_path / "shard-00001-def.parquet")
    partial.write_text("half")
    legacy = tmp_path / ".shard-00002-0a1b2c3d.parquet.0a1b2c3d.tmp"  # the shard writer's name
    legacy.write_text("half")
    gone = atomic.clean_partials(tmp_path)
    assert sorted(gone) == sorted([partial, legacy])
    assert all(p.exists() for p in keep) and not partial.exists() and not legacy.exists()
