"""The `sd3` family on a tiny random-weight SD3 pipeline, against a plain diffusers call."""

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
from aigi.generators.sd3 import StableDiffusion3  # noqa: E402
from aigi.generators.settings import Settings  # noqa: E402

BASE = Settings(steps=3, guidance=3.0, scheduler="", width=64, height=64, negative_prompt="")
st = changer(BASE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd3")
    return folder, StableDiffusion3.tiny(folder, batch_size=2)


@pytest.fixture(scope="module")
def gen(tiny):
    return loaded(StableDiffusion3, tiny[1])


@pytest.fixture(scope="module")
def plain(tiny):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny[0])
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipe.scheduler


def gen_images(gen, prompts, seeds, s=BASE):
    return generate(gen, prompts, seeds, s)


def test_the_tiny_runs_all_three_text_encoders(gen):
    pipe = gen.pipe
    assert type(pipe.text_encoder_3).__name__ == "T5EncoderModel" and pipe.tokenizer_3 is not None
    assert pipe.vae.config.latent_channels == pipe.transformer.config.in_channels == 16


def test_images_have_the_settings_size_and_are_rgb(gen):
    images = gen_images(gen, PROMPTS[:2], SEEDS[:2], st(width=64, height=32))
    check_size_and_rgb(images, (64, 32), 2)


def test_same_seed_same_bytes_different_seed_different_image(gen):
    check_same_seed_same_bytes(gen, BASE)


def test_image_depends_only_on_its_prompt_and_seed(gen):
    check_batch_boundary(gen, BASE)  # batch_size 2: crosses a batch boundary


@pytest.mark.parametrize(
    "s",
    [
        BASE,  # empty negative prompt: SD3 encodes "", as diffusers' negative_prompt=None does
        st(negative_prompt="blurry", guidance=5.0, width=64, height=32),
        st(scheduler="FlowMatchHeunDiscreteScheduler", negative_prompt="the cat"),
        st(guidance=0.0, steps=2),  # large-turbo style: no guidance
    ],
    ids=["default", "negative", "heun", "turbo"],
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
            dict(scheduler="FlowMatchHeunDiscreteScheduler"),
            dict(negative_prompt="blurry"),
        ),
    )


def test_provenance(gen, tiny):
    prov = gen.provenance(BASE)
    check_provenance_keys(prov)
    assert prov["model"] == str(tiny[0]) and prov["safety_checker"] is False
    assert prov["pipeline"] == "StableDiffusion3Pipeline"
    assert prov["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    other = gen.provenance(st(scheduler="FlowMatchHeunDiscreteScheduler"))
    check_other_scheduler(prov, other, "FlowMatchHeunDiscreteScheduler")


def test_encodes_each_distinct_prompt_once(tiny, monkeypatch):
    g = StableDiffusion3(tiny[1])
    g.load("cpu")
    encoded = count_encoded(monkeypatch, g.pipe)
    s = st(steps=1)
    gen_images(g, ["a cat", "a cat", "a dog", "a cat"], [1, 2, 3, 4], s)
    gen_images(g, ["a dog", "a cat"], [5, 6], s)
    assert sorted(encoded) == ["", "a cat", "a dog"]


def test_check_config_rejects_what_sd3_cannot_use(tiny):
    cfg = tiny[1]
    StableDiffusion3.check_config(cfg)
    StableDiffusion3.check_config(dataclasses.replace(cfg, scheduler=("", "FlowMatchHeunDiscreteScheduler")))
    check_rejects(
        StableDiffusion3,
        cfg,
        (
            (dict(scheduler="DDIMScheduler"), "scheduler"),
            (dict(size=((64, 64), (64, 40))), "size"),
            (dict(pipeline="StableDiffusionPipeline"), "pipeline"),
        ),
    )


def test_unknown_scheduler_and_bad_devices_are_clear_errors(gen, tiny):
    cfg = tiny[1]
    with pytest.raises(Invalid, match="FlowMatchNoSuch") as e:
        StableDiffusion3(dataclasses.replace(cfg, scheduler="FlowMatchNoSuch")).load("cpu")
    assert e.value.key == "scheduler"
    with pytest.raises(ValueError, match="scheduler.*NoSuchScheduler"):
        gen_images(gen, PROMPTS[:1], SEEDS[:1], st(scheduler="NoSuchScheduler"))
    check_load_errors(StableDiffusion3, cfg, "bfloat16", BASE)
    check_pickles_unloaded(gen)
