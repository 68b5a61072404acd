import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aigi.core.configtools import ConfigError, Invalid, build  # noqa: E402
from aigi.features.dnf import Dnf, DnfConfig  # noqa: E402

SEEDS = [11, 22]
ROWS = [{}, {"class_name": "bedroom"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_ddpm")
    cfg = Dnf.tiny(folder)
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


def loaded(cfg: DnfConfig) -> Dnf:
    ex = Dnf(cfg)
    ex.load("cpu")
    return ex


def images(n=3, seed=5):
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(40, 30), (16, 16), (25, 45)][:n]  # (width, height), different on purpose
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def ref_pixels(pil_images, size):
    """Released preprocessing: read as uint8 CHW tensor, float, tensor Resize bicubic AA, [-1, 1]."""
    import torch
    from torchvision import transforms

    resize = transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True)
    out = []
    for im in pil_images:
        t = torch.tensor(np.array(im.convert("RGB"))).permute(2, 0, 1).float()
        out.append(resize(t) / 255.0 * 2.0 - 1.0)
    return torch.stack(out)


def faithful(eps):
    """torchvision.utils.save_image's uint8: floor(clamp(255·ε + 0.5, 0, 255))."""
    return np.floor(np.clip(eps.numpy() * np.float32(255) + np.float32(0.5), 0, 255)).astype(np.uint8)


def assert_u8_close(got, want):
    """uint8 equal up to rare one-level flips where float round-off crosses a quantization step."""
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999


def test_preprocessing_is_released_tensor_resize(tiny):
    _, cfg, ex = tiny
    ims = images(3)
    got = np.stack([ex.preprocess(im, {}) for im in ims])
    assert got.dtype == np.float32 and got.shape == (3, 3, 16, 16)
    np.testing.assert_allclose(got, ref_pixels(ims, cfg.img_size).numpy(), atol=1e-6)
    # A squash, not a crop: the 40×30 image's full width is kept.
    assert Dnf(DnfConfig()).preprocess(ims[0], {}).shape == (3, 256, 256)


def test_released_is_one_eps_at_t0(tiny, ref):
    import torch

    _, cfg, ex = tiny
    ims = images(2)
    with torch.no_grad():
        eps = ref["unet"](ref_pixels(ims, cfg.img_size), 0).sample
    got = ex.extract(ims, ROWS, SEEDS)["dnf"]
    assert got.dtype == np.uint8 and got.shape == (2, 3, 16, 16)
    assert_u8_close(got, faithful(eps))
    # The negative half of ε is gone and the rest is there.
    assert (got == 0).mean() > 0.2 and (got > 0).mean() > 0.2
    clean = loaded(dataclasses.replace(cfg, encoding="clean", storage_dtype="float32"))
    np.testing.assert_allclose(clean.extract(ims, ROWS, SEEDS)["dnf"], eps.numpy(), atol=1e-5, rtol=1e-4)


def test_inversion_mode_matches_explicit_ddim_loop(tiny, ref):
    import torch

    _, cfg, _ = tiny
    steps = 4
    ex = loaded(dataclasses.replace(cfg, mode="inversion", inversion_steps=steps, encoding="clean", storage_dtype="float32"))
    ims = images(2)
    ts = [int(v) for v in np.linspace(0, 1000, steps + 1)][:-1]
    assert ts == [0, 250, 500, 750]
    abar = ref["abar"]
    x = ref_pixels(ims, cfg.img_size)
    total = torch.zeros_like(x)
    with torch.no_grad():
        for i, t in enumerate(ts):
            eps = ref["unet"](x, t).sample
            total += eps
            if i + 1 < len(ts):
                a, a_next = abar[t], abar[ts[i + 1]]
                x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
                x = (a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps).float()
        want = total / len(ts)
        at_t0 = ref["unet"](ref_pixels(ims, cfg.img_size), 0).sample
    got = ex.extract(ims, ROWS, SEEDS)["dnf"]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=1e-4)
    assert not np.allclose(got, at_t0.numpy(), atol=1e-2)  # more than the released single step


def test_deterministic_and_image_dependent(tiny):
    _, cfg, ex = tiny
    ims = images(2)
    a = ex.extract(ims, ROWS, SEEDS)["dnf"]
    b = ex.extract(ims, ROWS, [1, 2])["dnf"]  # seeds are unused: DNF has no randomness
    assert a.tobytes() == b.tobytes()
    c = ex.extract(images(2, seed=6), ROWS, SEEDS)["dnf"]
    assert (a != c).mean() > 0.1


def test_chunked_batch_equals_one_by_one(tiny):
    _, cfg, _ = tiny
    ims, rows, seeds = images(3), [{}, {}, {}], [1, 2, 3]
    for enc in ("faithful", "clean"):
        base = dataclasses.replace(cfg, encoding=enc, storage_dtype="float32")
        chunked = loaded(dataclasses.replace(base, batch_size=2)).extract(ims, rows, seeds)["dnf"]
        one = loaded(base)
        single = np.concatenate([one.extract([im], [r], [s])["dnf"] for im, r, s in zip(ims, rows, seeds, strict=True)])
        assert chunked.shape == (3, 3, 16, 16)
        if enc == "clean":
            np.testing.assert_allclose(chunked, single, atol=1e-5, rtol=1e-4)
        else:
            assert_u8_close(chunked, single)


def test_columns_match_output_and_empty_batch(tiny):
    _, cfg, ex = tiny
    for kw in ({}, {"encoding": "clean"}, {"encoding": "clean", "storage_dtype": "float32"}):
        e = loaded(dataclasses.replace(cfg, **kw))
        (shape, dtype), = Dnf(e.config).columns().values()
        out = e.extract(images(1), ROWS[:1], SEEDS[:1])["dnf"]
        assert out.shape[1:] == shape and out.dtype == np.dtype(dtype)
        empty = e.compute(np.zeros((0, *shape), np.float32), [], [])["dnf"]
        assert empty.shape == (0, *shape) and empty.dtype == np.dtype(dtype)
    assert Dnf(DnfConfig()).columns() == {"dnf": ((3, 256, 256), "uint8")}
    assert Dnf(DnfConfig(encoding="clean")).columns() == {"dnf": ((3, 256, 256), "float16")}


def test_pipeline_layout_and_learned_sigma(tiny, tmp_path):
    """unet/ + scheduler/ folders load with layout="pipeline"; a 6-channel UNet gives its first 3."""
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from aigi.generators.tiny import tiny_pixel_unet

    flat = tiny_pixel_unet(tmp_path / "flat", seed=9, sample_size=16, learn_sigma=True)
    unet = UNet2DModel.from_pretrained(flat).eval()
    assert unet.config.out_channels == 6
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    DDPMScheduler.from_pretrained(flat).save_pretrained(tmp_path / "pipe" / "scheduler")
    cfg = dataclasses.replace(tiny[1], model=str(tmp_path / "pipe"), layout="pipeline", encoding="clean", storage_dtype="float32")
    ims = images(2)
    with torch.no_grad():
        want = unet(ref_pixels(ims, cfg.img_size), 0).sample[:, :3]
    np.testing.assert_allclose(loaded(cfg).extract(ims, ROWS, SEEDS)["dnf"], want.numpy(), atol=1e-5, rtol=1e-4)
    with pytest.raises(OSError):
        loaded(dataclasses.replace(cfg, layout="root"))


def test_revision_recorded_and_fingerprint(tiny):
    _, cfg, ex = tiny
    assert ex.model_revision().startswith("sha256:")
    base = Dnf(cfg).fingerprint()
    assert Dnf(dataclasses.replace(cfg, batch_size=1, device="cpu")).fingerprint() == base
    assert Dnf(dataclasses.replace(cfg, encoding="clean")).fingerprint() != base
    assert Dnf(dataclasses.replace(cfg, mode="inversion")).fingerprint() != base


def test_bad_inputs(tiny):
    _, cfg, ex = tiny
    with pytest.raises(ValueError, match="match"):
        ex.extract(images(2), ROWS, SEEDS[:1])
    with pytest.raises(RuntimeError, match="load"):
        Dnf(cfg).extract(images(1), ROWS[:1], SEEDS[:1])
    with pytest.raises(Invalid) as e:
        loaded(dataclasses.replace(cfg, img_size=15))  # the UNet downsamples by 2
    assert e.value.key == "img_size"
    with pytest.raises(Invalid) as e:
        loaded(dataclasses.replace(cfg, mode="inversion", inversion_steps=1001))
    assert e.value.key == "inversion_steps"


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"mode": "ddim"}, "mode"),
        ({"encoding": "png"}, "encoding"),
        ({"inversion_steps": 0}, "inversion_steps"),
        ({"img_size": 0}, "img_size"),
        ({"layout": "flat"}, "layout"),
        ({"storage_dtype": "uint8"}, "storage_dtype"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "gpu"}, "device"),
    ],
)
def test_config_validation(kw, key):
    with pytest.raises(Invalid) as e:
        DnfConfig(**kw)
    assert e.value.key == key


def test_config_defaults_and_toml():
    d = DnfConfig()
    assert (d.model, d.mode, d.encoding, d.img_size, d.inversion_steps, d.dtype, d.batch_size) == (
        "google/ddpm-bedroom-256", "released", "faithful", 256, 20, "float32", 16
    )
    cfg = build(DnfConfig, {"mode": "inversion", "encoding": "clean"}, "features.dnf")
    assert cfg.mode == "inversion" and cfg.encoding == "clean"
    with pytest.raises(ConfigError, match="features.dnf.mode"):
        build(DnfConfig, {"mode": "multi"}, "features.dnf")
