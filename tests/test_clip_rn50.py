import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aigi.core.configtools import ConfigError, Invalid, build  # noqa: E402
from aigi.features.clip_rn50 import ClipRn50, ClipRn50Config  # noqa: E402

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_STATS = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
# (width, height) against the tiny crop of 64: both sides padded (the width by more than the
# image itself, so the reflection wraps), both cropped with odd margins, one of each.
SIZES = [(20, 45), (97, 80), (120, 33)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_clip_rn50")
    cfg = ClipRn50.tiny(folder)
    ex = ClipRn50(cfg)
    ex.load("cpu")
    return folder, cfg, ex


@pytest.fixture(scope="module")
def ref_model(tiny):
    """The tiny CLIP rebuilt here from its config and weights file, not through the extractor."""
    import open_clip
    from safetensors.torch import load_file

    folder = tiny[0]
    model_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    model = open_clip.model.CLIP(**model_cfg)
    model.load_state_dict(load_file(str(folder / "open_clip_model.safetensors")))
    return model.eval()


def arrays(sizes=SIZES, seed=5):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]


def pil(arrs):
    from PIL import Image

    return [Image.fromarray(a) for a in arrs]


def reflect101(i: int, n: int) -> int:
    """OpenCV's BORDER_REFLECT_101 source index: mirror about the edge pixel, period 2(n-1)."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i %= period
    return i if i < n else period - i


def ref_pixels(u8, s, stats=IMAGENET, zeros=False):
    """PadIfNeeded(s, s) (centered, extra pixel at bottom/right) -> CenterCrop(s) -> /255 -> norm."""
    h, w = u8.shape[:2]
    top, left = max(s - h, 0) // 2, max(s - w, 0) // 2
    hp, wp = max(h, s), max(w, s)
    y0, x0 = (hp - s) // 2, (wp - s) // 2
    out = np.zeros((s, s, 3), dtype=np.uint8)
    for r in range(s):
        for c in range(s):
            y, x = r + y0 - top, c + x0 - left
            inside = 0 <= y < h and 0 <= x < w
            if zeros and not inside:
                continue
            out[r, c] = u8[reflect101(y, h), reflect101(x, w)]
    mean, std = (np.array(v, dtype=np.float32) for v in stats)
    return ((out.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)


def ref_features(model, pixels):
    """layer3 and the attention pool, through the visual tower's modules one by one."""
    import torch

    v = model.visual
    with torch.no_grad():
        x = torch.from_numpy(np.stack(pixels))
        x = v.act1(v.bn1(v.conv1(x)))
        x = v.act2(v.bn2(v.conv2(x)))
        x = v.act3(v.bn3(v.conv3(x)))
        x = v.avgpool(x)
        f3 = v.layer3(v.layer2(v.layer1(x)))
        g = v.attnpool(v.layer4(f3.clone()))
        # The stepwise pass is open_clip's own image forward.
        torch.testing.assert_close(g, model.encode_image(torch.from_numpy(np.stack(pixels))))
    return f3.numpy(), g.numpy()


def run(ex, arrs, seeds=None):
    seeds = seeds or list(range(len(arrs)))
    return ex.extract(pil(arrs), [{} for _ in arrs], seeds)


def test_preprocess_pads_and_crops_like_albumentations(tiny):
    _, cfg, ex = tiny
    for u8 in arrays():
        got = ex.preprocess(pil([u8])[0], {})
        assert got.dtype == np.float32 and got.shape == (3, 64, 64)
        np.testing.assert_allclose(got, ref_pixels(u8, 64), atol=1e-6, rtol=0)
    # A 1-pixel-wide image, and an image exactly the crop size (taken as is).
    for u8 in arrays([(1, 70), (64, 64)]):
        np.testing.assert_allclose(ex.preprocess(pil([u8])[0], {}), ref_pixels(u8, 64), atol=1e-6, rtol=0)


def test_preprocess_options():
    u8 = arrays([(30, 50)])[0]
    zeros = ClipRn50(ClipRn50Config(image_size=64, pad_mode="zeros"))
    np.testing.assert_allclose(zeros.preprocess(pil([u8])[0], {}), ref_pixels(u8, 64, zeros=True), atol=1e-6, rtol=0)
    clip = ClipRn50(ClipRn50Config(image_size=64, normalization="clip"))
    np.testing.assert_allclose(clip.preprocess(pil([u8])[0], {}), ref_pixels(u8, 64, stats=CLIP_STATS), atol=1e-6, rtol=0)
    # Grayscale input is read as RGB.
    from PIL import Image

    gray = Image.fromarray(u8[..., 0])
    np.testing.assert_allclose(clip.preprocess(gray, {}), ref_pixels(np.repeat(u8[..., :1], 3, axis=2), 64, stats=CLIP_STATS), atol=1e-6, rtol=0)
    assert ClipRn50(ClipRn50Config()).preprocessing()["mean"] == list(IMAGENET[0])
    assert zeros.preprocess_key() != ClipRn50(ClipRn50Config(image_size=64)).preprocess_key()


def test_matches_independent_computation(tiny, ref_model):
    _, cfg, ex = tiny
    ex32 = ClipRn50(dataclasses.replace(cfg, storage_dtype="float32"))
    ex32.load("cpu")
    arrs = arrays()
    got = run(ex32, arrs)
    f3, g = ref_features(ref_model, [ref_pixels(a, 64) for a in arrs])
    assert got["layer3"].shape == (3, 128, 4, 4) and got["pooled"].shape == (3, 32)
    np.testing.assert_allclose(got["layer3"], f3, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(got["pooled"], g, atol=1e-5, rtol=1e-4)
    # The default float16 storage is the float32 result rounded.
    half = run(ex, arrs)
    assert half["layer3"].dtype == np.float16 and half["pooled"].dtype == np.float16
    np.testing.assert_array_equal(half["layer3"], got["layer3"].astype(np.float16))
    np.testing.assert_array_equal(half["pooled"], got["pooled"].astype(np.float16))


def test_deterministic_and_seed_free(tiny):
    _, _, ex = tiny
    a = run(ex, arrays(), [1, 2, 3])
    b = run(ex, arrays(), [7, 8, 9])
    for c in a:
        np.testing.assert_array_equal(a[c], b[c])


def test_changed_image_changes_features(tiny):
    _, _, ex = tiny
    arrs = arrays()
    changed = [a.copy() for a in arrs]
    changed[1][40:50, 40:50] = 255 - changed[1][40:50, 40:50]  # inside the crop of the 97×80 image
    a, b = run(ex, arrs), run(ex, changed)
    for c in a:
        np.testing.assert_array_equal(a[c][[0, 2]], b[c][[0, 2]])
        assert not np.array_equal(a[c][1], b[c][1])


def test_chunked_batch_equals_one_by_one(tiny):
    _, cfg, ex = tiny
    arrs = arrays()
    chunked = ClipRn50(dataclasses.replace(cfg, batch_size=2, storage_dtype="float32"))
    chunked.load("cpu")
    single = ClipRn50(dataclasses.replace(cfg, storage_dtype="float32"))
    single.load("cpu")
    got = run(chunked, arrs)
    ones = [run(single, [a]) for a in arrs]
    for c in got:
        np.testing.assert_allclose(got[c], np.concatenate([o[c] for o in ones]), atol=1e-6, rtol=1e-5)


def test_columns_match_output(tiny):
    _, cfg, ex = tiny
    assert ClipRn50(cfg).columns() == ex.columns()
    out = run(ex, arrays()[:1])
    for c, (shape, dtype) in ex.columns().items():
        assert out[c].shape[1:] == shape and out[c].dtype == np.dtype(dtype)
    assert ClipRn50(ClipRn50Config()).columns() == {
        "layer3": ((1024, 14, 14), "float16"),
        "pooled": ((1024,), "float16"),
    }
    empty = ex.compute(np.zeros((0, 3, 64, 64), np.float32), [], [])
    assert empty["layer3"].shape == (0, 128, 4, 4) and empty["pooled"].shape == (0, 32)
    assert empty["pooled"].dtype == np.float16


def test_revision_and_picklable(tiny):
    import pickle

    _, cfg, ex = tiny
    assert ex.model_revision().startswith("sha256:")
    clone = pickle.loads(pickle.dumps(ClipRn50(cfg)))
    assert clone.config == cfg


def test_hub_id_resolves_from_local_cache(tiny, monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    folder, cfg, ex = tiny
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-rn50"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub = ClipRn50(dataclasses.replace(cfg, model="acme/tiny-rn50"))
    hub.load("cpu")
    assert hub.model_revision() == commit
    arrs = arrays()[:2]
    a, b = run(hub, arrs), run(ex, arrs)
    for c in a:
        np.testing.assert_array_equal(a[c], b[c])
    with pytest.raises(FileNotFoundError, match="acme/absent"):
        ClipRn50(dataclasses.replace(cfg, model="acme/absent")).load("cpu")


def test_folder_without_weights_fails(tiny, tmp_path):
    folder, cfg, _ = tiny
    shutil.copy(folder / "open_clip_config.json", tmp_path / "open_clip_config.json")
    with pytest.raises(FileNotFoundError, match="weight files"):
        ClipRn50(dataclasses.replace(cfg, model=str(tmp_path))).load("cpu")


@pytest.mark.parametrize(
    "kw, key",
    [({"layer3_channels": 64}, "layer3_channels"), ({"embed_dim": 1024}, "embed_dim"), ({"image_size": 96}, "image_size")],
)
def test_shape_keys_checked_at_load(tiny, kw, key):
    cfg = dataclasses.replace(tiny[1], **kw)
    with pytest.raises(Invalid) as e:
        ClipRn50(cfg).load("cpu")
    assert e.value.key == key


def test_missing_open_clip_says_how_to_install(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes `import open_clip` fail
    with pytest.raises(ImportError, match="pip install open_clip_torch"):
        ClipRn50(tiny[1]).load("cpu")


def test_bad_inputs(tiny):
    _, cfg, ex = tiny
    with pytest.raises(ValueError, match="match"):
        ex.extract(pil(arrays()[:2]), [{}], [0])
    with pytest.raises(ValueError, match="shape"):
        ex.compute(np.zeros((1, 3, 32, 32), np.float32), [{}], [0])
    with pytest.raises(RuntimeError, match="load"):
        run(ClipRn50(cfg), arrays()[:1])


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"model": ""}, "model"),
        ({"model": "hf-hub:timm/resnet50_clip.openai"}, "model"),
        ({"image_size": 200}, "image_size"),
        ({"image_size": 0}, "image_size"),
        ({"layer3_channels": 0}, "layer3_channels"),
        ({"embed_dim": -1}, "embed_dim"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "gpu"}, "device"),
    ],
)
def test_config_validation(kw, key):
    with pytest.raises(Invalid) as e:
        ClipRn50Config(**kw)
    assert e.value.key == key


def test_config_from_toml_table_names_key():
    cfg = build(ClipRn50Config, {"image_size": 256, "batch_size": 8}, "features.clip_rn50")
    assert cfg.image_size == 256 and ClipRn50(cfg).columns()["layer3"][0] == (1024, 16, 16)
    with pytest.raises(ConfigError, match="features.clip_rn50.image_size"):
        build(ClipRn50Config, {"image_size": 100}, "features.clip_rn50")
    with pytest.raises(ConfigError, match="features.clip_rn50.pad_mode"):
        build(ClipRn50Config, {"pad_mode": "reflect"}, "features.clip_rn50")


def test_fingerprint_ignores_batch_size_and_device(tiny):
    _, cfg, _ = tiny
    base = ClipRn50(cfg).fingerprint()
    assert ClipRn50(dataclasses.replace(cfg, batch_size=1, device="cpu")).fingerprint() == base
    assert ClipRn50(dataclasses.replace(cfg, normalization="clip")).fingerprint() != base
