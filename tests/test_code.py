import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402
import pickle  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aigi.core.configtools import ConfigError, Invalid, build  # noqa: E402
from aigi.features.code import Code, CodeConfig  # noqa: E402

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
# (width, height): larger than the crop; smaller in both sides (padded); smaller in one side only;
# odd margins (torchvision's rounding of the crop offset).
SIZES = [(48, 40), (20, 27), (30, 45), (37, 61)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_code")
    cfg = dataclasses.replace(Code.tiny(folder), storage_dtype="float32")
    return folder, cfg, loaded(cfg)


@pytest.fixture(scope="module")
def ref_model(tiny):
    """The tiny ViT loaded here with transformers directly (pooler included, as saved)."""
    from transformers import ViTModel

    return ViTModel.from_pretrained(tiny[0]).eval()


def loaded(cfg: CodeConfig) -> Code:
    ex = Code(cfg)
    ex.load("cpu")
    return ex


def images(sizes=SIZES, seed=5):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def reference_tensor(pil_images, policy, crop, resize):
    """The released pipelines, written with torchvision transforms."""
    import torch
    from torchvision import transforms as T

    steps = [T.CenterCrop(crop), T.ToTensor(), T.Normalize(MEAN, STD)]
    if policy == "resize_crop":
        steps.insert(0, T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC))
    tf = T.Compose(steps)
    return torch.stack([tf(im.convert("RGB")) for im in pil_images])


def reference_cls(model, x):
    import torch

    with torch.no_grad():
        return model(pixel_values=x).last_hidden_state[:, 0, :].numpy()


@pytest.mark.parametrize("policy", ["crop", "resize_crop"])
def test_matches_independent_computation(tiny, ref_model, policy):
    _, cfg, _ = tiny
    ex = loaded(dataclasses.replace(cfg, preprocess=policy))
    ims = images()
    x = reference_tensor(ims, policy, cfg.crop_size, cfg.resize_size)
    pre = np.stack([ex.preprocess(im, {}) for im in ims])
    assert pre.dtype == np.float32 and pre.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(pre, x.numpy(), rtol=0, atol=1e-6)
    got = ex.extract(ims, [{}] * 4, [0] * 4)["code"]
    assert got.shape == (4, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_cls(ref_model, x), rtol=1e-4, atol=1e-5)


def test_crop_pads_small_images_with_zeros_before_normalization(tiny):
    _, cfg, ex = tiny
    (im,) = images([(20, 27)])  # 12 columns and 5 rows missing from a 32 crop
    pre = ex.preprocess(im, {})
    pad_value = (0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    # Left/top get floor(missing / 2): columns 0..5 and 26..31, rows 0..1 and 29..31.
    for region in (pre[:, :, :6], pre[:, :, 26:], pre[:, :2, :], pre[:, 29:, :]):
        np.testing.assert_allclose(region, np.broadcast_to(pad_value[:, None, None], region.shape), atol=1e-6)
    inner = np.asarray(im, np.float32).transpose(2, 0, 1) / 255
    inner = (inner - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[:, None, None]
    np.testing.assert_allclose(pre[:, 2:29, 6:26], inner, atol=1e-6)
    # resize_crop scales the same image up instead: no padding.
    rc = Code(dataclasses.replace(cfg, preprocess="resize_crop")).preprocess(im, {})
    assert not np.allclose(rc[:, :, :6], pad_value[:, None, None])


def test_deterministic_and_seed_free(tiny):
    _, _, ex = tiny
    ims = images()
    a = ex.extract(ims, [{}] * 4, [1, 2, 3, 4])["code"]
    b = ex.extract(ims, [{}] * 4, [9, 8, 7, 6])["code"]
    np.testing.assert_array_equal(a, b)


def test_changed_image_changes_feature(tiny):
    _, _, ex = tiny
    ims = images()
    other = images(seed=6)
    a = ex.extract(ims[:1], [{}], [0])["code"]
    b = ex.extract(other[:1], [{}], [0])["code"]
    assert not np.allclose(a, b, atol=1e-4)


def test_chunked_batch_equals_one_by_one(tiny):
    _, cfg, ex = tiny
    ims = images()
    chunked = loaded(dataclasses.replace(cfg, batch_size=3)).extract(ims, [{}] * 4, [0] * 4)["code"]
    single = np.concatenate([ex.extract([im], [{}], [0])["code"] for im in ims])
    np.testing.assert_allclose(chunked, single, rtol=1e-5, atol=1e-6)


def test_columns_match_output_and_empty_batch(tiny):
    _, cfg, ex = tiny
    assert Code(cfg).columns() == ex.columns() == {"code": ((32,), "float32")}
    assert Code(CodeConfig()).columns() == {"code": ((192,), "float16")}
    out = ex.compute(np.zeros((0, 3, 32, 32), np.float32), [], [])["code"]
    assert out.shape == (0, 32) and out.dtype == np.float32


def test_float16_storage(tiny):
    _, cfg, ex = tiny
    half = loaded(dataclasses.replace(cfg, storage_dtype="float16"))
    ims = images()
    a = half.extract(ims, [{}] * 4, [0] * 4)["code"]
    assert a.dtype == np.float16
    np.testing.assert_array_equal(a, ex.extract(ims, [{}] * 4, [0] * 4)["code"].astype(np.float16))


def test_preprocessing_records_policy(tiny):
    _, cfg, _ = tiny
    crop = Code(cfg)
    rc = Code(dataclasses.replace(cfg, preprocess="resize_crop"))
    assert crop.preprocessing()["policy"] == "crop" and "resize_shorter" not in crop.preprocessing()
    assert rc.preprocessing()["resize_shorter"] == 36
    assert crop.preprocess_key() != rc.preprocess_key()


def test_picklable_before_load_and_revision_recorded(tiny):
    _, cfg, ex = tiny
    assert pickle.loads(pickle.dumps(Code(cfg))).config == cfg
    assert ex.model_revision().startswith("sha256:")


def test_load_checks_dim_and_crop_size(tiny):
    _, cfg, _ = tiny
    with pytest.raises(Invalid) as e:
        Code(dataclasses.replace(cfg, dim=192)).load("cpu")
    assert e.value.key == "dim" and "hidden_size (32)" in str(e.value)
    with pytest.raises(Invalid) as e:
        Code(dataclasses.replace(cfg, crop_size=24, resize_size=36)).load("cpu")
    assert e.value.key == "crop_size"


def test_bad_inputs(tiny):
    _, cfg, ex = tiny
    with pytest.raises(ValueError, match="match"):
        ex.extract(images()[:2], [{}], [0, 1])
    with pytest.raises(RuntimeError, match="load"):
        Code(cfg).extract(images()[:1], [{}], [0])


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"crop_size": 0}, "crop_size"),
        ({"resize_size": 200}, "resize_size"),
        ({"dim": 0}, "dim"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "gpu"}, "device"),
        ({"model": ""}, "model"),
    ],
)
def test_config_validation(kw, key):
    with pytest.raises(Invalid) as e:
        CodeConfig(**kw)
    assert e.value.key == key


def test_config_from_toml_table_names_key():
    cfg = build(CodeConfig, {"preprocess": "resize_crop", "storage_dtype": "float32"}, "features.code")
    assert cfg.preprocess == "resize_crop" and cfg.resize_size == 248 and cfg.crop_size == 224
    with pytest.raises(ConfigError, match="features.code.preprocess"):
        build(CodeConfig, {"preprocess": "resize"}, "features.code")
    with pytest.raises(ConfigError, match="features.code.resize_size"):
        build(CodeConfig, {"resize_size": 100}, "features.code")


def test_fingerprint_ignores_batch_size_and_device(tiny):
    _, cfg, _ = tiny
    base = Code(cfg).fingerprint()
    assert Code(dataclasses.replace(cfg, batch_size=1, device="cpu")).fingerprint() == base
    assert Code(dataclasses.replace(cfg, preprocess="resize_crop")).fingerprint() != base
