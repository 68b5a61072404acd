"""EGRE end to end (LaRE²'s released model): the CLIP RN50 backbone fine-tuned with the head from
images, the LaRE maps from the cache; and the "image" column of a FeatureSet (in memory and from
IMAGES shards). Uses the tiny random open_clip RN50 that the clip_rn50 feature ships (`tiny()`).
"""

from __future__ import annotations

import io
import os
from dataclasses import replace

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from aigi.detectors.base import STATE, load_detector  # noqa: E402
from aigi.detectors.data import IMAGE, FeatureSet  # noqa: E402
from aigi.detectors.egre import EgreConfig, EgreHead, load_clip_visual  # noqa: E402
from aigi.features.clip_rn50 import NORMALIZATIONS, ClipRn50  # noqa: E402

LARE = "lare.lare"
SIDE = 72  # > the tiny model's 64: training crops at random, scoring at the center


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return ClipRn50.tiny(tmp_path_factory.mktemp("clip"))


def e2e_config(clip, **kw) -> EgreConfig:
    cfg = replace(EgreHead.tiny()[0], mode="end_to_end", clip_model=clip.model, image_size=clip.image_size)
    return replace(cfg, **{"epochs": 10, "patience": 5, "lr_patience": 2, **kw})


def images(n: int, seed: int, side: int = SIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n real and n generated uint8 images with random LaRE maps: the generated ones carry a
    brighter, red-shifted, 2-px checkerboard texture (the separable signal)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
    base = rng.integers(40, 200, (2 * n, 1, 1, 3)) + rng.normal(0, 20, (2 * n, side, side, 3))
    yy, xx = np.mgrid[:side, :side]
    checker = np.where((yy // 2 + xx // 2) % 2 == 0, 30.0, -30.0)[None, :, :, None] * np.array([1.0, 0.3, 0.3])
    img = np.clip(base + y.reshape(-1, 1, 1, 1) * (checker + np.array([25.0, 0, 0])), 0, 255).astype(np.uint8)
    return img, rng.normal(0, 1, (2 * n, 4, 8, 8)).astype(np.float32), y


def image_set(n: int, seed: int) -> FeatureSet:
    img, lare, y = images(n, seed)
    return FeatureSet.from_arrays({IMAGE: img, LARE: lare}, y)


@pytest.fixture(scope="module")
def fitted(clip):
    train, val, test = image_set(48, 1), image_set(16, 2), image_set(32, 3)
    det = EgreHead(e2e_config(clip))
    assert det.fit(train, val) is det
    return det, test


# ---------------------------------------------------------------- the head


def test_inputs_and_config(clip):
    det = EgreHead(e2e_config(clip))
    assert det.inputs() == [IMAGE, LARE] and det.features() == ["lare"]
    assert EgreHead(EgreConfig()).features() == ["clip_rn50", "lare"]
    assert EgreHead.tiny()[0].mode == "cached"  # the conformance test stays in cached mode


def test_fit_score_save_load(fitted, tmp_path):
    det, test = fitted
    p = det.score(test)
    assert p.shape == (len(test),) and p.dtype == np.float64 and ((p >= 0) & (p <= 1)).all()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(test.labels, p) >= 0.9
    det.save(tmp_path / "d")
    from safetensors.numpy import load_file

    keys = load_file(str(tmp_path / "d" / STATE)).keys()
    assert any(k.startswith("visual.layer3.") for k in keys) and any(k.startswith("egre.") for k in keys)
    assert any(k.endswith("running_mean") for k in keys)  # BatchNorm statistics travel too
    back = load_detector(tmp_path / "d")
    assert isinstance(back, EgreHead) and back.backbone_["arch"]["width"] == 8
    np.testing.assert_array_equal(back.score(test), p)


def test_backbone_is_fine_tuned(fitted, clip):
    det, _ = fitted
    before = load_clip_visual(clip.model, "", clip.image_size)[0].state_dict()
    after = det.module_.visual.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k].cpu())]
    assert any(k.startswith("layer1.") and k.endswith("conv1.weight") for k in changed)
    assert "attnpool.c_proj.weight" in changed


def test_cached_mode_has_no_backbone():
    cfg, shapes = EgreHead.tiny()
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(8, np.int64), np.ones(8, np.int64)]
    data = FeatureSet.from_arrays({c: rng.normal(0, 1, (16, *s)).astype(np.float32) for c, s in shapes.items()}, y)
    det = EgreHead(replace(cfg, epochs=1)).fit(data)
    assert not hasattr(det.module_, "visual") and det.backbone_ == {}
    arrays, values = det.get_state()
    assert not any(k.startswith("visual.") for k in arrays) and "backbone" not in values


def test_same_seed_same_scores(fitted, clip):
    det, test = fitted
    train, val = image_set(48, 1), image_set(16, 2)
    again = EgreHead(e2e_config(clip)).fit(train, val)
    np.testing.assert_array_equal(again.score(test), det.score(test))


def test_training_crop_is_pad_if_needed_then_random_crop(clip):
    det = EgreHead(e2e_config(clip))
    s = clip.image_size
    img = np.random.default_rng(0).integers(0, 256, (s + 16, s - 14, 3), dtype=np.uint8)
    got = det.pixels(img, np.random.default_rng(5))
    y0 = int(np.random.default_rng(5).integers(0, 17))
    padded = np.pad(img, ((0, 0), (7, 7), (0, 0)), mode="reflect")  # reflect-101, split 7/7
    mean, std = (np.asarray(v, np.float32) for v in NORMALIZATIONS["imagenet"])
    want = ((padded[y0 : y0 + s].astype(np.float32) / np.float32(255) - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # scoring: exactly the clip_rn50 extractor's preprocessing (so inputs match the cached features)
    from PIL import Image

    ref = ClipRn50(clip).preprocess(Image.fromarray(img), {})
    np.testing.assert_array_equal(det.pixels(img, None), ref)


# ---------------------------------------------------------------- images from IMAGES shards


def write_images(path, ids: list[str], pixels: list[np.ndarray]):
    import pyarrow as pa
    from PIL import Image

    from aigi.manifests.schema import IMAGES
    from aigi.manifests.shards import write_shard

    rows = []
    for i, px in zip(ids, pixels, strict=True):
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, format="PNG")
        row = dict.fromkeys(IMAGES.arrow.names)
        row.update(image_id=i, image={"bytes": buf.getvalue(), "path": f"{i}.png"}, label=0, source="s")
        rows.append(row)
    return write_shard(pa.Table.from_pylist(rows, schema=IMAGES.arrow), path, IMAGES, "test")


def test_with_images_from_shards(fitted, tmp_path):
    det, test = fitted
    img = test.arrays[IMAGE]
    n = len(test)
    # two shards, in another order than the set, plus an image not in the set
    order = np.random.default_rng(0).permutation(n)
    half = order[: n // 2], order[n // 2 :]
    extra = np.zeros((5, 5, 3), np.uint8)
    shards = [
        write_images(tmp_path / "a.parquet", [f"img{k}" for k in half[0]] + ["other"], [img[k] for k in half[0]] + [extra]),
        write_images(tmp_path / "b.parquet", [f"img{k}" for k in half[1]], [img[k] for k in half[1]]),
    ]
    stored = FeatureSet.from_arrays({LARE: test.arrays[LARE]}, test.labels).with_images(shards)
    assert IMAGE in stored.columns and IMAGE in stored.shards
    arr = stored.array(IMAGE)
    assert arr.dtype == object and arr.shape == (n,)
    assert all(np.array_equal(np.asarray(arr[k]), img[k]) for k in range(n))
    seen = np.zeros(n, bool)
    for batch, y, pos in stored.batches([IMAGE, LARE], 7, shuffle=True, seed=3):
        assert all(np.array_equal(np.asarray(im), img[q]) for im, q in zip(batch[IMAGE], pos, strict=True))
        np.testing.assert_array_equal(batch[LARE], test.arrays[LARE][pos])
        np.testing.assert_array_equal(y, test.labels[pos])
        seen[pos] = True
    assert seen.all()
    sub = stored.subset(np.arange(n) % 3 == 0)
    assert all(np.array_equal(np.asarray(a), img[k]) for a, k in zip(sub.array(IMAGE), range(0, n, 3), strict=True))
    # scores from the shards equal scores from the same pixels in memory
    np.testing.assert_array_equal(det.score(stored), det.score(test))
    with pytest.raises(RuntimeError, match="none of the 1 image shards"):
        stored.with_images(shards[:1])
