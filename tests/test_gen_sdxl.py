"""The `sdxl` family on a tiny random-weight SDXL pipeline, against a plain diffusers call."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402
import pickle  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aigi.core.configtools import Invalid  # noqa: E402
from aigi.generators.sdxl import StableDiffusionXL  # noqa: E402
from aigi.generators.settings import Settings  # noqa: E402
from aigi.manifests.imagebytes import encode_png  # noqa: E402

PROMPTS = ["a photo of the cat", "a painting of a house", "the dog on the beach"]
SEEDS = [11, 22, 33]
KEYS = ("model", "revision", "pipeline", "scheduler", "scheduler_config", "dtype", "safety_checker")
BASE = Settings(steps=3, guidance=3.0, scheduler="", width=64, height=64, negative_prompt="")


def st(**changes) -> Settings:
    return dataclasses.replace(BASE, **changes)


def px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sdxl")
    return folder, StableDiffusionXL.tiny(folder, batch_size=2)


@pytest.fixture(scope="module")
def gen(tiny):
    _, cfg = tiny
    g = pickle.loads(pickle.dumps(StableDiffusionXL(cfg)))  # Dask ships it unloaded
    g.load("cpu")
    return g


@pytest.fixture(scope="module")
def plain(tiny):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny[0], add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipe.scheduler


def reference(plain, prompts: list[str], seeds: list[int], s: Settings) -> list:
    """The bare diffusers call: prompts as text, one CPU generator per image."""
    import diffusers
    import torch

    pipe, own = plain
    pipe.scheduler = getattr(diffusers, s.scheduler).from_config(own.config) if s.scheduler else own
    return pipe(
        prompt=prompts,
        negative_prompt=[s.negative_prompt] * len(prompts) if s.negative_prompt else None,
        num_inference_steps=s.steps,
        guidance_scale=s.guidance,
        width=s.width,
        height=s.height,
        generator=[torch.Generator("cpu").manual_seed(x) for x in seeds],
    ).images


def gen_images(gen, prompts, seeds, s=BASE):
    return gen.generate(prompts, [None] * len(prompts), seeds, s)


def test_images_have_the_settings_size_and_are_rgb(gen):
    images = gen_images(gen, PROMPTS[:2], SEEDS[:2], st(width=64, height=48))
    assert [im.size for im in images] == [(64, 48)] * 2
    assert all(im.mode == "RGB" for im in images)


def test_same_seed_same_bytes_different_seed_different_image(gen):
    a, b = (encode_png(gen_images(gen, PROMPTS[:1], SEEDS[:1])[0]) for _ in range(2))
    c = encode_png(gen_images(gen, PROMPTS[:1], [SEEDS[0] + 1])[0])
    assert a == b
    assert a != c


def test_image_depends_only_on_its_prompt_and_seed(gen):
    batch = gen_images(gen, PROMPTS, SEEDS)  # batch_size 2: crosses a batch boundary
    alone = gen_images(gen, PROMPTS[2:], SEEDS[2:])[0]
    assert np.abs(px(batch[2]) - px(alone)).max() <= 2
    first = gen_images(gen, PROMPTS[:1], SEEDS[:1])[0]
    assert np.abs(px(batch[0]) - px(first)).max() <= 2


@pytest.mark.parametrize(
    "s",
    [
        BASE,  # empty negative prompt: zeros, as diffusers' negative_prompt=None
        st(negative_prompt="blurry", guidance=5.0, width=64, height=48),
        st(scheduler="EulerAncestralDiscreteScheduler", negative_prompt="the cat"),
        st(scheduler="DPMSolverMultistepScheduler", steps=4),
        st(guidance=0.0, steps=1),  # sdxl-turbo style: no guidance
    ],
    ids=["default", "negative", "ancestral", "dpm", "turbo"],
)
def test_equals_a_plain_diffusers_call(gen, plain, s):
    ours = gen_images(gen, PROMPTS, SEEDS, s)
    ref = reference(plain, PROMPTS, SEEDS, s)
    for a, b in zip(ours, ref, strict=True):
        assert a.size == (s.width, s.height)
        assert np.abs(px(a) - px(b)).max() <= 2


def test_every_setting_changes_the_pixels(gen):
    base = px(gen_images(gen, PROMPTS[:1], SEEDS[:1])[0])
    for change in (
        dict(steps=2),
        dict(guidance=6.0),
        dict(scheduler="DPMSolverMultistepScheduler"),
        dict(negative_prompt="blurry"),
    ):
        other = px(gen_images(gen, PROMPTS[:1], SEEDS[:1], st(**change))[0])
        assert np.abs(other - base).mean() > 0.5, change


def test_provenance(gen, tiny):
    prov = gen.provenance(BASE)
    assert set(KEYS) <= set(prov)
    assert all(prov[k] not in (None, "") for k in KEYS)
    assert prov["model"] == str(tiny[0]) and prov["safety_checker"] is False
    assert prov["pipeline"] == "StableDiffusionXLPipeline"
    assert prov["scheduler"] == "EulerDiscreteScheduler"
    other = gen.provenance(st(scheduler="DPMSolverMultistepScheduler"))
    assert other["scheduler"] == "DPMSolverMultistepScheduler"
    assert other["scheduler_config"] != prov["scheduler_config"]


def test_encodes_each_distinct_prompt_once(tiny, monkeypatch):
    g = StableDiffusionXL(tiny[1])
    g.load("cpu")
    encoded: list[str] = []
    original = g.pipe.encode_prompt

    def counting(prompt, *args, **kwargs):
        if prompt is not None:  # the pipeline itself calls it with prompt=None
            encoded.extend([prompt] if isinstance(prompt, str) else prompt)
        return original(prompt, *args, **kwargs)

    monkeypatch.setattr(g.pipe, "encode_prompt", counting)
    s = st(steps=1, negative_prompt="blurry")
    gen_images(g, ["a cat", "a cat", "a dog", "a cat"], [1, 2, 3, 4], s)
    gen_images(g, ["a dog", "a cat"], [5, 6], s)
    assert sorted(encoded) == ["a cat", "a dog", "blurry"]


def test_check_config_rejects_what_sdxl_cannot_use(tiny):
    cfg = tiny[1]
    StableDiffusionXL.check_config(cfg)
    for change, key in (
        (dict(scheduler="FlowMatchEulerDiscreteScheduler"), "scheduler"),
        (dict(pipeline="StableDiffusionPipeline"), "pipeline"),
        (dict(trust_remote_code=True), "trust_remote_code"),
    ):
        with pytest.raises(Invalid) as e:
            StableDiffusionXL.check_config(dataclasses.replace(cfg, **change))
        assert e.value.key == key


def test_unknown_scheduler_and_bad_devices_are_clear_errors(gen, tiny):
    cfg = tiny[1]
    with pytest.raises(Invalid, match="NoSuchScheduler") as e:
        StableDiffusionXL(dataclasses.replace(cfg, scheduler="NoSuchScheduler")).load("cpu")
    assert e.value.key == "scheduler"
    with pytest.raises(ValueError, match="scheduler.*NoSuchScheduler"):
        gen_images(gen, PROMPTS[:1], SEEDS[:1], st(scheduler="NoSuchScheduler"))
    with pytest.raises(ValueError, match='use dtype = "float32" on CPU'):
        StableDiffusionXL(dataclasses.replace(cfg, dtype="float16")).load("cpu")
    with pytest.raises(ValueError, match="auto"):
        StableDiffusionXL(cfg).load("auto")
    with pytest.raises(RuntimeError, match="load"):
        gen_images(StableDiffusionXL(cfg), PROMPTS[:1], SEEDS[:1])
    copy = pickle.loads(pickle.dumps(gen))
    assert copy.config == gen.config and copy.pipe is None
