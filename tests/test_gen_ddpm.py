"""The ddpm family: a tiny DDPM in google/ddpm-*'s root layout against a plain DDPMPipeline call."""

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

PROMPTS = ["", "", ""]  # unconditioned: the prompts only count the images
CLASS_IDS = [None, None, None]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cls = registry.get("ddpm")
    folder = tmp_path_factory.mktemp("tiny-ddpm")
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


def _plain(folder, scheduler: str = ""):
    import diffusers

    pipe = diffusers.DDPMPipeline.from_pretrained(folder)
    if scheduler:
        pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _plain_call(pipe, seed: int, steps: int):
    import torch

    return pipe(
        batch_size=1, generator=torch.Generator("cpu").manual_seed(seed), num_inference_steps=steps
    ).images[0]


def test_attributes(built):
    cls, folder, cfg = built
    assert cls.family == "ddpm" and cfg.family == "ddpm"
    assert cls.conditioning == "none"
    assert cls.honours == {"steps", "scheduler"}
    cls.check_config(cfg)
    # The google/ddpm-* layout: the UNet and scheduler files at the root, beside the index.
    assert {"config.json", "scheduler_config.json", "model_index.json"} <= {
        p.name for p in folder.iterdir()
    }


def test_images_have_the_model_size_and_rgb(batch, gen):
    assert len(batch) == 3
    side = gen.pipe.unet.config.sample_size
    for im in batch:
        assert im.size == (side, side) == (32, 32) and im.mode == "RGB"


def test_same_seed_same_bytes_different_seed_differs(gen, settings, batch):
    check_seeded(gen, batch, PROMPTS, CLASS_IDS, SEEDS, settings)


def test_batch_independence(gen, settings, batch):
    """Each image's generator feeds its initial noise and every DDPM step's noise."""
    check_alone_and_reversed(gen, batch, PROMPTS, CLASS_IDS, SEEDS, settings)  # PROMPTS all ""
    split = gen.__class__(dataclasses.replace(gen.config, batch_size=2))
    split.pipe, split._schedulers = gen.pipe, gen._schedulers
    assert all(
        close(x, y)
        for x, y in zip(batch, split.generate(PROMPTS, CLASS_IDS, SEEDS, settings), strict=True)
    )


def test_matches_plain_diffusers_pipeline(built, batch, settings):
    pipe = _plain(built[1])
    for seed, im in zip(SEEDS, batch, strict=True):
        assert close(im, _plain_call(pipe, seed, settings.steps))


def test_steps_change_the_image(gen, settings, batch):
    longer = gen.generate(
        PROMPTS[:1], CLASS_IDS[:1], SEEDS[:1], dataclasses.replace(settings, steps=5)
    )[0]
    assert_differs(longer, batch[0], 0.5)


def test_ddim_swap_matches_plain_pipeline(built, gen, settings, batch):
    s = dataclasses.replace(settings, scheduler="DDIMScheduler")
    ours = gen.generate(PROMPTS[:2], CLASS_IDS[:2], SEEDS[:2], s)
    pipe = _plain(built[1], "DDIMScheduler")
    for seed, im in zip(SEEDS[:2], ours, strict=True):
        assert close(im, _plain_call(pipe, seed, s.steps))
    assert_differs(ours[0], batch[0], 0.5)  # DDIM is another sampler
    check_other_scheduler(gen.provenance(settings), gen.provenance(s), "DDIMScheduler")


def test_provenance(gen, built, settings):
    prov = gen.provenance(settings)
    assert all(prov[k] for k in PROV_KEYS)
    assert prov["safety_checker"] is False
    assert prov["pipeline"] == "DDPMPipeline" and prov["scheduler"] == "DDPMScheduler"
    assert prov["revision"] == resolve_revision(str(built[1]))


def test_unknown_scheduler_fails_at_load(built):
    cls, _, cfg = built
    with pytest.raises(ValueError, match="scheduler"):
        cls(dataclasses.replace(cfg, scheduler="NoSuchScheduler")).load("cpu")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("guidance", 3.0),
        ("size", (64, 64)),
        ("negative_prompt", "blurry"),
        ("pipeline", "DDPMPipeline"),
    ],
)
def test_check_config_rejects_what_ddpm_cannot_honour(built, key, value):
    cls, _, cfg = built
    with pytest.raises(Invalid) as e:
        cls.check_config(dataclasses.replace(cfg, **{key: value}))
    assert e.value.key == key
