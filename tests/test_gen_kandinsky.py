"""The `kandinsky` family on a tiny random-weight Kandinsky 2.2, against a plain diffusers call."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402
import pickle  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aigi.core.configtools import Invalid  # noqa: E402
from aigi.generators.kandinsky import Kandinsky  # noqa: E402
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
    folder = tmp_path_factory.mktemp("tiny-kandinsky")
    return folder, Kandinsky.tiny(folder, batch_size=2)


@pytest.fixture(scope="module")
def gen(tiny):
    _, cfg = tiny
    g = pickle.loads(pickle.dumps(Kandinsky(cfg)))  # Dask ships it unloaded
    g.load("cpu")
    return g


@pytest.fixture(scope="module")
def plain(tiny):
    from diffusers import KandinskyV22CombinedPipeline

    pipe = KandinskyV22CombinedPipeline.from_pretrained(tiny[0])
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipe.decoder_pipe.scheduler


def reference(plain, prompts: list[str], seeds: list[int], s: Settings) -> list:
    """The bare diffusers call, one image per call, prompt as text, a CPU generator per image."""
    import diffusers
    import torch

    pipe, own = plain
    sched = getattr(diffusers, s.scheduler).from_config(own.config) if s.scheduler else own
    pipe.decoder_pipe.scheduler = sched
    return [
        pipe(
            prompt=p,
            negative_prompt=s.negative_prompt or None,
            num_inference_steps=s.steps,
            guidance_scale=s.guidance,
            width=s.width,
            height=s.height,
            generator=torch.Generator("cpu").manual_seed(x),
        ).images[0]
        for p, x in zip(prompts, seeds, strict=True)
    ]


def gen_images(gen, prompts, seeds, s=BASE):
    return gen.generate(prompts, [None] * len(prompts), seeds, s)


def test_images_have_the_settings_size_and_are_rgb(gen):
    images = gen_images(gen, PROMPTS[:2], SEEDS[:2], st(width=128, height=64))
    assert [im.size for im in images] == [(128, 64)] * 2
    assert all(im.mode == "RGB" for im in images)


def test_same_seed_same_bytes_different_seed_different_image(gen):
    a, b = (encode_png(gen_images(gen, PROMPTS[:1], SEEDS[:1])[0]) for _ in range(2))
    c = encode_png(gen_images(gen, PROMPTS[:1], [SEEDS[0] + 1])[0])
    assert a == b
    assert a != c


@pytest.mark.parametrize("negative", ["", "blurry"])
def test_image_depends_only_on_its_prompt_and_seed(gen, negative):
    s = st(negative_prompt=negative)
    batch = gen_images(gen, PROMPTS, SEEDS, s)  # batch_size 2: crosses a batch boundary
    alone = gen_images(gen, PROMPTS[2:], SEEDS[2:], s)[0]
    assert np.abs(px(batch[2]) - px(alone)).max() <= 2
    first = gen_images(gen, PROMPTS[:1], SEEDS[:1], s)[0]
    assert np.abs(px(batch[0]) - px(first)).max() <= 2
    other = gen_images(gen, [PROMPTS[0], "something else"], [SEEDS[0], 99], s)[0]
    assert np.abs(px(batch[0]) - px(other)).max() <= 2


@pytest.mark.parametrize(
    "s",
    [
        BASE,  # empty negative prompt: diffusers' negative_prompt=None (zero image embedding)
        st(negative_prompt="blurry", guidance=5.0, width=128, height=64),
        st(scheduler="EulerAncestralDiscreteScheduler", negative_prompt="the cat"),
        st(scheduler="DDIMScheduler", steps=4),
        st(scheduler="DPMSolverMultistepScheduler", steps=4),
        st(guidance=1.0, steps=2),  # no decoder guidance
    ],
    ids=["default", "negative", "ancestral", "ddim", "dpm", "no-guidance"],
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
        dict(scheduler="DDIMScheduler"),
        dict(negative_prompt="blurry"),
    ):
        other = px(gen_images(gen, PROMPTS[:1], SEEDS[:1], st(**change))[0])
        assert np.abs(other - base).mean() > 0.5, change


def test_provenance(gen, tiny):
    prov = gen.provenance(BASE)
    assert set(KEYS) <= set(prov)
    assert all(prov[k] not in (None, "") for k in KEYS)
    assert prov["model"] == str(tiny[0]) and prov["safety_checker"] is False
    assert prov["pipeline"] == "KandinskyV22CombinedPipeline"
    assert prov["scheduler"] == "DDPMScheduler"
    other = gen.provenance(st(scheduler="DDIMScheduler"))
    assert other["scheduler"] == "DDIMScheduler"
    assert other["scheduler_config"] != prov["scheduler_config"]


def test_check_config_rejects_what_kandinsky_cannot_use(tiny):
    cfg = tiny[1]
    Kandinsky.check_config(cfg)
    Kandinsky.check_config(dataclasses.replace(cfg, size=((768, 768), (1024, 640))))
    for change, key in (
        (dict(size=(96, 64)), "size"),
        (dict(size=((64, 64), (64, 72))), "size"),
        (dict(scheduler="FlowMatchEulerDiscreteScheduler"), "scheduler"),
        (dict(pipeline="KandinskyV22Pipeline"), "pipeline"),
        (dict(trust_remote_code=True), "trust_remote_code"),
    ):
        with pytest.raises(Invalid) as e:
            Kandinsky.check_config(dataclasses.replace(cfg, **change))
        assert e.value.key == key


def test_unknown_scheduler_and_bad_devices_are_clear_errors(gen, tiny):
    cfg = tiny[1]
    with pytest.raises(ValueError, match="scheduler.*NoSuchScheduler"):
        Kandinsky(dataclasses.replace(cfg, scheduler="NoSuchScheduler")).load("cpu")
    with pytest.raises(ValueError, match="scheduler.*NoSuchScheduler"):
        gen_images(gen, PROMPTS[:1], SEEDS[:1], st(scheduler="NoSuchScheduler"))
    with pytest.raises(ValueError, match='use dtype = "float32" on CPU'):
        Kandinsky(dataclasses.replace(cfg, dtype="float16")).load("cpu")
    with pytest.raises(ValueError, match="auto"):
        Kandinsky(cfg).load("auto")
    with pytest.raises(RuntimeError, match="load"):
        gen_images(Kandinsky(cfg), PROMPTS[:1], SEEDS[:1])
    copy = pickle.loads(pickle.dumps(gen))
    assert copy.config == gen.config and copy.pipe is None
