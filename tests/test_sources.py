"""Real-image sources: imagefolder, Parquet, WebDataset tar shards, local Hugging Face datasets.

Each kind is built in tmp_path and checked for: one RawItem per item, units covering every item
once, original bytes kept through ingest_item, captions/classes/origins as written, bad items
carrying a reason, and unit listings that are location-free but change with the input.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aigi.core.configtools import ConfigError, Invalid, build
from aigi.curation.ingest import BadImage, ingest_file
from aigi.curation.sources import (
    RawItem,
    RealSourceConfig,
    SourceError,
    ingest_item,
    open_source,
)
from aigi.curation.sources.parquet import row_ranges
from aigi.curation.sources.paths import expand_braces
from aigi.prompts.classes import imagenet_classes

# ---------------------------------------------------------------- helpers


def encode(seed: int, fmt: str = "PNG", size: int = 12) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_all(cfg: RealSourceConfig, unit_size: int | None = None):
    """(units, items); asserts every unit yields exactly its n_items and survives pickling."""
    src = pickle.loads(pickle.dumps(open_source(cfg)))
    units = src.units(unit_size)
    items: list[RawItem] = []
    for unit in units:
        unit = pickle.loads(pickle.dumps(unit))
        got = list(src.read(unit))
        assert len(got) == unit.n_items, unit.key
        items += got
    assert len({u.key for u in units}) == len(units)
    return units, items


def ingest_all(items: list[RawItem], name: str = "src") -> tuple[dict[str, dict], dict[str, str]]:
    """(rows by origin, reasons by origin); every item lands in exactly one of them."""
    rows, bad = {}, {}
    for item in items:
        try:
            rows[item.origin] = ingest_item(item, name)
        except BadImage as e:
            assert e.reason
            bad[e.path] = e.reason
    assert len(rows) + len(bad) == len(items)
    return rows, bad


def listings(cfg: RealSourceConfig, unit_size: int | None = None) -> list:
    return [u.listing for u in open_source(cfg).units(unit_size)]


def moved(cfg: RealSourceConfig, old: Path, new: Path) -> RealSourceConfig:
    shutil.copytree(old, new)
    return RealSourceConfig(**{**cfg.__dict__, "path": cfg.path.replace(str(old), str(new))})


def assert_location_free(cfg: RealSourceConfig, old: Path, new: Path, unit_size: int) -> None:
    before = listings(cfg, unit_size)
    assert str(old) not in json.dumps(before)
    assert listings(moved(cfg, old, new), unit_size) == before


# ---------------------------------------------------------------- config


def test_config_names_the_key() -> None:
    with pytest.raises(Invalid) as e:
        RealSourceConfig(path="x", caption_column="txt")  # imagefolder has no columns
    assert e.value.key == "caption_column"
    with pytest.raises(Invalid) as e:
        RealSourceConfig(path="x", source="parquet", class_from_folder=True)
    assert e.value.key == "class_from_folder"
    with pytest.raises(Invalid) as e:
        RealSourceConfig(path="x", source="hf", class_column="image")
    assert e.value.key == "class_column"
    with pytest.raises(ConfigError, match=r"real\.split"):
        build(RealSourceConfig, {"path": "x", "source": "webdataset", "split": "test"}, "real")
    with pytest.raises(ConfigError, match=r"real\.source"):
        build(RealSourceConfig, {"path": "x", "source": "zip"}, "real")
    cfg = build(RealSourceConfig, {"path": "/a/b", "source": "hf", "split": "validation"}, "real")
    assert "path" not in cfg.identity() and cfg.identity()["split"] == "validation"


def test_expand_braces() -> None:
    assert expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_braces("{a,b}/x-{8..10}") == [
        "a/x-8",
        "a/x-9",
        "a/x-10",
        "b/x-8",
        "b/x-9",
        "b/x-10",
    ]
    assert expand_braces("p{1,{2,3}}q") == ["p1q", "p2q", "p3q"]
    with pytest.raises(SourceError, match="unbalanced"):
        expand_braces("s-{0..2.tar")


# ---------------------------------------------------------------- imagefolder


def test_imagefolder(tmp_path: Path) -> None:
    root = tmp_path / "a" / "real"
    files = {
        "top.png": encode(1),
        "tench/x.jpg": encode(2, "JPEG"),
        "tench/y.png": encode(3),
        "n01443537/z.png": encode(4),  # the goldfish synset
        "mine/w.png": encode(5),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "bad.jpg").write_bytes(b"not a jpeg")
    cfg = RealSourceConfig(path=str(root), name="folder", class_from_folder=True)

    units, items = read_all(cfg, unit_size=3)
    assert [u.n_items for u in units] == [3, 3]
    rows, bad = ingest_all(items, "folder")
    assert set(bad) == {"bad.jpg"}
    assert set(rows) == set(files)
    for rel, data in files.items():
        assert rows[rel]["sha256"] == sha(data) and rows[rel]["image"]["bytes"] == data
        # the same row the folder ingestion makes from the file itself
        assert rows[rel] == ingest_file(root, rel, "folder", class_from_folder=True)
    classes = {rel: (r["class_name"], r["class_id"]) for rel, r in rows.items()}
    names = imagenet_classes()
    assert classes == {
        "top.png": (None, None),
        "tench/x.jpg": ("tench", names.index("tench")),
        "tench/y.png": ("tench", names.index("tench")),
        "n01443537/z.png": ("goldfish", names.index("goldfish")),
        "mine/w.png": ("mine", None),
    }

    assert_location_free(cfg, tmp_path / "a", tmp_path / "b", 3)
    before = listings(cfg, 3)
    (root / "tench" / "y.png").write_bytes(encode(4, size=14))
    after = listings(cfg, 3)
    assert after[0] == before[0] and after[1] != before[1]


# ---------------------------------------------------------------- parquet


@pytest.mark.parametrize("groups", [[3, 3, 2], [10], [1, 1, 1, 1, 1], [2, 9, 1, 1], [4, 4]])
def test_row_ranges_align_to_row_groups(groups: list[int]) -> None:
    unit = 4
    ranges = row_ranges(groups, unit)
    bounds = np.cumsum([0] + groups).tolist()
    assert ranges[0][0] == 0 and ranges[-1][1] == sum(groups)
    assert all(a < b <= a + unit for a, b in ranges)
    assert all(r1[1] == r2[0] for r1, r2 in zip(ranges, ranges[1:], strict=False))
    for a, b in ranges:
        # whole row groups, or a slice inside one row group larger than a unit
        whole = a in bounds and b in bounds
        inside = any(
            lo <= a and b <= hi and hi - lo > unit
            for lo, hi in zip(bounds, bounds[1:], strict=False)
        )
        assert whole or inside


def _write_parquet(path: Path, images: list, struct: bool, rows_per_group: int = 3) -> None:
    n = len(images)
    image_type = (
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]) if struct else pa.binary()
    )
    cells = [{"bytes": b, "path": None} if struct and b is not None else b for b in images]
    table = pa.table(
        {
            "img": pa.array(cells, image_type),
            "text": [f"caption {i}" for i in range(n)],
            "cls": pa.array([i % 3 + 1 for i in range(n)], pa.int32()),
            "key": [f"id-{i:03d}" for i in range(n)],
        }
    )
    pq.write_table(table, path, row_group_size=rows_per_group)


def test_parquet_struct_and_binary(tmp_path: Path) -> None:
    root = tmp_path / "a" / "pq"
    root.mkdir(parents=True)
    hf_images = [encode(10 + i, "JPEG" if i % 2 else "PNG") for i in range(8)]
    hf_images[5] = None  # a null cell
    bin_images = [encode(30 + i) for i in range(4)]
    bin_images[2] = b"garbage"
    _write_parquet(root / "hf.parquet", hf_images, struct=True)
    _write_parquet(root / "raw.parquet", bin_images, struct=False)
    cfg = RealSourceConfig(
        path=str(root),
        source="parquet",
        name="pq",
        image_column="img",
        caption_column="text",
        class_column="cls",
    )
    units, items = read_all(cfg, unit_size=4)
    # hf.parquet: groups 3,3,2 -> [0,3) [3,6) [6,8); raw.parquet: 3,1 -> [0,4)
    assert [(u.listing["file"], u.listing["rows"]) for u in units] == [
        ("hf.parquet", [0, 3]),
        ("hf.parquet", [3, 6]),
        ("hf.parquet", [6, 8]),
        ("raw.parquet", [0, 4]),
    ]
    rows, bad = ingest_all(items)
    assert set(bad) == {"hf.parquet:5", "raw.parquet:2"}
    assert bad["hf.parquet:5"] == "null image cell" and "decode" in bad["raw.parquet:2"]
    names = imagenet_classes()
    for file, images in (("hf.parquet", hf_images), ("raw.parquet", bin_images)):
        for i, data in enumerate(images):
            origin = f"{file}:{i}"
            if origin in bad:
                continue
            row = rows[origin]
            assert row["sha256"] == sha(data) and row["image"]["bytes"] == data
            assert row["prompt"] == f"caption {i}"
            assert (row["class_id"], row["class_name"]) == (i % 3 + 1, names[i % 3 + 1])

    # the id column names the items; a glob selects files
    cfg_id = RealSourceConfig(
        path=str(root / "h*.parquet"), source="parquet", image_column="img", id_column="key"
    )
    _, items = read_all(cfg_id)
    assert [it.origin for it in items] == [f"id-{i:03d}" for i in range(8)]

    assert_location_free(cfg, tmp_path / "a", tmp_path / "b", 4)
    before = listings(cfg, 4)
    bin_images[1] = encode(99, size=20)  # one row changes
    _write_parquet(root / "raw.parquet", bin_images, struct=False)
    after = listings(cfg, 4)
    assert after[:3] == before[:3] and after[3] != before[3]


def test_parquet_slices_of_one_large_row_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aigi.curation.sources.parquet as parquet_source

    monkeypatch.setattr(parquet_source, "_BATCH_ROWS", 4)  # batches that straddle unit bounds
    images = [encode(200 + i) for i in range(10)]
    _write_parquet(tmp_path / "one.parquet", images, struct=True, rows_per_group=10)
    cfg = RealSourceConfig(path=str(tmp_path / "one.parquet"), source="parquet", image_column="img")
    units, items = read_all(cfg, unit_size=4)
    assert [u.listing["rows"] for u in units] == [[0, 3], [3, 6], [6, 10]]
    assert [it.origin for it in items] == [f"one.parquet:{i}" for i in range(10)]
    assert [it.data for it in items] == images


def test_parquet_errors_name_the_thing(tmp_path: Path) -> None:
    _write_parquet(tmp_path / "ok.parquet", [encode(1), encode(2)], struct=True)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    cfg = RealSourceConfig(path=str(tmp_path), source="parquet", image_column="img")
    _, items = read_all(cfg)
    rows, bad = ingest_all(items)
    assert set(rows) == {"ok.parquet:0", "ok.parquet:1"}
    assert bad["broken.parquet"].startswith("cannot read Parquet file")

    missing = RealSourceConfig(path=str(tmp_path / "ok.parquet"), source="parquet")
    with pytest.raises(SourceError, match=r"ok\.parquet: image_column = 'image': no such column"):
        open_source(missing).units()
    wrong_type = RealSourceConfig(
        path=str(tmp_path / "ok.parquet"),
        source="parquet",
        image_column="img",
        caption_column="cls",
    )
    with pytest.raises(SourceError, match=r"caption_column = 'cls' has type int32"):
        open_source(wrong_type).units()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no Parquet files"):
        open_source(RealSourceConfig(path=str(tmp_path / "empty"), source="parquet")).units()

    # an int class outside ImageNet-1k is an item error, not a silently wrong name
    table = pq.read_table(tmp_path / "ok.parquet")
    table = table.set_column(2, "cls", pa.array([1000, 7], pa.int32()))
    pq.write_table(table, tmp_path / "ok.parquet")
    ids = RealSourceConfig(
        path=str(tmp_path / "ok.parquet"), source="parquet", image_column="img", class_column="cls"
    )
    src = open_source(ids)
    first, second = list(src.read(src.units()[0]))
    assert "not an ImageNet-1k id" in first.error and first.data is None
    assert (second.error, second.class_id, second.class_name) == (None, 7, imagenet_classes()[7])
    raw = RealSourceConfig(**{**ids.__dict__, "class_id_names": "none"})
    src = open_source(raw)
    assert [(it.class_id, it.class_name) for it in src.read(src.units()[0])] == [
        (1000, None),
        (7, None),
    ]


def test_parquet_written_by_datasets_keeps_classlabel_names(tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, Features, Image, Value

    images = [encode(i) for i in range(4)]
    ds = Dataset.from_dict(
        {
            "image": [{"bytes": b, "path": None} for b in images],
            "label": [2, 0, 1, -1],  # -1: the ClassLabel value for "no label"
            "caption": ["a", "b", "c", "d"],
        },
        features=Features(
            {
                "image": Image(),
                "label": ClassLabel(names=["cat", "dog", "tench"]),
                "caption": Value("string"),
            }
        ),
    )
    ds.to_parquet(tmp_path / "train.parquet")
    cfg = RealSourceConfig(
        path=str(tmp_path / "train.parquet"),
        source="parquet",
        caption_column="caption",
        class_column="label",
    )
    _, items = read_all(cfg)
    rows, bad = ingest_all(items)
    assert not bad
    got = [
        (
            rows[f"train.parquet:{i}"]["sha256"],
            rows[f"train.parquet:{i}"]["class_name"],
            rows[f"train.parquet:{i}"]["prompt"],
        )
        for i in range(4)
    ]
    assert got == list(zip(map(sha, images), ["tench", "cat", "dog", None], "abcd", strict=True))
    # a ClassLabel's ids are the dataset's own, and "tench" here is id 2, not ImageNet's 0
    assert [rows[f"train.parquet:{i}"]["class_id"] for i in range(4)] == [2, 0, 1, None]


# ---------------------------------------------------------------- webdataset


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_webdataset(tmp_path: Path) -> None:
    root = tmp_path / "a" / "wds"
    root.mkdir(parents=True)
    img = {k: encode(50 + i, "JPEG" if i % 2 else "PNG") for i, k in enumerate("abcdefg")}
    _tar(
        root / "shard-000000.tar",
        [
            ("s0.jpg", img["a"]),
            ("s0.txt", b"a red car\n"),
            ("s0.cls", b"1"),
            ("s1.png", img["b"]),
            ("s1.json", json.dumps({"caption": "json cap", "label": 3}).encode()),
            ("s2.txt", b"caption without image"),
            ("s2.cls", b"4"),
            ("s3.jpg", b"\xff\xd8\xff corrupt"),
            ("dir/x.y/s4.seg.png", img["c"]),
            ("dir/x.y/s4.cls", b"tabby"),
            ("README", b"no extension"),
        ],
    )
    _tar(
        root / "shard-000001.tar",
        [("t0.webp.png", img["d"]), ("t1.png", img["e"]), ("t1.cls", b"2000")],
    )
    _tar(root / "ignored.tar", [("u0.png", img["f"])])
    cfg = RealSourceConfig(path=str(root / "shard-{000000..000001}.tar"), source="webdataset")
    units, items = read_all(cfg, unit_size=4)
    assert [(u.listing["shard"], u.listing["items"]) for u in units] == [
        ("shard-000000.tar", [0, 4]),
        ("shard-000000.tar", [4, 6]),
        ("shard-000001.tar", [0, 2]),
    ]
    rows, bad = ingest_all(items)
    names = imagenet_classes()
    assert set(rows) == {
        "shard-000000.tar/s0",
        "shard-000000.tar/s1",
        "shard-000000.tar/dir/x.y/s4",
        "shard-000001.tar/t0",
    }
    s0, s1 = rows["shard-000000.tar/s0"], rows["shard-000000.tar/s1"]
    s4, t0 = rows["shard-000000.tar/dir/x.y/s4"], rows["shard-000001.tar/t0"]
    assert (s0["sha256"], s0["prompt"], s0["class_id"], s0["class_name"]) == (
        sha(img["a"]),
        "a red car",
        1,
        names[1],
    )
    assert (s1["sha256"], s1["prompt"], s1["class_id"], s1["class_name"]) == (
        sha(img["b"]),
        "json cap",
        3,
        names[3],
    )
    # a class name that is an ImageNet-1k name gets its index, as class prompts do
    assert (s4["sha256"], s4["class_name"], s4["class_id"]) == (
        sha(img["c"]),
        "tabby",
        names.index("tabby"),
    )
    assert t0["sha256"] == sha(img["d"])
    assert bad["shard-000000.tar/s2"] == "sample has no image member (has .txt, .cls)"
    assert "decode" in bad["shard-000000.tar/s3"] or "truncated" in bad["shard-000000.tar/s3"]
    assert "key.extension" in bad["shard-000000.tar/README"]
    assert "not an ImageNet-1k id" in bad["shard-000001.tar/t1"]

    # a folder of shards takes every shard; a shard cut short keeps its readable samples
    shard1 = root / "shard-000001.tar"
    with tarfile.open(shard1) as tf:
        cut = tf.getmember("t1.png").offset_data + 10
    data = shard1.read_bytes()
    shard1.write_bytes(data[:cut])  # t0 whole, t1 cut inside its image
    _, items = read_all(RealSourceConfig(path=str(root), source="webdataset"))
    rows, bad = ingest_all(items)
    assert {"ignored.tar/u0", "shard-000001.tar/t0"} <= set(rows)
    assert "unexpected end of data" in bad["shard-000001.tar/t1"]
    assert bad["shard-000001.tar"].startswith("shard cut short after 2 members")
    # a corrupt header in the middle: tarfile alone would end the shard there without a word
    broken = bytearray(data)
    broken[cut - 10 - 512 : cut - 10 - 400] = b"x" * 112
    shard1.write_bytes(bytes(broken))
    _, items = read_all(RealSourceConfig(path=str(shard1), source="webdataset"))
    assert [(it.origin, it.error is None) for it in items] == [
        ("shard-000001.tar/t0", True),
        ("shard-000001.tar", False),
    ]
    assert items[1].error.startswith("unreadable member header")

    assert_location_free(cfg, tmp_path / "a", tmp_path / "b", 4)
    before = listings(cfg, 4)
    _tar(root / "shard-000001.tar", [("t0.png", img["g"])])
    after = listings(cfg, 4)
    assert after[:2] == before[:2] and after[2:] != before[2:]
    with pytest.raises(SourceError, match="shard-000002.tar"):
        open_source(
            RealSourceConfig(path=str(root / "shard-{000001..000002}.tar"), source="webdataset")
        ).units()


# ---------------------------------------------------------------- hf


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _saved_dataset(path: Path, images: list[bytes], labels: list[int]) -> None:
    from datasets import ClassLabel, Dataset, Image

    ds = Dataset.from_dict(
        {
            "image": images,
            "label": labels,
            "text": [f"t{i}" for i in range(len(images))],
            "uid": [f"u{i}" for i in range(len(images))],
        }
    )
    ds = ds.cast_column("image", Image()).cast_column("label", ClassLabel(names=["cat", "dog"]))
    ds.save_to_disk(str(path))


def test_hf_saved_dataset(tmp_path: Path, hf_cache: None) -> None:
    root = tmp_path / "a" / "ds"
    images = [encode(70 + i, "JPEG" if i % 2 else "PNG") for i in range(5)]
    images[3] = b"broken"
    _saved_dataset(root, images, [0, 1, 1, 0, 1])
    cfg = RealSourceConfig(path=str(root), source="hf", caption_column="text", class_column="label")
    units, items = read_all(cfg, unit_size=2)
    assert [u.listing["rows"] for u in units] == [[0, 2], [2, 4], [4, 5]]
    rows, bad = ingest_all(items)
    assert set(bad) == {"row:3"}
    for i, data in enumerate(images):
        if i != 3:
            row = rows[f"row:{i}"]
            assert row["sha256"] == sha(data) and row["image"]["bytes"] == data
            assert (row["prompt"], row["class_name"], row["class_id"]) == (
                f"t{i}",
                ["cat", "dog"][[0, 1, 1, 0, 1][i]],
                [0, 1, 1, 0, 1][i],
            )

    by_id = RealSourceConfig(path=str(root), source="hf", id_column="uid")
    assert [it.origin for it in read_all(by_id)[1]] == [f"u{i}" for i in range(5)]

    assert_location_free(cfg, tmp_path / "a", tmp_path / "b", 2)
    before = listings(cfg, 2)

    def rebuilt(where: str) -> list:
        _saved_dataset(tmp_path / where, images, [0, 1, 1, 0, 1])
        return listings(RealSourceConfig(**{**cfg.__dict__, "path": str(tmp_path / where)}), 2)

    assert rebuilt("same") == before  # the fingerprint follows the data, not the run
    images[4] = encode(99)
    after = rebuilt("changed")
    assert [a["dataset"] != b["dataset"] for a, b in zip(after, before, strict=True)] == [True] * 3


def test_hf_dataset_dict_split_and_load_dataset_folder(tmp_path: Path, hf_cache: None) -> None:
    from datasets import Dataset, DatasetDict, Image

    train = Dataset.from_dict({"image": [encode(1)]}).cast_column("image", Image())
    test = Dataset.from_dict({"image": [encode(2), encode(3)]}).cast_column("image", Image())
    DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    cfg = RealSourceConfig(path=str(tmp_path / "dd"), source="hf", split="test")
    assert [it.data for it in read_all(cfg)[1]] == [encode(2), encode(3)]
    bad_split = RealSourceConfig(path=str(tmp_path / "dd"), source="hf", split="validation")
    with pytest.raises(SourceError, match="split = 'validation'.*train, test"):
        open_source(bad_split).units()

    # a plain image folder read by load_dataset("imagefolder"): cells hold paths only
    root = tmp_path / "a" / "folder"
    files = {
        "train/cat/0.png": encode(5),
        "train/dog/1.jpg": encode(6, "JPEG"),
        "train/dog/2.png": encode(7),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    cfg = RealSourceConfig(path=str(root), source="hf", class_column="label")
    _, items = read_all(cfg)
    rows, bad = ingest_all(items)
    assert not bad
    got = sorted((r["sha256"], r["class_name"]) for r in rows.values())
    assert got == sorted((sha(d), rel.split("/")[1]) for rel, d in files.items())
    assert_location_free(cfg, tmp_path / "a", tmp_path / "b", 256)
    with pytest.raises(SourceError, match="hub ids are not accepted"):
        open_source(RealSourceConfig(path="someone/dataset", source="hf")).units()
