"""The dit family: a tiny DiT in facebook/DiT-XL-2-256's layout against a plain DiTPipeline call."""

import dataclasses

import pytest
from family_checks import (  # noqa: E402
    PROV_KEYS,
    SEEDS,
    assert_differs,
    check_alone_and_reversed,
    check_other_scheduler,
    check_seeded,
    close,
    loaded,
)

from aigi.core.configtools import Invalid
from aigi.generators import registry
from aigi.generators.settings import Settings, draw
from aigi.manifests.revision import resolve_revision

PROMPTS = ["a photo of a tench", "a photo of a goldfish", "a photo of a tiger shark"]
CLASS_IDS = [0, 1, 3]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cls = registry.get("dit")
    folder = tmp_path_factory.mktemp("tiny-dit")
    return cls, folder, cls.tiny(folder)


@pytest.fixture(scope="module")
def gen(built):
    cls, _, cfg = built
    return loaded(cls, cfg)


@pytest.fixture(scope="module")
def settings(built) -> Settings:
    return draw(built[2], 0)


@pytest.fixture(scope="module")
def batch(gen, settings):
    return gen.generate(PROMPTS, CLASS_IDS, SEEDS, settings)


@pytest.fixture(scope="module")
def plain(built):
    from diffusers import DiTPipeline

    pipe = DiTPipeline.from_pretrained(built[1])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _plain_call(pipe, class_id: int, seed: int, s: Settings):
    import torch

    return pipe(
        class_labels=[class_id],
        guidance_scale=s.guidance,
        num_inference_steps=s.steps,
        generator=torch.Generator("cpu").manual_seed(seed),
    ).images[0]


def test_attributes(built):
    cls, _, cfg = built
    assert cls.family == "dit" and cfg.family == "dit"
    assert cls.conditioning == "class"
    assert cls.honours == {"steps", "guidance", "scheduler"}
    cls.check_config(cfg)


def test_images_have_the_model_size_and_rgb(batch, gen):
    assert len(batch) == 3
    side = gen.pipe.transformer.config.sample_size * 2 ** (
        len(gen.pipe.vae.config.block_out_channels) - 1
    )
    assert side == 64
    for im in batch:
        assert im.size == (side, side) and im.mode == "RGB"


def test_same_seed_same_bytes_different_seed_differs(gen, settings, batch):
    check_seeded(gen, batch, PROMPTS, CLASS_IDS, SEEDS, settings)


def test_batch_independence(gen, settings, batch):
    check_alone_and_reversed(gen, batch, PROMPTS, CLASS_IDS, SEEDS, settings)


def test_class_and_guidance_change_the_image(gen, settings, batch):
    other_class = gen.generate(PROMPTS[:1], [CLASS_IDS[1]], SEEDS[:1], settings)[0]
    assert_differs(other_class, batch[0], 0.5)
    unguided = gen.generate(
        PROMPTS[:1], CLASS_IDS[:1], SEEDS[:1], dataclasses.replace(settings, guidance=1.0)
    )[0]
    assert_differs(unguided, batch[0], 0.5)


def test_matches_plain_diffusers_pipeline(batch, plain, settings):
    for class_id, seed, im in zip(CLASS_IDS, SEEDS, batch, strict=True):
        assert close(im, _plain_call(plain, class_id, seed, settings))


def test_scheduler_swap_matches_plain_pipeline(gen, plain, settings):
    from diffusers import DPMSolverMultistepScheduler

    s = dataclasses.replace(settings, scheduler="DPMSolverMultistepScheduler")
    ours = gen.generate(PROMPTS[:1], CLASS_IDS[:1], SEEDS[:1], s)[0]
    own = plain.scheduler
    plain.scheduler = DPMSolverMultistepScheduler.from_config(own.config)
    try:
        ref = _plain_call(plain, CLASS_IDS[0], SEEDS[0], s)
    finally:
        plain.scheduler = own
    assert close(ours, ref)
    check_other_scheduler(gen.provenance(settings), gen.provenance(s), "DPMSolverMultistepScheduler")


def test_provenance(gen, built, settings):
    prov = gen.provenance(settings)
    assert all(prov[k] for k in PROV_KEYS)
    assert prov["safety_checker"] is False
    assert prov["pipeline"] == "DiTPipeline" and prov["scheduler"] == "DDIMScheduler"
    assert prov["revision"] == resolve_revision(str(built[1]))


def test_labels_saved_as_the_real_repository_does(gen):
    # model_index.json carries id2label; DiTPipeline builds its name -> id table from it.
    assert gen.pipe.labels["tench"] == 0 and gen.pipe.labels["goldfish"] == 1


def test_item_without_class_id_names_its_prompt(gen, settings):
    with pytest.raises(ValueError, match="a caption with no class"):
        gen.generate(["a caption with no class", PROMPTS[0]], [None, 0], [1, 2], settings)
    with pytest.raises(ValueError, match="1000"):
        gen.generate(PROMPTS[:1], [1000], [1], settings)


def test_unknown_scheduler_fails_at_load(built):
    cls, _, cfg = built
    g = cls(dataclasses.replace(cfg, scheduler=("", "NoSuchScheduler")))
    with pytest.raises(ValueError, match="scheduler"):
        g.load("cpu")


def test_load_needs_explicit_device_and_float32_on_cpu(built):
    cls, _, cfg = built
    with pytest.raises(ValueError, match="auto"):
        cls(cfg).load("auto")
    with pytest.raises(ValueError, match="float16"):
        cls(dataclasses.replace(cfg, dtype="float16")).load("cpu")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("size", (64, 64)),
        ("negative_prompt", "blurry"),
        ("pipeline", "DiTPipeline"),
        ("trust_remote_code", True),
    ],
)
def test_check_config_rejects_what_dit_cannot_honour(built, key, value):
    cls, _, cfg = built
    with pytest.raises(Invalid) as e:
        cls.check_config(dataclasses.replace(cfg, **{key: value}))
    assert e.value.key == key
