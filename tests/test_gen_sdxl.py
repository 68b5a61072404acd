"""The `sdxl` family on a tiny random-weight SDXL pipeline, against a plain diffusers call."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402

import pytest  # noqa: E402
from family_checks import (  # noqa: E402
    PROMPTS,
    SEEDS,
    changer,
    check_batch_boundary,
    check_equal_images,
    check_every_setting_changes,
    check_load_errors,
    check_other_scheduler,
    check_pickles_unloaded,
    check_provenance_keys,
    check_rejects,
    check_same_seed_same_bytes,
    check_size_and_rgb,
    count_encoded,
    generate,
    loaded,
    text_pipeline_call,
)

from aigi.core.configtools import Invalid  # noqa: E402
from aigi.generators.sdxl import StableDiffusionXL  # noqa: E402
from aigi.generators.settings import Settings  # noqa: E402

BASE = Settings(steps=3, guidance=3.0, scheduler="", width=64, height=64, negative_prompt="")
st = changer(BASE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sdxl")
    return folder, StableDiffusionXL.tiny(folder, batch_size=2)


@pytest.fixture(scope="module")
def gen(tiny):
    return loaded(StableDiffusionXL, tiny[1])


@pytest.fixture(scope="module")
def plain(tiny):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny[0], add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipe.scheduler


def gen_images(gen, prompts, seeds, s=BASE):
    return generate(gen, prompts, seeds, s)


def test_images_have_the_settings_size_and_are_rgb(gen):
    images = gen_images(gen, PROMPTS[:2], SEEDS[:2], st(width=64, height=48))
    check_size_and_rgb(images, (64, 48), 2)


def test_same_seed_same_bytes_different_seed_different_image(gen):
    check_same_seed_same_bytes(gen, BASE)


def test_image_depends_only_on_its_prompt_and_seed(gen):
    check_batch_boundary(gen, BASE)  # batch_size 2: crosses a batch boundary


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
    check_equal_images(ours, text_pipeline_call(plain, PROMPTS, SEEDS, s), s)


def test_every_setting_changes_the_pixels(gen):
    check_every_setting_changes(
        gen,
        BASE,
        (
            dict(steps=2),
            dict(guidance=6.0),
            dict(scheduler="DPMSolverMultistepScheduler"),
            dict(negative_prompt="blurry"),
        ),
    )


def test_provenance(gen, tiny):
    prov = gen.provenance(BASE)
    check_provenance_keys(prov)
    assert prov["model"] == str(tiny[0]) and prov["safety_checker"] is False
    assert prov["pipeline"] == "StableDiffusionXLPipeline"
    assert prov["scheduler"] == "EulerDiscreteScheduler"
    other = gen.provenance(st(scheduler="DPMSolverMultistepScheduler"))
    check_other_scheduler(prov, other, "DPMSolverMultistepScheduler")


def test_encodes_each_distinct_prompt_once(tiny, monkeypatch):
    g = StableDiffusionXL(tiny[1])
    g.load("cpu")
    encoded = count_encoded(monkeypatch, g.pipe)
    s = st(steps=1, negative_prompt="blurry")
    gen_images(g, ["a cat", "a cat", "a dog", "a cat"], [1, 2, 3, 4], s)
    gen_images(g, ["a dog", "a cat"], [5, 6], s)
    assert sorted(encoded) == ["a cat", "a dog", "blurry"]


def test_check_config_rejects_what_sdxl_cannot_use(tiny):
    cfg = tiny[1]
    StableDiffusionXL.check_config(cfg)
    check_rejects(
        StableDiffusionXL,
        cfg,
        (
            (dict(scheduler="FlowMatchEulerDiscreteScheduler"), "scheduler"),
            (dict(pipeline="StableDiffusionPipeline"), "pipeline"),
            (dict(trust_remote_code=True), "trust_remote_code"),
        ),
    )


def test_unknown_scheduler_and_bad_devices_are_clear_errors(gen, tiny):
    cfg = tiny[1]
    with pytest.raises(Invalid, match="NoSuchScheduler") as e:
        StableDiffusionXL(dataclasses.replace(cfg, scheduler="NoSuchScheduler")).load("cpu")
    assert e.value.key == "scheduler"
    with pytest.raises(ValueError, match="scheduler.*NoSuchScheduler"):
        gen_images(gen, PROMPTS[:1], SEEDS[:1], st(scheduler="NoSuchScheduler"))
    check_load_errors(StableDiffusionXL, cfg, "float16", BASE)
    check_pickles_unloaded(gen)
