"""The `kandinsky` family on a tiny random-weight Kandinsky 2.2, against a plain diffusers call."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402

import pytest  # noqa: E402
from family_checks import (  # noqa: E402
    PROMPTS,
    SEEDS,
    assert_close,
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
    generate,
    loaded,
)

from aigi.generators.kandinsky import Kandinsky  # noqa: E402
from aigi.generators.settings import Settings  # noqa: E402

BASE = Settings(steps=3, guidance=3.0, scheduler="", width=64, height=64, negative_prompt="")
st = changer(BASE)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-kandinsky")
    return folder, Kandinsky.tiny(folder, batch_size=2)


@pytest.fixture(scope="module")
def gen(tiny):
    return loaded(Kandinsky, tiny[1])


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
    return generate(gen, prompts, seeds, s)


def test_images_have_the_settings_size_and_are_rgb(gen):
    images = gen_images(gen, PROMPTS[:2], SEEDS[:2], st(width=128, height=64))
    check_size_and_rgb(images, (128, 64), 2)


def test_same_seed_same_bytes_different_seed_different_image(gen):
    check_same_seed_same_bytes(gen, BASE)


@pytest.mark.parametrize("negative", ["", "blurry"])
def test_image_depends_only_on_its_prompt_and_seed(gen, negative):
    s = st(negative_prompt=negative)
    batch = check_batch_boundary(gen, s)  # batch_size 2: crosses a batch boundary
    other = gen_images(gen, [PROMPTS[0], "something else"], [SEEDS[0], 99], s)[0]
    assert_close(batch[0], other)


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
    check_equal_images(ours, reference(plain, PROMPTS, SEEDS, s), s)


def test_every_setting_changes_the_pixels(gen):
    check_every_setting_changes(
        gen,
        BASE,
        (
            dict(steps=2),
            dict(guidance=6.0),
            dict(scheduler="DDIMScheduler"),
            dict(negative_prompt="blurry"),
        ),
    )


def test_provenance(gen, tiny):
    prov = gen.provenance(BASE)
    check_provenance_keys(prov)
    assert prov["model"] == str(tiny[0]) and prov["safety_checker"] is False
    assert prov["pipeline"] == "KandinskyV22CombinedPipeline"
    assert prov["scheduler"] == "DDPMScheduler"
    other = gen.provenance(st(scheduler="DDIMScheduler"))
    check_other_scheduler(prov, other, "DDIMScheduler")


def test_check_config_rejects_what_kandinsky_cannot_use(tiny):
    cfg = tiny[1]
    Kandinsky.check_config(cfg)
    Kandinsky.check_config(dataclasses.replace(cfg, size=((768, 768), (1024, 640))))
    check_rejects(
        Kandinsky,
        cfg,
        (
            (dict(size=(96, 64)), "size"),
            (dict(size=((64, 64), (64, 72))), "size"),
            (dict(scheduler="FlowMatchEulerDiscreteScheduler"), "scheduler"),
            (dict(pipeline="KandinskyV22Pipeline"), "pipeline"),
            (dict(trust_remote_code=True), "trust_remote_code"),
        ),
    )


def test_unknown_scheduler_and_bad_devices_are_clear_errors(gen, tiny):
    cfg = tiny[1]
    with pytest.raises(ValueError, match="scheduler.*NoSuchScheduler"):
        Kandinsky(dataclasses.replace(cfg, scheduler="NoSuchScheduler")).load("cpu")
    with pytest.raises(ValueError, match="scheduler.*NoSuchScheduler"):
        gen_images(gen, PROMPTS[:1], SEEDS[:1], st(scheduler="NoSuchScheduler"))
    check_load_errors(Kandinsky, cfg, "float16", BASE)
    check_pickles_unloaded(gen)
