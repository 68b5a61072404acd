"""Every registered detector honours the contract of `aigi.detectors.base`, on synthetic features.

Each head's `tiny()` gives a fast config and the per-image shape of each input. The synthetic
features are N(1, 1) in every element (cached features are not centred: LaRE maps are squared
errors, CoDE a LayerNorm output); generated images move by -2 in the first half of the
dimensions (1-D inputs) or channels (maps). Every head must separate that (held-out AUROC >= 0.95),
including the released CoDE one-class SVM, whose odd cubic kernel sees shifts toward the origin
but not arbitrary ones. On pure noise (both classes from the same distribution) the held-out
AUROC must stay within 0.5 +- 0.1 (400 test images: the null standard deviation is ~0.03).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from functools import cache
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from aigi.core.configtools import build  # noqa: E402
from aigi.detectors import registry  # noqa: E402
from aigi.detectors.base import MANIFEST, STATE, Detector, load_detector  # noqa: E402
from aigi.detectors.data import FeatureSet  # noqa: E402
from aigi.detectors.metrics import binary_metrics  # noqa: E402

NAMES = registry.names()
N_TRAIN, N_VAL, N_TEST = 200, 100, 400
SHIFT, OFFSET = -2.0, 1.0


def synthetic(shapes: dict[str, tuple[int, ...]], n: int, seed: int, signal: bool) -> FeatureSet:
    """n images, half real then half generated; float32 features of the given per-image shapes."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n // 2, np.int64), np.ones(n - n // 2, np.int64)]
    arrays = {}
    for column, shape in sorted(shapes.items()):
        x = rng.normal(OFFSET, 1.0, size=(n, *shape)).astype(np.float32)
        if signal:
            x[y == 1, : max(1, shape[0] // 2)] += SHIFT
        arrays[column] = x
    sources = np.where(y == 1, "gen", "real")
    return FeatureSet.from_arrays(arrays, y, ids=np.array([f"{seed}-{i}" for i in range(n)]), sources=sources)


def auroc(data: FeatureSet, score: np.ndarray) -> float:
    return binary_metrics(data.labels, score)["auroc"]


@cache
def _tiny(name: str) -> tuple[type[Detector], object, dict[str, tuple[int, ...]]]:
    cls = registry.get(name)
    config, shapes = cls.tiny()
    return cls, config, {k: tuple(v) for k, v in shapes.items()}


@cache
def _sets(name: str, signal: bool) -> tuple[FeatureSet, FeatureSet, FeatureSet]:
    _, _, shapes = _tiny(name)
    base = 10 if signal else 20
    return tuple(synthetic(shapes, n, base + k, signal) for k, n in enumerate((N_TRAIN, N_VAL, N_TEST)))


@cache
def _fitted(name: str, signal: bool = True) -> tuple[Detector, Detector, np.ndarray]:
    """(the detector, what fit returned, its scores on the test set), fitted once per session."""
    cls, config, _ = _tiny(name)
    train, val, test = _sets(name, signal)
    det = cls(config)
    returned = det.fit(train, val)
    return det, returned, det.score(test)


@pytest.mark.parametrize("name", NAMES)
def test_contract_shape(name):
    cls, config, shapes = _tiny(name)
    assert cls.name == name and isinstance(cls.version, int)
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    assert isinstance(config, cls.Config)
    default = cls.Config()  # every field has a default
    assert build(cls.Config, {}, f"detectors.{name}") == default
    det = cls(config)
    assert sorted(det.inputs()) == sorted(shapes), "tiny() must give a shape for each input"
    assert all("." in i for i in det.inputs())
    assert det.features() == sorted({i.split(".", 1)[0] for i in det.inputs()})
    if "seed" in {f.name for f in dataclasses.fields(cls.Config)}:
        other = dataclasses.replace(config, seed=config.seed + 1)
        assert cls(other).fingerprint("x") != det.fingerprint("x")
    assert det.fingerprint("x") == cls(config).fingerprint("x") != det.fingerprint("y")


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_scores_are_probabilities(name):
    det, returned, score = _fitted(name)
    assert returned is det
    assert isinstance(score, np.ndarray) and score.dtype == np.float64 and score.shape == (N_TEST,)
    assert np.isfinite(score).all() and ((score >= 0) & (score <= 1)).all()


@pytest.mark.parametrize("name", NAMES)
def test_separates_a_known_signal(name):
    _, _, test = _sets(name, True)
    assert auroc(test, _fitted(name)[2]) >= 0.95


@pytest.mark.parametrize("name", NAMES)
def test_chance_on_pure_noise(name):
    _, _, test = _sets(name, False)
    det, _, score = _fitted(name, signal=False)
    assert abs(auroc(test, score) - 0.5) <= 0.1


@pytest.mark.parametrize("name", NAMES)
def test_scores_follow_the_rows(name):
    det, _, score = _fitted(name)
    _, _, test = _sets(name, True)
    order = np.random.default_rng(0).permutation(N_TEST)[:150]
    np.testing.assert_allclose(det.score(test.subset(order)), score[order], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_model(name):
    cls, config, _ = _tiny(name)
    train, val, test = _sets(name, True)
    again = cls(config).fit(train, val).score(test)
    np.testing.assert_array_equal(again, _fitted(name)[2])


@pytest.mark.parametrize("name", NAMES)
def test_save_load_gives_identical_scores_without_unpickling(name, tmp_path: Path, monkeypatch):
    det, _, score = _fitted(name)
    _, _, test = _sets(name, True)
    folder = det.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST, STATE])

    def refuse(*args, **kwargs):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    try:
        import torch

        monkeypatch.setattr(torch, "load", refuse)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    loaded = type(det).load(folder)
    assert type(loaded) is type(det) and loaded.config == det.config
    np.testing.assert_array_equal(loaded.score(test), score)
    np.testing.assert_array_equal(load_detector(folder).score(test), score)
    # the saved state does not depend on the object that saved it: saving again writes the same
    again = loaded.save(tmp_path / "again")
    assert (again / MANIFEST).read_text() == (folder / MANIFEST).read_text()
    assert (again / STATE).read_bytes() == (folder / STATE).read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_one_class_training_is_refused_or_one_class_by_design(name):
    """A head trained on generated images only cannot learn "real vs generated"; it must say so."""
    cls, config, shapes = _tiny(name)
    train = synthetic(shapes, 20, 3, True)
    fakes = train.subset(train.labels == 1)
    with pytest.raises(ValueError):
        cls(config).fit(fakes, None)


@pytest.mark.parametrize("name", NAMES)
def test_score_before_fit_is_an_error(name):
    cls, config, shapes = _tiny(name)
    with pytest.raises(RuntimeError):
        cls(config).score(synthetic(shapes, 4, 4, False))
