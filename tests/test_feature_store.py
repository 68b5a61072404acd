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


def test_readable_by_pyarrow_and_datasets(tmp_path):
    import datasets

    ex = FakeExtractor(FakeConfig())
    ids, seeds, a = make(4, "float32")
    p = write_features(tmp_path / "f.parquet", ids, seeds, {"lare": a}, ex, "prod")

    table = pq.read_table(p)
    t = table.schema.field("lare").type
    assert pa.types.is_fixed_size_list(t) and t.list_size == 256
    assert table.column("image_id").to_pylist() == ids
    assert table.column("seed").to_pylist() == seeds

    ds = datasets.load_dataset("parquet", data_files=str(p), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds[2]["image_id"] == ids[2]
    np.testing.assert_array_equal(np.asarray(ds[2]["lare"], dtype=np.float32), a[2].reshape(-1))


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
    assert meta["run"] == "r"
