"""`aigi export`: a run's curated corpus as a Hugging Face dataset folder that `datasets` loads
offline, with a card whose counts and checksums match the files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from small_run import small_run

from aigi.manifests.export import LABEL_NAMES, card_counts, card_files, export_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """12 photos (one an exact copy, so dedupe drops a row) and one tiny SD generator; JPEG
    normalization, so the export carries the normalized bytes."""
    base = tmp_path_factory.mktemp("export")
    small_run(base, copy_of=3, generator={"license": "openrail-test"},
              curation={"normalize": {"format": "jpeg", "quality": 90}})
    return base / "run"


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    return export_run(run_dir, tmp_path_factory.mktemp("out") / "ds")


def rows_of(folder: Path, columns: list[str]) -> list[dict]:
    return pq.read_table(sorted((folder / "data").glob("**/*.parquet")), columns=columns).to_pylist()


def curation(run_dir: Path, name: str) -> list[dict]:
    return pq.read_table(run_dir / "curation" / f"{name}.parquet").to_pylist()


def test_load_dataset_offline_gives_pil_images_and_the_class_label(exported, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds = datasets.load_dataset(str(exported), cache_dir=str(tmp_path / "cache"))
    counts = card_counts((exported / "README.md").read_text(encoding="utf-8"))
    assert set(ds) == {sp for _, sp in counts} <= {"train", "val", "test"}
    for split, d in ds.items():
        assert d.num_rows == sum(n for (_, sp), n in counts.items() if sp == split)
        assert d.features["label"] == datasets.ClassLabel(names=LABEL_NAMES)
        assert isinstance(d.features["image"], datasets.Image)
        row = d[0]
        assert isinstance(row["image"], Image.Image)
        assert row["image"].format == "JPEG"  # the normalized bytes, not the PNG originals
        assert set(d["label"]) <= {0, 1} and set(d["split"]) == {split}
    assert {r for d in ds.values() for r in d["source"]} == {"sd", "real"}

    # one config per source selects that source's rows only
    sd = datasets.load_dataset(str(exported), "sd", cache_dir=str(tmp_path / "cache"))
    assert {s for d in sd.values() for s in d["source"]} == {"sd"}
    assert sum(d.num_rows for d in sd.values()) == sum(n for (s, _), n in counts.items() if s == "sd")


def test_card_counts_equal_duckdb(exported):
    import duckdb

    got = duckdb.sql(f"select source, split, count(*) from '{exported}/data/**/*.parquet' group by all").fetchall()
    counts = card_counts((exported / "README.md").read_text(encoding="utf-8"))
    assert {(s, sp): n for s, sp, n in got} == counts
    assert sum(counts.values()) > 0


def test_card_sha256_of_every_data_file(exported):
    listed = card_files((exported / "README.md").read_text(encoding="utf-8"))
    present = {p.relative_to(exported).as_posix() for p in (exported / "data").glob("**/*.parquet")}
    assert set(listed) == present
    for rel, sha in listed.items():
        assert hashlib.sha256((exported / rel).read_bytes()).hexdigest() == sha


def test_card_front_matter_and_prose(exported, run_dir):
    import yaml

    text = (exported / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---\n")[1])
    configs = {c["config_name"]: c for c in front["configs"]}
    assert set(configs) == {"default", "sd", "real"} and configs["default"]["default"]
    feats = {f["name"]: f["dtype"] for f in front["dataset_info"]["features"]}
    assert feats["image"] == "image" and feats["mask"] == "image"
    assert feats["label"] == {"class_label": {"names": {"0": "real", "1": "generated"}}}
    assert front["license"] == "openrail-test"
    import pyarrow.parquet as pq

    for sp in front["dataset_info"]["splits"]:
        files = sorted((exported / "data" / sp["name"]).glob("*.parquet"))
        assert sp["num_examples"] == sum(pq.ParquetFile(f).metadata.num_rows for f in files) > 0
        assert sp["num_bytes"] > 0
    assert front["dataset_info"]["download_size"] == sum(f.stat().st_size for f in (exported / "data").rglob("*.parquet"))
    assert "**sd**: openrail-test" in text
    assert "**normalized** bytes" in text and '"format": "jpeg"' in text
    audit = (run_dir / "curation" / "bias_audit.md").read_text(encoding="utf-8")
    auc = [ln for ln in text.splitlines() if ln.startswith("| format-only AUC") or ln.startswith("| real vs sd")]
    assert auc and all(ln in audit for ln in auc)
    assert "| exact_duplicate_of | 1 |" in text


def test_only_kept_rows_with_their_curation_columns(exported, run_dir):
    rows = {r["image_id"]: r for r in rows_of(exported, ["image_id", "split", "keep", "dup_group", "pair_id", "sha256", "image"])}
    splits = {r["image_id"]: r["split"] for r in curation(run_dir, "splits")}
    dups = {r["image_id"]: r for r in curation(run_dir, "duplicates")}
    assert set(rows) == set(splits) == {i for i, d in dups.items() if d["keep"]}
    assert len(dups) == len(rows) + 1  # the copied photo
    for image_id, r in rows.items():
        assert r["split"] == splits[image_id] and r["keep"]
        assert r["dup_group"] == dups[image_id]["dup_group"]
        assert hashlib.sha256(r["image"]["bytes"]).hexdigest() == r["sha256"]
    # the bytes are the normalized shards' bytes
    normalized = {}
    for p in (run_dir / "curation" / "normalized").glob("**/*.parquet"):
        for r in pq.read_table(p, columns=["image_id", "sha256"]).to_pylist():
            normalized[r["image_id"]] = r["sha256"]
    assert all(normalized[i] == r["sha256"] for i, r in rows.items())


def test_include_dropped(run_dir, tmp_path):
    out = export_run(run_dir, tmp_path / "all", include_dropped=True)
    rows = rows_of(out, ["image_id", "split", "keep", "drop_reason"])
    dups = curation(run_dir, "duplicates")
    assert sorted(r["image_id"] for r in rows) == sorted(d["image_id"] for d in dups)
    dropped = [r for r in rows if not r["keep"]]
    assert len(dropped) == 1 and dropped[0]["split"] == "dropped"
    assert dropped[0]["drop_reason"].startswith("exact_duplicate_of:")
    assert card_counts((out / "README.md").read_text(encoding="utf-8"))[("real", "dropped")] == 1


def test_parquet_layout(run_dir, tmp_path):
    """Byte-cut row groups and files, page index, zstd but for the image bytes, HF features."""
    out = export_run(run_dir, tmp_path / "small", row_group_bytes=4000, file_bytes=12000)
    files = sorted((out / "data").glob("**/*.parquet"))
    assert any(p.name.endswith("-00001.parquet") for p in files)  # a (split, source) over several files
    many_groups = False
    for p in files:
        f = pq.ParquetFile(p)
        md = f.metadata
        many_groups |= md.num_row_groups > 1
        hf = json.loads(f.schema_arrow.metadata[b"huggingface"])["info"]["features"]
        assert hf["image"] == {"_type": "Image"} and hf["mask"] == {"_type": "Image"}
        assert hf["label"] == {"names": ["real", "generated"], "_type": "ClassLabel"}
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for c in range(rg.num_columns):
                col = rg.column(c)
                assert col.has_column_index and col.has_offset_index
                want = "UNCOMPRESSED" if col.path_in_schema in ("image.bytes", "mask.bytes") else "ZSTD"
                assert col.compression == want, col.path_in_schema
        table = pq.read_table(p, columns=["image"])
        start = 0
        for g in range(md.num_row_groups):
            n = md.row_group(g).num_rows
            img = table.slice(start, n).column("image").to_pylist()
            # a group goes over the limit only by its last row (the 256-byte row allowance aside)
            assert n == 1 or sum(len(i["bytes"]) + 256 for i in img[:-1]) <= 4000
            start += n
    assert many_groups
    # the same rows as the default layout
    default = export_run(run_dir, tmp_path / "default")
    assert sorted(r["image_id"] for r in rows_of(out, ["image_id"])) == \
        sorted(r["image_id"] for r in rows_of(default, ["image_id"]))


def test_refuses_a_folder_that_is_not_an_export(run_dir, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_run(run_dir, target)
    assert (target / "notes.txt").read_text() == "mine"
    # an earlier export is replaced
    first = export_run(run_dir, tmp_path / "again")
    (first / "data" / "stale.parquet").write_bytes(b"x")
    export_run(run_dir, first)
    assert not (first / "data" / "stale.parquet").exists()


def test_aigi_verify_accepts_the_export(exported):
    verify = pytest.importorskip("aigi.manifests.verify")
    if not hasattr(verify, "verify_export"):
        pytest.skip("aigi.manifests.verify has no verify_export")
    assert verify.verify_export(exported) == []
