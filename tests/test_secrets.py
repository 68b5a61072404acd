"""Hub tokens in the environment never reach a run's files: a run (and one with a failing unit,
whose error and traceback are logged) with `HF_TOKEN` and `HUGGING_FACE_HUB_TOKEN` set leaves
neither anywhere under the run directory, nor in what it prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from small_run import small_run

TOKENS = ("hf_plantedHFTOKENxq8Zr2Lk5Vn0Wm3Yb7", "hf_plantedHUBTOKENp4Ds9Gh1Jc6Tf2Rw8")


def as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        return b"\0".join(as_bytes(k) + b"\0" + as_bytes(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return b"\0".join(as_bytes(v) for v in value)
    return repr(value).encode("utf-8")


def leaks(root: Path, secrets: tuple[str, ...] = TOKENS) -> list[str]:
    """Files under `root` holding a secret: in their bytes, or, for Parquet (a compressed column
    can hide text from a byte search), in any decoded value or metadata."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        blobs = [path.read_bytes()]
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            blobs.append(as_bytes(table.to_pylist()))
            blobs.append(as_bytes(table.schema.metadata or {}))
            blobs.append(as_bytes(pq.read_metadata(path).metadata or {}))
        found += [f"{path.relative_to(root)}: {s[:10]}..." for s in secrets if any(s.encode() in b for b in blobs)]
    return found


def test_the_leak_search_sees_compressed_parquet_and_plain_files(tmp_path: Path) -> None:
    table = pa.table({"prompt": [f"a photo with {TOKENS[0]}"] * 50})
    pq.write_table(table, tmp_path / "x.parquet", compression="gzip", write_statistics=False)
    assert TOKENS[0].encode() not in (tmp_path / "x.parquet").read_bytes()  # hidden from a byte search
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "events.jsonl").write_text(f'{{"env": "{TOKENS[1]}"}}\n')
    assert leaks(tmp_path) == [f"logs/events.jsonl: {TOKENS[1][:10]}...", f"x.parquet: {TOKENS[0][:10]}..."]


def test_hub_tokens_reach_no_file_of_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    import aigi.pipeline.cluster as cluster
    from aigi.pipeline.runner import StageFailed

    monkeypatch.setenv("HF_TOKEN", TOKENS[0])
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", TOKENS[1])
    ok = small_run(tmp_path / "ok", photos=4, images_per_prompt=2)
    assert (ok / "run.json").is_file() and (ok / "logs" / "events.jsonl").is_file()

    run_unit = cluster.execute_unit

    def failing_measure(stage: Any, unit: Any) -> dict[str, Any]:
        if stage.label == "measure":
            raise RuntimeError(f"planted failure in {unit.key}")
        return run_unit(stage, unit)

    monkeypatch.setattr(cluster, "execute_unit", failing_measure)
    with pytest.raises(StageFailed):
        small_run(tmp_path / "failed", photos=4, images_per_prompt=2)
    failed = tmp_path / "failed" / "run"
    assert "planted failure" in (failed / "logs" / "events.jsonl").read_text()  # the traceback is logged

    assert leaks(ok) == [] and leaks(failed) == []
    out, err = capfd.readouterr()
    assert not any(s in out or s in err for s in TOKENS)
