"""Conformance over every registered feature: each ships a tiny double and honours the contract.

Method math is tested per feature in its own file (against independent computations); this file
checks what every extractor must do the same way: shapes and dtypes as declared, determinism from
seeds, a changed image changing the feature, batch independence, picklability, identity by
weights content (never by path), and a store round trip.
"""

from __future__ import annotations

import dataclasses
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aigi.features import registry
from aigi.features.store import read_features, write_features

NAMES = registry.names()
ROWS = [{"class_name": "tench", "prompt": "a photo of a tench"}, {"class_name": None, "prompt": ""}, {}]
SEEDS = [7, 8, 9]


def images() -> list[Image.Image]:
    """Different sizes, aspect ratios and modes, as a corpus has them."""
    rng = np.random.default_rng(0)
    a = Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8))
    b = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    c = Image.fromarray(rng.integers(0, 256, (120, 64), dtype=np.uint8)).convert("RGB")
    return [a, b, c]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (model folder, config, loaded extractor), built once for the module."""
    out = {}
    for name in NAMES:
        cls = registry.get(name)
        folder = tmp_path_factory.mktemp(f"tiny-{name}")
        cfg = cls.tiny(folder)
        ex = cls(cfg)
        ex.load("cpu")
        out[name] = (folder, cfg, ex)
    return out


def test_every_feature_of_the_issue_is_registered():
    assert {"lare", "dnf", "code", "dire", "anomaly", "clip_rn50"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_is_frozen_validated_and_fingerprint_ignores_runtime_keys(name):
    cls = registry.get(name)
    cfg = cls.Config()
    assert dataclasses.is_dataclass(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 3  # type: ignore[misc]
    assert {"batch_size", "device"} <= set(cls.Config.NOT_FINGERPRINTED)
    assert cfg.device == "auto" and cfg.batch_size > 0


@pytest.mark.parametrize("name", NAMES)
def test_outputs_match_declared_columns_and_are_deterministic(name, tiny):
    folder, cfg, ex = tiny[name]
    cls = registry.get(name)
    assert cls(cfg).columns() == ex.columns()  # known before load
    ims = images()
    a = ex.extract(ims, ROWS, SEEDS)
    assert set(a) == set(ex.columns())
    for col, (shape, dtype) in ex.columns().items():
        assert a[col].shape == (3, *shape), col
        assert a[col].dtype == np.dtype(dtype), col
        assert np.isfinite(a[col].astype(np.float64)).all(), col
    b = ex.extract(ims, ROWS, SEEDS)
    for col in a:
        np.testing.assert_array_equal(a[col], b[col])
    # Batch independence: the middle image alone gives what it gave inside the batch, up to
    # float round-off that depends on the batch size (convolution algorithms); on 8-bit columns
    # that round-off can move a value across a quantization level (DIRE's inversion to t = 950
    # divides by √ᾱ ≈ 0.01), so they may differ by one level.
    one = ex.extract(ims[1:2], ROWS[1:2], SEEDS[1:2])
    for col in a:
        tol = 1.0 if np.issubdtype(a[col].dtype, np.integer) else 1e-3
        np.testing.assert_allclose(one[col].astype(np.float64), a[col][1:2].astype(np.float64), rtol=1e-3, atol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_changed_image_changes_the_feature(name, tiny):
    _, _, ex = tiny[name]
    ims = images()
    base = ex.extract(ims[:1], ROWS[:1], SEEDS[:1])
    arr = np.asarray(ims[0]).copy()
    arr[10:40, 10:60] = 255 - arr[10:40, 10:60]
    changed = ex.extract([Image.fromarray(arr)], ROWS[:1], SEEDS[:1])
    assert any(not np.array_equal(base[c], changed[c]) for c in base)


@pytest.mark.parametrize("name", NAMES)
def test_preprocess_is_float32_and_empty_batches_work(name, tiny):
    _, _, ex = tiny[name]
    x = ex.preprocess(images()[0], ROWS[0])
    assert x.dtype == np.float32
    empty = ex.compute(np.zeros((0, *x.shape), np.float32), [], [])
    for col, (shape, dtype) in ex.columns().items():
        assert empty[col].shape == (0, *shape) and empty[col].dtype == np.dtype(dtype)


@pytest.mark.parametrize("name", NAMES)
def test_picklable_before_load(name, tiny):
    _, cfg, _ = tiny[name]
    cls = registry.get(name)
    back = pickle.loads(pickle.dumps(cls(cfg)))
    assert back.config == cfg


@pytest.mark.parametrize("name", NAMES)
def test_identity_is_weights_content_not_path(name, tiny, tmp_path):
    folder, cfg, ex = tiny[name]
    cls = registry.get(name)
    assert ex.model_revision()  # recorded after load
    copy = Path(shutil.copytree(folder, tmp_path / "elsewhere" / "model"))
    moved = dataclasses.replace(cfg, model=str(copy))
    assert cls(moved).fingerprint() == cls(cfg).fingerprint()
    # Weights changed in place under the same path: a new fingerprint, so the work is redone.
    weights = max((p for p in copy.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert cls(moved).fingerprint() != cls(cfg).fingerprint()


@pytest.mark.parametrize("name", NAMES)
def test_store_round_trip(name, tiny, tmp_path):
    _, _, ex = tiny[name]
    out = ex.extract(images(), ROWS, SEEDS)
    path = write_features(tmp_path / "s.parquet", ["a", "b", "c"], SEEDS, out, ex, "producer")
    for col in out:
        ids, back = read_features([path], col)
        assert ids == ["a", "b", "c"]
        np.testing.assert_array_equal(back, out[col])
