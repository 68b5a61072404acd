import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aigi.core.configtools import ConfigError, Invalid, build  # noqa: E402
from aigi.features.lare import Lare, LareConfig  # noqa: E402

SEEDS = [11, 22]
ROWS = [{"class_name": "tench"}, {"class_name": None}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_sd")
    # float32 storage, so the math compares at full precision; float16 storage is tested apart.
    cfg = dataclasses.replace(Lare.tiny(folder), storage_dtype="float32")
    ex = Lare(cfg)
    ex.load("cpu")
    return folder, cfg, ex


def images(n=3):
    from PIL import Image

    rng = np.random.default_rng(5)
    sizes = [(80, 60), (64, 64), (50, 90)][:n]  # (width, height), different on purpose
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def loaded(cfg: LareConfig) -> Lare:
    ex = Lare(cfg)
    ex.load("cpu")
    return ex


@pytest.fixture(scope="module")
def ref_models(tiny):
    """The tiny model's parts, loaded here with the libraries, independently of the extractor."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = tiny[0]
    return {
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae").eval(),
        "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet").eval(),
        "text": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder").eval(),
        "tok": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        "scheduler": json.loads((folder / "scheduler" / "scheduler_config.json").read_text()),
    }


def reference(models, pil_images, prompts, seeds, *, t, k, size, posterior="sample", error="squared"):
    """LaRE written out from the method description with the libraries directly."""
    import torch
    from PIL import Image

    vae, unet, text, tok, sc = (models[n] for n in ("vae", "unet", "text", "tok", "scheduler"))
    assert sc["beta_schedule"] == "scaled_linear"
    betas = np.linspace(sc["beta_start"] ** 0.5, sc["beta_end"] ** 0.5, sc["num_train_timesteps"], dtype=np.float64) ** 2
    abar = np.cumprod(1.0 - betas)[t]

    out = []
    with torch.no_grad():
        for im, prompt, seed in zip(pil_images, prompts, seeds, strict=True):
            arr = np.array(im.convert("RGB").resize(size, Image.BICUBIC)).astype(np.float64)
            x = torch.tensor(arr / 127.5 - 1.0, dtype=torch.float32).permute(2, 0, 1)[None]
            g = torch.Generator().manual_seed(seed)
            dist = vae.encode(x).latent_dist
            z0 = dist.sample(generator=g) if posterior == "sample" else dist.mode()
            z0 = z0 * vae.config.scaling_factor
            noise = torch.randn((k, *z0.shape[1:]), generator=g)
            zt = float(np.sqrt(abar)) * z0.expand(k, -1, -1, -1) + float(np.sqrt(1 - abar)) * noise
            ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
            emb = text(ids).last_hidden_state.expand(k, -1, -1)
            pred = unet(zt, t, encoder_hidden_states=emb).sample
            e = (pred - noise) ** 2 if error == "squared" else (pred - noise).abs()
            out.append(e.mean(dim=0))
    return torch.stack(out)


def test_matches_independent_computation(tiny, ref_models):
    import torch

    _, cfg, ex = tiny
    ims = images(2)
    got = ex.extract(ims, ROWS, SEEDS)["lare"]
    prompts = [ex.prompt_for(r) for r in ROWS]
    assert prompts == ["a photo of a tench", "a photo"]
    want = reference(ref_models, ims, prompts, SEEDS, t=cfg.t, k=cfg.ensemble, size=cfg.img_size)
    assert got.dtype == np.float32 and got.shape == (2, 4, 8, 8)
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-5, rtol=1e-4)
    # The prompt matters: the same images under the fallback prompt give a different feature.
    other = reference(ref_models, ims, ["a photo", "a photo"], SEEDS, t=cfg.t, k=cfg.ensemble, size=cfg.img_size)
    assert not torch.allclose(torch.from_numpy(got[:1]), other[:1], atol=1e-5, rtol=1e-4)


def test_seed_controls_randomness(tiny):
    _, _, ex = tiny
    ims = images(2)
    a = ex.extract(ims, ROWS, SEEDS)["lare"]
    b = ex.extract(ims, ROWS, SEEDS)["lare"]
    c = ex.extract(ims, ROWS, [12, 23])["lare"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_posterior_mode_and_abs_error_match_reference(tiny, ref_models):
    import torch

    _, cfg, _ = tiny
    ims = images(2)
    prompts = ["a photo of a tench", "a photo"]
    for kw in ({"posterior": "mode"}, {"error": "abs"}):
        ex = loaded(dataclasses.replace(cfg, **kw))
        got = ex.extract(ims, ROWS, SEEDS)["lare"]
        want = reference(ref_models, ims, prompts, SEEDS, t=cfg.t, k=cfg.ensemble, size=cfg.img_size, **kw)
        assert torch.allclose(torch.from_numpy(got), want, atol=1e-5, rtol=1e-4), kw
        if kw == {"posterior": "mode"}:
            # No posterior draw, but the ensemble noise still follows the seed.
            assert not np.allclose(got, ex.extract(ims, ROWS, [12, 23])["lare"])


def test_chunked_batch_equals_one_by_one(tiny):
    _, cfg, ex = tiny
    ims = images(3)
    rows = [{"class_name": "tench"}, {}, {"class_name": "goldfish"}]
    seeds = [1, 2, 3]
    chunked = loaded(dataclasses.replace(cfg, batch_size=2)).extract(ims, rows, seeds)["lare"]
    single = np.concatenate([ex.extract([im], [r], [s])["lare"] for im, r, s in zip(ims, rows, seeds, strict=True)])
    assert chunked.shape == (3, 4, 8, 8)
    np.testing.assert_allclose(chunked, single, atol=1e-5, rtol=1e-4)


def test_columns_match_output(tiny):
    _, cfg, ex = tiny
    assert Lare(cfg).columns() == ex.columns()  # the pre-load assumption holds for SD latents
    out = ex.extract(images(1), ROWS[:1], SEEDS[:1])["lare"]
    (shape, dtype), = ex.columns().values()
    assert out.shape[1:] == shape and out.dtype == np.dtype(dtype)
    rect = LareConfig(img_size=(64, 32))
    assert Lare(rect).columns()["lare"][0] == (4, 4, 8)  # [width, height] -> (C, h/8, w/8)


def test_float16_storage(tiny):
    _, cfg, ex = tiny
    half = loaded(dataclasses.replace(cfg, storage_dtype="float16"))
    ims = images(2)
    a = half.extract(ims, ROWS, SEEDS)["lare"]
    assert a.dtype == np.float16
    np.testing.assert_array_equal(a, ex.extract(ims, ROWS, SEEDS)["lare"].astype(np.float16))


def test_prompt_modes(tiny):
    _, cfg, _ = tiny
    fixed = Lare(dataclasses.replace(cfg, prompt_mode="fixed", fixed_prompt="an image"))
    assert fixed.prompt_for({"class_name": "tench"}) == "an image"
    tmpl = Lare(dataclasses.replace(cfg, prompt_template="{class}, photo", fallback_prompt=""))
    assert tmpl.prompt_for({"class_name": "tench"}) == "tench, photo"
    assert tmpl.prompt_for({"class_name": ""}) == ""
    assert tmpl.prompt_for({}) == ""


def test_revision_recorded(tiny):
    _, _, ex = tiny
    assert ex.model_revision().startswith("sha256:")


def test_bad_inputs(tiny):
    _, cfg, ex = tiny
    with pytest.raises(ValueError, match="match"):
        ex.extract(images(2), ROWS, SEEDS[:1])
    with pytest.raises(RuntimeError, match="load"):
        Lare(cfg).extract(images(1), ROWS[:1], SEEDS[:1])


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"t": -1}, "t"),
        ({"t": 1000}, "t"),
        ({"ensemble": 0}, "ensemble"),
        ({"prompt_template": "a photo of a [CLS]"}, "prompt_template"),
        ({"img_size": (250, 256)}, "img_size"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_config_validation(kw, key):
    with pytest.raises(Invalid) as e:
        LareConfig(**kw)
    assert e.value.key == key


def test_config_from_toml_table_names_key():
    cfg = build(LareConfig, {"t": 280, "img_size": [512, 512]}, "features.lare")
    assert cfg.t == 280 and cfg.img_size == (512, 512)
    with pytest.raises(ConfigError, match="features.lare.ensemble"):
        build(LareConfig, {"ensemble": 0}, "features.lare")
    with pytest.raises(ConfigError, match="features.lare.posterior"):
        build(LareConfig, {"posterior": "mean"}, "features.lare")


def test_fingerprint_ignores_batch_size_and_device(tiny):
    _, cfg, _ = tiny
    base = Lare(cfg).fingerprint()
    assert Lare(dataclasses.replace(cfg, batch_size=1, device="cpu")).fingerprint() == base
    assert Lare(dataclasses.replace(cfg, t=100)).fingerprint() != base


def test_t_beyond_model_schedule_fails_at_load(tiny, tmp_path):
    import shutil

    folder = shutil.copytree(tiny[0], tmp_path / "short")
    sched = folder / "scheduler" / "scheduler_config.json"
    sched.write_text(json.dumps({**json.loads(sched.read_text()), "num_train_timesteps": 100}))
    ex = Lare(dataclasses.replace(tiny[1], model=str(folder), t=200))
    with pytest.raises(Invalid, match="num_train_timesteps"):
        ex.load("cpu")


def test_text_embedding_cache_is_bounded(tiny, monkeypatch):
    import aigi.features.lare as lare_mod

    _, cfg, _ = tiny
    monkeypatch.setattr(lare_mod, "EMBED_CACHE_SIZE", 2)
    ex = loaded(cfg)
    rows = [{"class_name": c} for c in ("tench", "goldfish", "volcano")]
    ims = images(3)
    first = ex.extract(ims, rows, [1, 2, 3])["lare"]
    assert len(ex._emb_cache) == 2  # three prompts seen, two kept
    # An evicted prompt is recomputed, not lost: the features do not change.
    np.testing.assert_array_equal(ex.extract(ims, rows, [1, 2, 3])["lare"], first)
    assert len(ex._emb_cache) == 2
