"""The `flux` family on tiny random-weight FLUX.1-dev-like (guidance-embedded) and
FLUX.1-schnell-like pipelines, against plain diffusers calls."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402

import pytest  # noqa: E402
from family_checks import (  # noqa: E402
    NONE3,
    PROMPTS,
    SEEDS,
    assert_differs,
    build_variant,
    changer,
    check_alone_and_reversed,
    check_equal_images,
    check_load_errors,
    check_provenance_keys,
    check_size_mode_and_seeds,
    count_encoded,
)

from aigi.core.configtools import Invalid  # noqa: E402
from aigi.generators.flux import Flux  # noqa: E402
from aigi.generators.settings import Settings  # noqa: E402
from aigi.manifests.imagebytes import encode_png  # noqa: E402
from aigi.manifests.revision import resolve_revision  # noqa: E402

BASE = Settings(steps=2, guidance=3.5, scheduler="", width=64, height=64, negative_prompt="")
T5_TOKENS = {"dev": 512, "schnell": 256}

st = changer(BASE)


@pytest.fixture(scope="module", params=["dev", "schnell"])
def both(request, tmp_path_factory):
    """Tests of what differs between dev and schnell run on each."""
    return build_variant(Flux, "flux", request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tests of the family's own plumbing run on the dev-like model."""
    return build_variant(Flux, "flux", "dev", tmp_path_factory)


@pytest.fixture(scope="module")
def gen(tiny):
    return tiny[3]


def reference(folder, variant: str, prompts: list[str], seeds: list[int], s: Settings) -> list:
    """The bare diffusers call: prompts as text, one CPU generator per image."""
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt=prompts,
        num_inference_steps=s.steps,
        guidance_scale=s.guidance,
        width=s.width,
        height=s.height,
        generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
        max_sequence_length=T5_TOKENS[variant],
    ).images


def test_tiny_variants(both):
    variant, _, cfg, gen = both
    assert cfg.family == "flux"
    assert gen.pipe.transformer.config.guidance_embeds == (variant == "dev")
    assert gen.pipe.vae.config.latent_channels == 16 and gen.pipe.vae_scale_factor == 8
    assert gen._max_sequence_length == T5_TOKENS[variant]


def test_size_mode_and_seeds(gen):
    images, other = check_size_mode_and_seeds(gen, st(width=64, height=32), (64, 32))


def test_image_depends_only_on_its_prompt_and_seed(gen):
    batch = gen.generate(PROMPTS, NONE3, SEEDS, BASE)  # batch_size 2: batches of 2 and 1
    check_alone_and_reversed(gen, batch, PROMPTS, NONE3, SEEDS, BASE)


@pytest.mark.parametrize(
    "changes", [{"width": 32, "height": 48}, {"guidance": 1.5, "steps": 3}], ids=["size", "guidance"]
)
def test_matches_plain_diffusers_pipeline(both, changes):
    variant, folder, _, gen = both
    s = st(**changes)
    ours = gen.generate(PROMPTS, NONE3, SEEDS, s)
    ref = reference(folder, variant, PROMPTS, SEEDS, s)
    check_equal_images(ours, ref, s)


def test_guidance_is_embedded_for_dev_and_ignored_by_schnell(both):
    variant, _, _, gen = both
    low = gen.generate(PROMPTS[:1], [None], SEEDS[:1], st(guidance=0.0))[0]
    high = gen.generate(PROMPTS[:1], [None], SEEDS[:1], st(guidance=5.0))[0]
    if variant == "dev":
        assert_differs(low, high, 0.5)
    else:
        assert encode_png(low) == encode_png(high)


def test_each_distinct_prompt_is_encoded_once(gen, monkeypatch):
    gen._embeds.clear()
    encoded = count_encoded(monkeypatch, gen.pipe)
    gen.generate(["a cat", "a cat", "a dog", "a cat"], [None] * 4, [1, 2, 3, 4], BASE)
    gen.generate(["a dog", "a cat"], [None] * 2, [5, 6], BASE)
    assert sorted(encoded) == ["a cat", "a dog"]


def test_provenance_and_scheduler_by_name(tiny):
    _, folder, cfg, gen = tiny
    prov = gen.provenance(BASE)
    check_provenance_keys(prov)
    assert prov["model"] == cfg.model and prov["dtype"] == "float32"
    assert prov["revision"] == resolve_revision(str(folder))
    assert prov["pipeline"] == "FluxPipeline"
    assert prov["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert prov["safety_checker"] is False
    # Naming the model's own class builds it from the model's config: same schedule, same pixels.
    named = st(scheduler="FlowMatchEulerDiscreteScheduler")
    assert gen.provenance(named)["scheduler_config"] == prov["scheduler_config"]
    a = gen.generate(PROMPTS[:1], [None], SEEDS[:1], named)[0]
    b = gen.generate(PROMPTS[:1], [None], SEEDS[:1], BASE)[0]
    assert encode_png(a) == encode_png(b)


def test_check_config_rejects_what_flux_cannot_do(tiny):
    cfg = tiny[2]
    Flux.check_config(cfg)
    with pytest.raises(Invalid) as e:
        Flux.check_config(dataclasses.replace(cfg, size=((64, 64), (72, 64))))
    assert e.value.key == "size"
    with pytest.raises(Invalid) as e:
        Flux.check_config(dataclasses.replace(cfg, negative_prompt="blurry"))
    assert e.value.key == "negative_prompt"


def test_load_errors(tiny):
    cfg = tiny[2]
    with pytest.raises(ValueError, match="scheduler.*NoSuchScheduler"):
        Flux(dataclasses.replace(cfg, scheduler="NoSuchScheduler")).load("cpu")
    with pytest.raises(ValueError, match="scheduler.*DDIMScheduler cannot run Flux"):
        Flux(dataclasses.replace(cfg, scheduler=("", "DDIMScheduler"))).load("cpu")
    check_load_errors(Flux, cfg, "bfloat16", BASE)
