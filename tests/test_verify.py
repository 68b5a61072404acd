"""`aigi verify`: a clean run verifies; damaged copies report what is wrong and where."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from small_run import png, small_run

from aigi.manifests.schema import IMAGES, Schema
from aigi.manifests.shards import shard_meta, write_shard
from aigi.manifests.verify import (
    Problem,
    export_card_rows,
    format_problems,
    verify_export,
    verify_run,
)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    from aigi.core.configtools import to_dict
    from aigi.features.registry import get

    base = tmp_path_factory.mktemp("verify")
    small_run(base, images_per_prompt=2, features={"clip_rn50": to_dict(get("clip_rn50").tiny(base / "clip"))})
    return base / "run"


@pytest.fixture()
def copy(clean_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(clean_run, dst)
    return dst


def test_clean_run_verifies(clean_run):
    assert verify_run(clean_run) == []
    assert format_problems([]) == "no problems found"


def test_flipped_byte_in_an_image_is_reported_with_its_file(copy):
    [shard, *_] = sorted((copy / "images" / "sd").glob("*.parquet"))
    meta = shard_meta(shard)
    table = pq.read_table(shard)
    rows = table.to_pylist()
    victim = rows[1]["image_id"]
    data = bytearray(rows[1]["image"]["bytes"])
    data[len(data) // 2] ^= 0xFF
    rows[1]["image"] = {"bytes": bytes(data), "path": rows[1]["image"]["path"]}  # sha256 column unchanged
    write_shard(pa.Table.from_pylist(rows, schema=IMAGES.arrow), shard, IMAGES, meta["producer"], extra=meta["extra"])
    problems = verify_run(copy)
    rel = shard.relative_to(copy).as_posix()
    assert problems and all(p.path == rel for p in problems), problems
    assert all(victim in p.what for p in problems)
    assert any("sha256" in p.what for p in problems)
    text = format_problems(problems)
    assert rel in text and victim in text


def test_deleted_shard_is_a_missing_planned_output(copy):
    [shard, *_] = sorted((copy / "images" / "sd").glob("*.parquet"))
    shard.unlink()
    problems = verify_run(copy)
    rel = shard.relative_to(copy).as_posix()
    assert Problem(rel, next(p.what for p in problems if p.path == rel)) in problems
    [missing] = [p for p in problems if p.path == rel]
    assert "missing" in missing.what and "generate/sd" in missing.what


@pytest.mark.parametrize("which", ["curation/duplicates.parquet", "images/real"])
def test_truncated_parquet_is_unreadable(copy, which):
    path = copy / which
    if path.is_dir():
        path = sorted(path.glob("*.parquet"))[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    problems = verify_run(copy)
    rel = path.relative_to(copy).as_posix()
    assert any(p.path == rel and "unreadable" in p.what for p in problems), problems


def test_counts_and_unique_ids(copy):
    # a hash shard that lost a row, and an image id copied into another source's shard
    [hashes, *_] = sorted((copy / "curation" / "hashes").rglob("*.parquet"))
    meta = shard_meta(hashes)
    from aigi.manifests.schema import HASHES

    write_shard(pq.read_table(hashes).slice(1), hashes, HASHES, meta["producer"], extra=meta["extra"])
    [real, *_] = sorted((copy / "images" / "real").glob("*.parquet"))
    [fake, *_] = sorted((copy / "images" / "sd").glob("*.parquet"))
    fmeta = shard_meta(fake)
    rows = pq.read_table(fake).to_pylist()
    rows[0]["image_id"] = pq.read_table(real).column("image_id")[0].as_py()
    write_shard(pa.Table.from_pylist(rows, schema=IMAGES.arrow), fake, IMAGES, fmeta["producer"], extra=fmeta["extra"])
    [feats, *_] = sorted((copy / "features").rglob("*.parquet"))
    fm = shard_meta(feats)
    t = pq.read_table(feats).slice(1)
    write_shard(t, feats, Schema(fm["schema"], fm["version"], t.schema.remove_metadata()), fm["producer"], extra=fm["extra"])
    problems = verify_run(copy)
    assert any(p.path == hashes.relative_to(copy).as_posix() and "rows" in p.what for p in problems), problems
    assert any(p.path == feats.relative_to(copy).as_posix() and "feature rows" in p.what for p in problems), problems
    assert any("not unique" in p.what and rows[0]["image_id"] in p.what for p in problems), problems


def test_unknown_schema_version_is_reported(copy):
    path = copy / "prompts" / "prompts.parquet"
    table = pq.read_table(path)
    md = dict(table.schema.metadata)
    md[b"aigi.schema_version"] = b"99"
    pq.write_table(table.replace_schema_metadata(md), path)
    problems = verify_run(copy)
    assert [p.path for p in problems] == ["prompts/prompts.parquet"]
    assert "99" in problems[0].what


# --------------------------------------------------------------------------------------- export


def build_export(root: Path) -> Path:
    files = []
    for split, seeds in (("train", [1, 2, 3]), ("test", [4])):
        images = [{"bytes": png(s), "path": None} for s in seeds]
        table = pa.table({
            "image_id": [f"id{s}" for s in seeds],
            "image": pa.array(images, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            "sha256": [hashlib.sha256(i["bytes"]).hexdigest() for i in images],
            "label": pa.array([1] * len(seeds), pa.int8()),
        }).replace_schema_metadata({b"huggingface": json.dumps(
            {"info": {"features": {"image_id": {"_type": "Value", "dtype": "string"}, "image": {"_type": "Image"},
                                   "sha256": {"_type": "Value", "dtype": "string"},
                                   "label": {"_type": "Value", "dtype": "int8"}}}}).encode()})
        path = root / "data" / split / "shard-00000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        files.append((path.relative_to(root).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest()))
    (root / "README.md").write_text("---\nlicense: other\n---\n# a corpus\n\n## Files\n\n"
                                    + export_card_rows(files) + "\nmore text\n", encoding="utf-8")
    return root


def test_clean_export_verifies(tmp_path):
    assert verify_export(build_export(tmp_path / "ex")) == []


def test_export_problems(tmp_path):
    root = build_export(tmp_path / "ex")
    train = root / "data" / "train" / "shard-00000.parquet"
    test = root / "data" / "test" / "shard-00000.parquet"
    # a corrupted image, rewritten (so the listed sha256 no longer matches either)
    table = pq.read_table(train)
    images = table.column("image").to_pylist()
    data = bytearray(images[0]["bytes"])
    data[20:60] = b"\x00" * 40
    images[0] = {"bytes": bytes(data), "path": None}
    pq.write_table(table.set_column(1, "image", pa.array(images, type=table.schema.field("image").type)), train)
    shutil.copy(test, root / "data" / "test" / "extra.parquet")  # not listed
    test.unlink()  # listed, missing
    problems = verify_export(root)
    by_path: dict[str, list[str]] = {}
    for p in problems:
        by_path.setdefault(p.path, []).append(p.what)
    assert any("README.md says" in w for w in by_path["data/train/shard-00000.parquet"])
    assert any("id1" in w and ("decode" in w or "sha256" in w) for w in by_path["data/train/shard-00000.parquet"])
    assert by_path["data/test/shard-00000.parquet"] == ["listed in README.md but missing"]
    assert by_path["data/test/extra.parquet"] == ["data file not listed in README.md"]


def test_export_without_a_table(tmp_path):
    root = build_export(tmp_path / "ex")
    (root / "README.md").write_text("# nothing listed\n", encoding="utf-8")
    problems = verify_export(root)
    assert Problem("README.md", "no `| file | sha256 |` table") in problems
    assert sum("not listed" in p.what for p in problems) == 2
