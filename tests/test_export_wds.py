"""`aigi export --format webdataset`: tar shards whose samples are the exported rows, byte for byte,
that re-export identically and that the webdataset real source ingests back."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest
from small_run import small_run

from aigi.manifests.export_wds import export_rows, export_webdataset


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """12 photos (one an exact copy, so dedupe drops a row) and one tiny SD generator; JPEG
    normalization, so the export carries the normalized bytes."""
    base = tmp_path_factory.mktemp("wds")
    small_run(base, copy_of=3, curation={"normalize": {"format": "jpeg", "quality": 90}})
    return base / "run"


@pytest.fixture(scope="module")
def rows(run_dir) -> dict[str, dict]:
    out = {r["image_id"]: r for t in export_rows(run_dir) for r in t.to_pylist()}
    assert out and {r["label"] for r in out.values()} == {0, 1}
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    return export_webdataset(run_dir, tmp_path_factory.mktemp("out") / "wds")


def samples_of(tar: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar) as tf:
        for m in tf:
            assert m.isreg() and m.mtime == 0 and m.uid == m.gid == 0 and m.mode == 0o644
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return out


def test_samples_are_the_exported_rows(exported, rows):
    manifest = json.loads((exported / "manifest.json").read_text(encoding="utf-8"))
    tars = sorted(exported.glob("*/*.tar"))
    assert sorted(s["path"] for s in manifest["shards"]) == [t.relative_to(exported).as_posix() for t in tars]
    seen: dict[str, str] = {}
    for shard in manifest["shards"]:
        path = exported / shard["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
        assert path.stat().st_size == shard["bytes"]
        samples = samples_of(path)
        assert len(samples) == shard["samples"]
        split = shard["split"]
        assert path.name.startswith(f"{split}-") and path.parent.name == split
        for key, members in samples.items():
            row = rows[key]
            assert set(members) == {"jpg", "json", "cls"}  # normalized to JPEG, no masks here
            assert members["jpg"] == row["image"]["bytes"]
            assert hashlib.sha256(members["jpg"]).hexdigest() == row["sha256"]
            assert members["cls"] == str(row["label"]).encode()
            meta = json.loads(members["json"])
            assert "image" not in meta and "mask" not in meta
            for col, v in row.items():
                if col not in ("image", "mask"):
                    assert meta[col] == v, col
            assert meta["split"] == split and meta["keep"] is True
            seen[key] = split
    assert set(seen) == set(rows)  # every exported row once, nothing else
    assert manifest["splits"] == {sp: list(seen.values()).count(sp) for sp in manifest["splits"]}
    assert {r["source"] for r in rows.values()} == {"sd", "real"}


def test_reexport_is_byte_identical_and_shards_are_cut_by_bytes(run_dir, exported, tmp_path):
    again = export_webdataset(run_dir, tmp_path / "again")
    files = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (exported / rel).read_bytes() == (again / rel).read_bytes(), rel
    # replacing an earlier export is allowed, a foreign folder is refused
    assert export_webdataset(run_dir, again) == again
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError):
        export_webdataset(run_dir, tmp_path / "foreign")

    small = export_webdataset(run_dir, tmp_path / "small", shard_bytes=24 * 1024)
    manifest = json.loads((small / "manifest.json").read_text(encoding="utf-8"))
    train = [s for s in manifest["shards"] if s["split"] == "train"]
    assert len(train) > 1
    assert all(s["bytes"] <= 24 * 1024 for s in manifest["shards"])
    total = json.loads((exported / "manifest.json").read_text(encoding="utf-8"))["splits"]
    assert manifest["splits"] == total


def test_include_dropped_adds_the_dropped_split(run_dir, rows, tmp_path):
    out = export_webdataset(run_dir, tmp_path / "all", include_dropped=True)
    dropped = [s for p in sorted((out / "dropped").glob("*.tar")) for s in samples_of(p).values()]
    assert dropped  # the copied photo
    for s in dropped:
        meta = json.loads(s["json"])
        assert meta["split"] == "dropped" and meta["keep"] is False and meta["drop_reason"]
        assert meta["image_id"] not in rows


def test_webdataset_source_ingests_the_train_shards(exported, rows):
    from aigi.curation.sources import RealSourceConfig, ingest_item, open_source

    src = open_source(RealSourceConfig(path=str(exported / "train"), source="webdataset",
                                       class_id_names="none", unit_size=5))
    got = []
    for unit in src.units():
        for item in src.read(unit):
            got.append((item, ingest_item(item, "back")))
    train = {k: r for k, r in rows.items() if r["split"] == "train"}
    assert len(got) == len(train)
    for item, row in got:
        key = item.origin.rsplit("/", 1)[-1]
        assert row["sha256"] == train[key]["sha256"] == hashlib.sha256(train[key]["image"]["bytes"]).hexdigest()
        assert row["format"] == "JPEG"
        assert item.class_id == train[key]["label"]  # .cls is read as the class id
