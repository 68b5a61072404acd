import os

os.environ["HF_HUB_OFFLINE"] = "1"

from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from aigi.features.base import FeatureExtractor  # noqa: E402
from aigi.features.store import feature_meta, read_features, write_features  # noqa: E402
from aigi.manifests.schema import PROMPTS  # noqa: E402
from aigi.manifests.shards import ManifestError, write_shard  # noqa: E402

SHAPE = (4, 8, 8)


@dataclass(frozen=True)
class FakeConfig:
    dtype: str = "float32"
    knob: int = 3


class FakeExtractor(FeatureExtractor):
    name = "fake"
    version = 2
    Config = FakeConfig

    def columns(self):
        return {"lare": (SHAPE, self.config.dtype)}

    def preprocessing(self):
        return {"resize": [8, 8]}

    def model_revision(self) -> str:
        return "sha256:abc"


def make(n: int, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    arr = rng.standard_normal((n, *SHAPE)).astype(dtype)
    ids = [f"img{seed}-{i}" for i in range(n)]
    return ids, list(range(100, 100 + n)), arr


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_exact(tmp_path, dtype):
    ex = FakeExtractor(FakeConfig(dtype=dtype))
    ids1, seeds1, a1 = make(5, dtype, seed=1)
    ids2, seeds2, a2 = make(3, dtype, seed=2)
    p1 = write_features(tmp_path / "a.parquet", ids1, seeds1, {"lare": a1}, ex, "prod")
    p2 = write_features(tmp_path / "b.parquet", ids2, seeds2, {"lare": a2}, ex, "prod")
    ids, arr = read_features([p1, p2], "lare")
    assert ids == ids1 + ids2
    assert arr.dtype == np.dtype(dtype)
    assert arr.shape == (8, *SHAPE)
    np.testing.assert_array_equal(arr, np.concatenate([a1, a2]))


def test_non_contiguous_input_is_stored_row_major(tmp_path):
    ex = FakeExtractor(FakeConfig())
    ids, seeds, a = make(3, "float32")
    # A transposed view has the right shape but a different memory layout.
    view = np.ascontiguousarray(a.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    assert not view.flags.c_contiguous
    p = write_features(tmp_path / "a.parquet", ids, seeds, {"lare": view}, ex, "prod")
    _, back = read_features([p], "lare")
    np.testing.assert_array_equal(back, a)


def test_wrong_shape_dtype_or_columns_raise(tmp_path):
    ex = FakeExtractor(FakeConfig())
    ids, seeds, a = make(2, "float32")
    with pytest.raises(ValueError, match="shape"):
        write_features(tmp_path / "x.parquet", ids, seeds, {"lare": a[:, :, :4]}, ex, "p")
    with pytest.raises(ValueError, match="dtype"):
        write_features(tmp_path / "x.parquet", ids, seeds, {"lare": a.astype("float16")}, ex, "p")
    with pytest.raises(ValueError, match="columns"):
        write_features(tmp_path / "x.parquet", ids, seeds, {"other": a}, ex, "p")
    with pytest.raises(ValueError, match="seeds"):
        write_features(tmp_path / "x.parquet", ids, seeds[:1], {"lare": a}, ex, "p")
    assert not (tmp_path / "x.parquet").exists()


def test_read_rejects_mismatched_shards_and_non_feature_files(tmp_path):
    ids, seeds, a = make(2, "float32")
    p1 = write_features(tmp_path / "a.parquet", ids, seeds, {"lare": a}, FakeExtractor(FakeConfig()), "p")
    p2 = write_features(
        tmp_path / "b.parquet", ids, seeds, {"lare": a.astype("float16")}, FakeExtractor(FakeConfig("float16")), "p"
    )
    with pytest.raises(ManifestError, match="does not match"):
        read_features([p1, p2], "lare")
    with pytest.raises(ManifestError, match="no feature column"):
        read_features([p1], "dnf")
    other = write_shard(
        {"prompt_id": ["a"], "prompt": ["x"], "class_id": [1], "class_name": ["c"], "source": ["s"]},
        tmp_path / "prompts.parquet",
        PROMPTS,
        "p",
    )
    with pytest.raises(ManifestError, match="not a feature shard"):
        read_features([other], "lare")


@dataclass(frozen=True)
class MixedConfig:
    knob: int = 0


class MixedExtractor(FeatureExtractor):
    """A map, a vector and a scalar of different dtypes, as the real extractors store them."""

    name = "mixed"
    version = 1
    Config = MixedConfig

    def columns(self):
        return {"map": ((3, 4, 4), "float16"), "vec": ((6,), "float32"), "dnf": ((2, 2), "uint8"), "score": ((), "float32")}

    def preprocessing(self):
        return {}


def mixed_arrays(n: int):
    rng = np.random.default_rng(3)
    return {
        "map": rng.standard_normal((n, 3, 4, 4)).astype(np.float16),
        "vec": rng.standard_normal((n, 6)).astype(np.float32),
        "dnf": rng.integers(0, 256, (n, 2, 2), dtype=np.uint8),
        "score": rng.standard_normal(n).astype(np.float32),
    }


def test_readable_by_pyarrow_datasets_duckdb_and_polars(tmp_path):
    import datasets
    import duckdb
    import polars as pl

    ex = MixedExtractor(MixedConfig())
    n = 5
    ids = [f"id{i}" for i in range(n)]
    arrays = mixed_arrays(n)
    p = write_features(tmp_path / "f.parquet", ids, list(range(n)), arrays, ex, "prod")

    table = pq.read_table(p)
    t = table.schema.field("map").type
    assert pa.types.is_fixed_size_list(t) and t.list_size == 48 and t.value_type == pa.float16()
    assert table.schema.field("score").type == pa.float32()  # scalars are plain columns
    for col, arr in arrays.items():
        _, back = read_features([p], col)
        np.testing.assert_array_equal(back, arr)

    ds = datasets.load_dataset("parquet", data_files=str(p), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds[2]["image_id"] == ids[2]
    np_ds = ds.with_format("numpy")[:]
    assert np_ds["map"].shape == (n, 48) and np_ds["dnf"].shape == (n, 4)
    np.testing.assert_array_equal(np_ds["map"][2].astype(np.float16), arrays["map"][2].reshape(-1))
    np.testing.assert_array_equal(np_ds["dnf"][4], arrays["dnf"][4].reshape(-1))
    assert np.float32(ds[1]["score"]) == arrays["score"][1]

    rows = duckdb.sql(f"SELECT image_id, len(map), vec, dnf, score FROM '{p}' ORDER BY image_id").fetchall()
    assert [r[0] for r in rows] == ids and rows[0][1] == 48
    np.testing.assert_array_equal(np.array(rows[3][2], dtype=np.float32), arrays["vec"][3])
    np.testing.assert_array_equal(np.array(rows[3][3], dtype=np.uint8), arrays["dnf"][3].reshape(-1))
    assert np.float32(rows[3][4]) == arrays["score"][3]

    df = pl.read_parquet(p)
    assert df.schema["map"] == pl.Array(pl.Float16, 48)
    np.testing.assert_array_equal(df["map"].to_numpy()[1], arrays["map"][1].reshape(-1))
    np.testing.assert_array_equal(df["score"].to_numpy(), arrays["score"])


def test_float_columns_are_byte_stream_split(tmp_path):
    ex = MixedExtractor(MixedConfig())
    ids = [f"id{i}" for i in range(4)]

    def encodings(path):
        md = pq.ParquetFile(path).metadata.row_group(0)
        return {md.column(i).path_in_schema: md.column(i).encodings for i in range(md.num_columns)}

    enc = encodings(write_features(tmp_path / "a.parquet", ids, [0] * 4, mixed_arrays(4), ex, "p"))
    assert "BYTE_STREAM_SPLIT" in enc["vec.list.element"] and "BYTE_STREAM_SPLIT" in enc["score"]
    # float16 stays readable by DuckDB unless asked; integers never split.
    assert "BYTE_STREAM_SPLIT" not in enc["map.list.element"]
    assert "BYTE_STREAM_SPLIT" not in enc["dnf.list.element"]
    p = write_features(tmp_path / "b.parquet", ids, [0] * 4, mixed_arrays(4), ex, "p", split_float16=True)
    assert "BYTE_STREAM_SPLIT" in encodings(p)["map.list.element"]
    np.testing.assert_array_equal(read_features([p], "map")[1], mixed_arrays(4)["map"])


def test_metadata_carries_shape_config_and_revision(tmp_path):
    ex = FakeExtractor(FakeConfig(knob=7))
    ids, seeds, a = make(2, "float32")
    p = write_features(tmp_path / "f.parquet", ids, seeds, {"lare": a}, ex, "prod-1", extra={"run": "r"})
    meta = feature_meta(p)
    assert meta["schema"] == "aigi.features.fake"
    assert meta["producer"] == "prod-1"
    assert meta["shapes"] == {"lare": list(SHAPE)}
    assert meta["dtypes"] == {"lare": "float32"}
    assert meta["extractor"] == "fake" and meta["version"] == 2
    assert meta["config"] == {"dtype": "float32", "knob": 7}
    assert meta["model_revision"] == "sha256:abc"
    assert meta["preprocessing"] == {"resize": [8, 8]}
    assert meta["run"] == "r"
