import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aigi.core.configtools import ConfigError, Invalid, build  # noqa: E402
from aigi.features.dire import Dire, DireConfig  # noqa: E402

SEEDS = [11, 22]
ROWS = [{}, {}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_adm")
    cfg = dataclasses.replace(Dire.tiny(folder), encoding="faithful")  # the default encoding
    return folder, cfg, loaded(cfg)


@pytest.fixture(scope="module")
def ref(tiny):
    """The tiny model loaded here with diffusers, independently of the extractor."""
    from diffusers import DDPMScheduler, UNet2DModel

    folder = tiny[0]
    return {
        "unet": UNet2DModel.from_pretrained(folder).eval(),
        "abar": DDPMScheduler.from_pretrained(folder).alphas_cumprod.double(),
    }


def loaded(cfg: DireConfig) -> Dire:
    ex = Dire(cfg)
    ex.load("cpu")
    return ex


def images(n=3, seed=5):
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(40, 30), (16, 16), (25, 45)][:n]  # (width, height), different on purpose
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def ref_pixels(pil_images, size):
    """Short side to `size` (bicubic, after BOX halving), center crop, [-1, 1] (methods.md §5.2)."""
    import torch
    from PIL import Image

    out = []
    for im in pil_images:
        im = im.convert("RGB")
        while min(im.size) >= 2 * size:
            im = im.resize((im.size[0] // 2, im.size[1] // 2), Image.BOX)
        w, h = im.size
        k = size / min(w, h)
        im = im.resize((round(w * k), round(h * k)), Image.BICUBIC)
        left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
        arr = np.array(im.crop((left, top, left + size, top + size)), dtype=np.float64)
        out.append(torch.tensor(arr / 127.5 - 1.0, dtype=torch.float32).permute(2, 0, 1))
    return torch.stack(out)


def reference(ref, pil_images, *, size, steps, clip=True):
    """DIRE written out from the §5.3 equations: DDIM inversion, then DDIM sampling, |x0 − recon|."""
    import torch

    unet, abar_all = ref["unet"], ref["abar"]
    ts = [i * (1000 // steps) for i in range(steps)]
    abar = [abar_all[t] for t in ts]
    x0 = ref_pixels(pil_images, size)

    def move(x, t, a, a_to):
        eps = unet(x, t).sample[:, :3]
        x0hat = (x - (1 - a).sqrt() * eps) / a.sqrt()
        if clip:
            x0hat = x0hat.clamp(-1, 1)
        eps = (x / a.sqrt() - x0hat) / (1 / a - 1).sqrt()
        return (a_to.sqrt() * x0hat + (1 - a_to).sqrt() * eps).float()

    zero, one = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    with torch.no_grad():
        x = x0
        for i in range(steps):
            x = move(x, ts[i], abar[i], abar[i + 1] if i < steps - 1 else zero)
        for i in reversed(range(steps)):
            x = move(x, ts[i], abar[i], abar[i - 1] if i > 0 else one)
    return (x0 - x).abs()


def as_u8(dire):
    """The released encoding: trunc(clamp(DIRE·255/2, 0, 255))."""
    return np.clip(dire.numpy() * np.float32(255) / np.float32(2), 0, 255).astype(np.uint8)


# Inverting to t = 950 divides by √ᾱ ≈ 0.01, so float32 round-off (operation order, batch size)
# grows to ~1e-4 in the reconstruction; the mistakes these tests catch are ~1e-1.
ATOL = 2e-3


def test_matches_explicit_ddim_loop(tiny, ref):
    _, cfg, ex = tiny
    ims = images(2)
    want = reference(ref, ims, size=cfg.img_size, steps=cfg.steps)
    clean = loaded(dataclasses.replace(cfg, encoding="clean", storage_dtype="float32"))
    got_f = clean.extract(ims, ROWS, SEEDS)["dire"]
    np.testing.assert_allclose(got_f, want.numpy(), atol=ATOL, rtol=0)
    assert 0.05 < got_f.mean() and got_f.max() <= 2.0
    got = ex.extract(ims, ROWS, SEEDS)["dire"]
    assert got.dtype == np.uint8 and got.shape == (2, 3, 16, 16)
    # The faithful bytes are the released encoding of the float map, exactly.
    np.testing.assert_array_equal(got, as_u8(torch_tensor(got_f)))
    diff = np.abs(got.astype(int) - as_u8(want).astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.8


def torch_tensor(a):
    import torch

    return torch.from_numpy(a)


def test_released_twenty_steps_and_no_clip(tiny, ref):
    _, cfg, _ = tiny
    ims = images(1)
    for kw in ({"steps": 20}, {"clip_denoised": False}):
        ex = loaded(dataclasses.replace(cfg, encoding="clean", storage_dtype="float32", **kw))
        steps = kw.get("steps", cfg.steps)
        want = reference(ref, ims, size=cfg.img_size, steps=steps, clip=kw.get("clip_denoised", True))
        got = ex.extract(ims, ROWS[:1], SEEDS[:1])["dire"]
        np.testing.assert_allclose(got, want.numpy(), atol=ATOL, rtol=1e-3)
        if kw == {"steps": 20}:
            assert ex._models["timesteps"] == list(range(0, 1000, 50))
    # Clipping x̂₀ matters for this random UNet, so the flag is really applied.
    clipped = reference(ref, ims, size=cfg.img_size, steps=cfg.steps)
    unclipped = reference(ref, ims, size=cfg.img_size, steps=cfg.steps, clip=False)
    assert not np.allclose(clipped.numpy(), unclipped.numpy(), atol=1e-2)


def test_preprocessing_box_halving_then_bicubic_crop():
    from PIL import Image

    rng = np.random.default_rng(0)
    big = Image.fromarray(rng.integers(0, 256, (530, 600, 3), dtype=np.uint8))  # 600×530
    got = Dire(DireConfig()).preprocess(big, {})
    # Shorter side 530 ≥ 512: halved once with BOX to 300×265, then bicubic to 290×256, crop.
    half = big.resize((300, 265), Image.BOX)
    want = np.array(half.resize((290, 256), Image.BICUBIC))[:, 17:273]
    assert got.shape == (3, 256, 256) and got.dtype == np.float32
    np.testing.assert_array_equal(got, (want.astype(np.float32) / 127.5 - 1).transpose(2, 0, 1))
    direct = np.array(big.resize((290, 256), Image.BICUBIC))[:, 17:273]
    assert not np.array_equal(want, direct)  # the halving is observable
    # Shorter side 511 < 512: no halving, straight to bicubic.
    small = Image.fromarray(rng.integers(0, 256, (600, 511, 3), dtype=np.uint8))  # 511×600
    want = np.array(small.resize((256, round(600 * 256 / 511)), Image.BICUBIC))
    top = (want.shape[0] - 256) // 2
    np.testing.assert_array_equal(
        Dire(DireConfig()).preprocess(small, {}),
        (want[top : top + 256].astype(np.float32) / 127.5 - 1).transpose(2, 0, 1),
    )


def test_preprocessing_tiny_matches_reference(tiny):
    _, cfg, ex = tiny
    ims = images(3)
    got = np.stack([ex.preprocess(im, {}) for im in ims])
    np.testing.assert_allclose(got, ref_pixels(ims, cfg.img_size).numpy(), atol=1e-6)


def test_deterministic_and_image_dependent(tiny):
    _, cfg, ex = tiny
    ims = images(2)
    a = ex.extract(ims, ROWS, SEEDS)["dire"]
    b = ex.extract(ims, ROWS, [1, 2])["dire"]  # seeds are unused: DIRE has no randomness
    assert a.tobytes() == b.tobytes()
    c = ex.extract(images(2, seed=6), ROWS, SEEDS)["dire"]
    assert (a != c).mean() > 0.1


def test_chunked_batch_equals_one_by_one(tiny):
    _, cfg, _ = tiny
    ims, rows, seeds = images(3), [{}, {}, {}], [1, 2, 3]
    for enc in ("clean", "faithful"):
        base = dataclasses.replace(cfg, encoding=enc, storage_dtype="float32")
        chunked = loaded(dataclasses.replace(base, batch_size=2)).extract(ims, rows, seeds)["dire"]
        one = loaded(base)
        single = np.concatenate([one.extract([im], [r], [s])["dire"] for im, r, s in zip(ims, rows, seeds, strict=True)])
        assert chunked.shape == (3, 3, 16, 16)
        if enc == "clean":
            np.testing.assert_allclose(chunked, single, atol=ATOL, rtol=0)
        else:  # the amplified round-off may move a rare uint8 level by one
            diff = np.abs(chunked.astype(int) - single.astype(int))
            assert diff.max() <= 1 and (diff == 0).mean() > 0.98


def test_columns_match_output_and_empty_batch(tiny):
    _, cfg, ex = tiny
    for kw in ({}, {"encoding": "clean"}):
        e = loaded(dataclasses.replace(cfg, **kw)) if kw else ex
        (shape, dtype), = Dire(e.config).columns().values()
        out = e.extract(images(1), ROWS[:1], SEEDS[:1])["dire"]
        assert out.shape[1:] == shape and out.dtype == np.dtype(dtype)
        empty = e.compute(np.zeros((0, *shape), np.float32), [], [])["dire"]
        assert empty.shape == (0, *shape) and empty.dtype == np.dtype(dtype)
    assert Dire(DireConfig()).columns() == {"dire": ((3, 256, 256), "uint8")}
    assert Dire(DireConfig(encoding="clean")).columns() == {"dire": ((3, 256, 256), "float16")}


def test_revision_recorded_and_fingerprint(tiny):
    _, cfg, ex = tiny
    assert ex.model_revision().startswith("sha256:")
    base = Dire(cfg).fingerprint()
    assert Dire(dataclasses.replace(cfg, batch_size=1, device="cpu")).fingerprint() == base
    assert Dire(dataclasses.replace(cfg, steps=10)).fingerprint() != base
    assert Dire(dataclasses.replace(cfg, clip_denoised=False)).fingerprint() != base


def test_bad_inputs(tiny):
    _, cfg, ex = tiny
    with pytest.raises(ValueError, match="match"):
        ex.extract(images(2), ROWS, SEEDS[:1])
    with pytest.raises(RuntimeError, match="load"):
        Dire(cfg).extract(images(1), ROWS[:1], SEEDS[:1])
    for kw, key in (({"steps": 999}, "steps"), ({"steps": 1001}, "steps"), ({"img_size": 15}, "img_size")):
        with pytest.raises(Invalid) as e:
            loaded(dataclasses.replace(cfg, **kw))
        assert e.value.key == key


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"steps": 0}, "steps"),
        ({"encoding": "png"}, "encoding"),
        ({"img_size": -1}, "img_size"),
        ({"layout": "flat"}, "layout"),
        ({"dtype": "int8"}, "dtype"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "gpu"}, "device"),
    ],
)
def test_config_validation(kw, key):
    with pytest.raises(Invalid) as e:
        DireConfig(**kw)
    assert e.value.key == key


def test_config_defaults_and_toml():
    d = DireConfig()
    assert (d.model, d.steps, d.clip_denoised, d.encoding, d.img_size, d.dtype, d.batch_size) == (
        "google/ddpm-bedroom-256", 20, True, "faithful", 256, "float32", 8
    )
    cfg = build(DireConfig, {"steps": 10, "dtype": "float16"}, "features.dire")
    assert cfg.steps == 10 and cfg.dtype == "float16"
    with pytest.raises(ConfigError, match="features.dire.clip_denoised"):
        build(DireConfig, {"clip_denoised": "yes"}, "features.dire")
