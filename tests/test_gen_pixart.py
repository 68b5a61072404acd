"""The `pixart` family on tiny random-weight PixArt-α and PixArt-Σ pipelines, against plain
diffusers calls."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402

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
    check_other_scheduler,
    check_provenance_keys,
    check_size_mode_and_seeds,
    count_encoded,
)

from aigi.core.configtools import Invalid  # noqa: E402
from aigi.generators.pixart import PixArt, pipeline_class_name  # noqa: E402
from aigi.generators.settings import Settings  # noqa: E402
from aigi.manifests.imagebytes import encode_png  # noqa: E402
from aigi.manifests.revision import resolve_revision  # noqa: E402

BASE = Settings(steps=2, guidance=4.5, scheduler="", width=64, height=64, negative_prompt="")
PIPELINES = {"alpha": "PixArtAlphaPipeline", "sigma": "PixArtSigmaPipeline"}

st = changer(BASE)


@pytest.fixture(scope="module", params=["alpha", "sigma"])
def both(request, tmp_path_factory):
    """Tests of what differs between α and Σ run on each."""
    return build_variant(PixArt, "pixart", request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tests of the family's own plumbing run on Σ (the same code path for α)."""
    return build_variant(PixArt, "pixart", "sigma", tmp_path_factory)


@pytest.fixture(scope="module")
def gen(tiny):
    return tiny[3]


def reference(folder, variant: str, prompts: list[str], seeds: list[int], s: Settings) -> list:
    """The bare diffusers call: prompts as text, one CPU generator per image."""
    import diffusers
    import torch

    pipe = getattr(diffusers, PIPELINES[variant]).from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    if s.scheduler:
        pipe.scheduler = getattr(diffusers, s.scheduler).from_config(pipe.scheduler.config)
    return pipe(
        prompt=prompts,
        negative_prompt=s.negative_prompt,
        num_inference_steps=s.steps,
        guidance_scale=s.guidance,
        width=s.width,
        height=s.height,
        generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
        use_resolution_binning=False,
        clean_caption=False,
    ).images


def test_tiny_saves_the_variants_pipeline_class(both):
    variant, folder, cfg, gen = both
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == PIPELINES[variant]
    assert type(gen.pipe).__name__ == PIPELINES[variant]
    assert cfg.family == "pixart" and cfg.model == str(folder)


def test_size_mode_and_seeds(gen):
    images, other = check_size_mode_and_seeds(gen, st(width=64, height=32), (64, 32))
    assert encode_png(other) != encode_png(images[0])


def test_image_depends_only_on_its_prompt_and_seed(gen):
    batch = gen.generate(PROMPTS, NONE3, SEEDS, BASE)  # batch_size 2: batches of 2 and 1
    check_alone_and_reversed(gen, batch, PROMPTS, NONE3, SEEDS, BASE)


@pytest.mark.parametrize(
    "changes",
    [{"negative_prompt": "blurry", "width": 32, "height": 48}, {"guidance": 1.0},
     {"scheduler": "DDIMScheduler", "steps": 2}],
    ids=["negative-size", "no-cfg", "ddim"],
)
def test_matches_plain_diffusers_pipeline(both, changes):
    variant, folder, _, gen = both
    s = st(**changes)
    ours = gen.generate(PROMPTS, NONE3, SEEDS, s)
    ref = reference(folder, variant, PROMPTS, SEEDS, s)
    check_equal_images(ours, ref, s)


def test_negative_prompt_is_applied(gen):
    plain = gen.generate(PROMPTS[:1], [None], SEEDS[:1], BASE)[0]
    negative = gen.generate(PROMPTS[:1], [None], SEEDS[:1], st(negative_prompt="blurry"))[0]
    assert_differs(plain, negative, 0.5)


def test_each_distinct_prompt_is_encoded_once(gen, monkeypatch):
    g = gen
    g._embeds.clear()
    encoded = count_encoded(monkeypatch, g.pipe)
    g.generate(["a cat", "a cat", "a dog", "a cat"], [None] * 4, [1, 2, 3, 4], BASE)
    g.generate(["a dog", "a cat"], [None] * 2, [5, 6], BASE)
    assert sorted(encoded) == ["", "a cat", "a dog"]


def test_provenance(both):
    variant, folder, cfg, gen = both
    prov = gen.provenance(BASE)
    check_provenance_keys(prov)
    assert prov["model"] == cfg.model and prov["dtype"] == "float32"
    assert prov["revision"] == resolve_revision(str(folder))
    assert prov["pipeline"] == PIPELINES[variant]
    assert prov["scheduler"] == "DPMSolverMultistepScheduler"
    assert prov["safety_checker"] is False
    ddim = gen.provenance(st(scheduler="DDIMScheduler"))
    check_other_scheduler(prov, ddim, "DDIMScheduler")


def test_check_config_rejects_what_pixart_cannot_do(tiny):
    cfg = tiny[2]
    PixArt.check_config(cfg)
    with pytest.raises(Invalid) as e:
        PixArt.check_config(dataclasses.replace(cfg, size=((64, 64), (64, 40))))
    assert e.value.key == "size"
    with pytest.raises(Invalid) as e:
        PixArt.check_config(dataclasses.replace(cfg, pipeline="PixArtSigmaPipeline"))
    assert e.value.key == "pipeline"


def test_load_errors(tiny, tmp_path):
    cfg = tiny[2]
    with pytest.raises(ValueError, match="scheduler.*NoSuchScheduler"):
        PixArt(dataclasses.replace(cfg, scheduler="NoSuchScheduler")).load("cpu")
    check_load_errors(PixArt, cfg, "bfloat16", BASE)
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(ValueError, match="model: .*StableDiffusionPipeline"):
        PixArt(dataclasses.replace(cfg, model=str(tmp_path))).load("cpu")


def test_pipeline_class_is_read_from_the_hub_cache_for_a_hub_id(tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = hashlib.sha1(b"pixart").hexdigest()
    repo = tmp_path / "models--org--pixart"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "model_index.json").write_text(
        '{"_class_name": "PixArtAlphaPipeline"}'
    )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert pipeline_class_name("org/pixart") == "PixArtAlphaPipeline"
