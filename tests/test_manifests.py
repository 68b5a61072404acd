"""Image manifest round trip, schema checks, and the Hugging Face `Image` marking."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from aigi.manifests.ids import content_id, derive_seed, fingerprint
from aigi.manifests.schema import HASHES, IMAGES
from aigi.manifests.shards import ManifestError, check_shard, read_shard, shard_meta, write_shard


def png_bytes(seed: int, size: int = 16) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def image_row(i: int, label: int) -> dict:
    data = png_bytes(i)
    row = {name: None for name in IMAGES.arrow.names}
    row.update(
        image_id=f"id{i}", image={"bytes": data, "path": f"id{i}.png"}, label=label,
        source="gen" if label else "real", sha256="x", width=16, height=16, format="PNG",
        prompt_id="p1" if label else None, prompt="a photo of a tench" if label else None,
        class_id=0 if label else None, seed=derive_seed(0, "gen", "p1", i) if label else None,
        steps=30 if label else None, guidance=7.5 if label else None,
    )
    return row


def test_round_trip_and_metadata(tmp_path: Path) -> None:
    rows = [image_row(i, i % 2) for i in range(6)]
    path = write_shard(pa.Table.from_pylist(rows, schema=IMAGES.arrow), tmp_path / "s.parquet", IMAGES, "prod1")
    table = read_shard(path, IMAGES, producer="prod1")
    assert table.schema.remove_metadata() == IMAGES.arrow
    back = table.to_pylist()
    for a, b in zip(rows, back, strict=True):
        assert a == b
    meta = shard_meta(path)
    assert meta["schema"] == "aigi.images" and meta["version"] == IMAGES.version and meta["producer"] == "prod1"
    # no temporary files left behind
    assert [p.name for p in tmp_path.iterdir()] == ["s.parquet"]


def test_reader_checks_schema_and_producer(tmp_path: Path) -> None:
    path = write_shard(pa.Table.from_pylist([image_row(0, 1)], schema=IMAGES.arrow), tmp_path / "s.parquet", IMAGES, "p")
    with pytest.raises(ManifestError, match="schema is 'aigi.images'"):
        read_shard(path, HASHES)
    with pytest.raises(ManifestError, match="produced by p"):
        check_shard(path, IMAGES, producer="other")
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1]}), plain)
    with pytest.raises(ManifestError, match="not an aigi shard"):
        read_shard(plain, IMAGES)


def test_writer_rejects_missing_or_extra_columns(tmp_path: Path) -> None:
    t = pa.Table.from_pylist([image_row(0, 1)], schema=IMAGES.arrow)
    with pytest.raises(ManifestError, match="missing"):
        write_shard(t.drop_columns(["label"]), tmp_path / "a.parquet", IMAGES, "p")
    with pytest.raises(ManifestError, match="unexpected"):
        write_shard(t.append_column("extra", pa.array([1])), tmp_path / "b.parquet", IMAGES, "p")
    assert not list(tmp_path.iterdir())


def test_datasets_reads_pil_images(tmp_path: Path) -> None:
    import datasets

    rows = [image_row(i, i % 2) for i in range(4)]
    write_shard(pa.Table.from_pylist(rows, schema=IMAGES.arrow), tmp_path / "images" / "g" / "s.parquet", IMAGES, "p")
    ds = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "images" / "**" / "*.parquet"), split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    assert isinstance(ds.features["image"], datasets.Image)
    first = ds[0]
    assert isinstance(first["image"], Image.Image)
    assert np.array_equal(np.asarray(first["image"]), np.asarray(Image.open(io.BytesIO(rows[0]["image"]["bytes"]))))
    assert sorted(set(ds["label"])) == [0, 1]


def test_ids_and_seeds_are_stable_and_distinct() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert content_id("x", 1) != content_id("x", 2)
    seeds = {derive_seed(0, "gen", f"p{i}", k) for i in range(100) for k in range(10)}
    assert len(seeds) == 1000 and all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(0, "gen", "p1", 0) == derive_seed(0, "gen", "p1", 0)
    assert derive_seed(1, "gen", "p1", 0) != derive_seed(0, "gen", "p1", 0)
