"""Stage-level behaviour: prompt tables, real-image ingestion with quarantine."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from aigi.manifests.rundir import RunDir
from aigi.pipeline.cluster import SerialExecutor
from aigi.pipeline.config import PromptsSection, parse_config
from aigi.pipeline.runner import run_stages
from aigi.pipeline.stage import RunContext
from aigi.prompts.classes import imagenet_classes
from aigi.prompts.table import build_prompt_table, prompt_id


def test_class_prompts_follow_genimage_template() -> None:
    rows = build_prompt_table(PromptsSection(classes=("tench", "my class"), class_ids=(1,)))
    assert [r["prompt"] for r in rows] == ["a photo of a goldfish", "a photo of a tench", "a photo of a my class"]
    assert [r["class_id"] for r in rows] == [1, 0, None]
    assert len(imagenet_classes()) == 1000 and imagenet_classes()[0] == "tench"
    assert len(build_prompt_table(PromptsSection())) == 1000
    assert len(build_prompt_table(PromptsSection(limit=5))) == 5


def test_file_prompts_and_stable_ids(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("# comment\na red fox\n\na blue car\na red fox\n")
    rows = build_prompt_table(PromptsSection(source="file", path=str(f)))
    assert [r["prompt"] for r in rows] == ["a red fox", "a blue car"]  # duplicate kept once
    assert rows[0]["prompt_id"] == prompt_id("a red fox") != rows[1]["prompt_id"]
    with pytest.raises(FileNotFoundError):
        build_prompt_table(PromptsSection(source="file", path=str(tmp_path / "missing.txt")))


def test_ingest_quarantines_bad_files_and_keeps_the_rest(tmp_path: Path) -> None:
    photos = tmp_path / "photos" / "cat"
    photos.mkdir(parents=True)
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(photos / "good.jpg", quality=80)
    (photos / "empty.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    (photos / "cut.png").write_bytes(buf.getvalue()[:60])
    cfg = parse_config({"run": {"out": str(tmp_path / "run")},
                        "real": {"path": str(tmp_path / "photos"), "class_from_folder": True}})
    ctx = RunContext(cfg, RunDir(tmp_path / "run").make())
    from aigi.pipeline.stages.ingest import IngestStage

    console = io.StringIO()
    [res] = run_stages([IngestStage(ctx, cfg.reals[0])], SerialExecutor(), ctx.run.logs, console)
    assert res.items == 1
    assert "2 quarantined, 0 skipped" in console.getvalue()
    [shard] = ctx.run.image_shards("real")
    rows = pq.read_table(shard).to_pylist()
    assert len(rows) == 1 and rows[0]["origin"] == "cat/good.jpg" and rows[0]["class_name"] == "cat"
    assert rows[0]["format"] == "JPEG" and abs(rows[0]["jpeg_quality"] - 80) <= 1
    assert rows[0]["image"]["bytes"] == (photos / "good.jpg").read_bytes()
    q = pq.read_table(ctx.run.quarantine / "ingest" / "real" / shard.name).to_pylist()
    reasons = {Path(r["item"]).name: r["reason"] for r in q}
    assert set(reasons) == {"empty.png", "cut.png"} and reasons["empty.png"] == "empty file"
