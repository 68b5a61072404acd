"""The generic family: tiny pipelines of three classes, each against its own plain diffusers call.

- StableDiffusionPipeline: found by AutoPipelineForText2Image.
- LatentConsistencyModelPipeline (SD's tiny components, an LCM UNet and scheduler): found by
  AutoPipeline too; its `__call__` has no `negative_prompt`.
- StableDiffusionSAGPipeline: unknown to AutoPipeline, so loaded by the DiffusionPipeline fallback.
"""

import dataclasses
import warnings

import pytest
from family_checks import (  # noqa: E402
    PROMPTS,
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

CLASS_IDS = [None, None, None]
SD, LCM, SAG = (
    "StableDiffusionPipeline",
    "LatentConsistencyModelPipeline",
    "StableDiffusionSAGPipeline",
)


_BUILT: dict[str, tuple] = {}


def _build(save_as: str, tmp_path_factory) -> tuple:
    if save_as not in _BUILT:
        import diffusers

        if not hasattr(diffusers, save_as):
            pytest.skip(f"this diffusers has no {save_as}")
        cls = registry.get("generic")
        folder = tmp_path_factory.mktemp(f"tiny-generic-{save_as}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # SAG is deprecated in diffusers
            _BUILT[save_as] = (cls, folder, cls.tiny(folder, save_as=save_as))
    return _BUILT[save_as]


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    cls, folder, cfg = _build(SD, tmp_path_factory)
    cfg = dataclasses.replace(cfg, negative_prompt="blurry", size=(64, 48), batch_size=2)
    return loaded(cls, cfg), folder


@pytest.fixture(scope="module")
def settings(sd) -> Settings:
    return draw(sd[0].config, 0)


@pytest.fixture(scope="module")
def sd_images(sd, settings):
    return sd[0].generate(PROMPTS, CLASS_IDS, SEEDS, settings)


def _plain_call(pipe, prompt: str, seed: int, s: Settings, negative: bool = True):
    import torch

    kwargs = dict(negative_prompt=s.negative_prompt) if negative else {}
    return pipe(
        prompt=prompt,
        num_inference_steps=s.steps,
        guidance_scale=s.guidance,
        width=s.width,
        height=s.height,
        generator=torch.Generator("cpu").manual_seed(seed),
        **kwargs,
    ).images[0]


def _plain(cls_name: str, folder):
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------- Stable Diffusion through AutoPipeline


def test_attributes(sd):
    cls = type(sd[0])
    assert cls.family == "generic" and cls.conditioning == "text"
    assert cls.honours == {"steps", "guidance", "scheduler", "size", "negative_prompt"}
    cls.check_config(sd[0].config)


def test_sd_images_have_settings_size_and_rgb(sd_images, settings):
    assert len(sd_images) == 3
    for im in sd_images:
        assert im.size == (settings.width, settings.height) == (64, 48) and im.mode == "RGB"


def test_sd_same_seed_same_bytes_different_seed_differs(sd, settings, sd_images):
    gen = sd[0]
    check_seeded(gen, sd_images, PROMPTS, CLASS_IDS, SEEDS, settings)


def test_sd_batch_independence(sd, settings, sd_images):
    gen = sd[0]
    check_alone_and_reversed(gen, sd_images, PROMPTS, CLASS_IDS, SEEDS, settings)  # ids all None


def test_sd_matches_plain_pipeline(sd, settings, sd_images):
    gen, folder = sd
    assert type(gen.pipe).__name__ == SD
    pipe = _plain(SD, folder)
    for prompt, seed, im in zip(PROMPTS, SEEDS, sd_images, strict=True):
        assert close(im, _plain_call(pipe, prompt, seed, settings))
    # The negative prompt is really applied.
    plain = _plain_call(
        pipe, PROMPTS[0], SEEDS[0], dataclasses.replace(settings, negative_prompt="")
    )
    assert_differs(plain, sd_images[0], 0.5)


def test_sd_scheduler_swap_and_provenance(sd, settings, sd_images):
    gen, folder = sd
    s = dataclasses.replace(settings, scheduler="EulerDiscreteScheduler")
    ours = gen.generate(PROMPTS[:1], CLASS_IDS[:1], SEEDS[:1], s)[0]
    pipe = _plain(SD, folder)
    from diffusers import EulerDiscreteScheduler

    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    assert close(ours, _plain_call(pipe, PROMPTS[0], SEEDS[0], s))
    prov, prov_euler = gen.provenance(settings), gen.provenance(s)
    assert all(prov[k] for k in PROV_KEYS) and prov["safety_checker"] is False
    assert prov["pipeline"] == SD and prov["scheduler"] == "DDIMScheduler"
    check_other_scheduler(prov, prov_euler, "EulerDiscreteScheduler")
    assert prov["revision"] == resolve_revision(str(folder))


def test_explicit_pipeline_class(sd, tmp_path_factory):
    cls, folder, cfg = _build(SD, tmp_path_factory)
    gen = loaded(cls, dataclasses.replace(cfg, pipeline=SD))
    assert gen.provenance(draw(gen.config, 0))["pipeline"] == SD
    with pytest.raises(Invalid) as e:
        cls(dataclasses.replace(cfg, pipeline="NoSuchPipeline")).load("cpu")
    assert e.value.key == "pipeline" and "NoSuchPipeline" in str(e.value)
    with pytest.raises(Invalid) as e:
        cls(dataclasses.replace(cfg, pipeline="DDIMScheduler")).load("cpu")  # not a pipeline
    assert e.value.key == "pipeline"
    with pytest.raises(Invalid) as e:
        cls.check_config(dataclasses.replace(cfg, pipeline="not a class"))
    assert e.value.key == "pipeline"


def test_trust_remote_code_is_passed_and_warned(sd, tmp_path_factory, monkeypatch):
    import diffusers

    cls, folder, cfg = _build(SD, tmp_path_factory)
    seen: dict = {}

    def fake(model, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(diffusers.AutoPipelineForText2Image, "from_pretrained", fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # off by default: no warning
        with pytest.raises(RuntimeError, match="stop here"):
            cls(cfg).load("cpu")
    assert seen["trust_remote_code"] is False
    assert seen["safety_checker"] is None and seen["requires_safety_checker"] is False
    with (
        pytest.warns(UserWarning, match="trust_remote_code"),
        pytest.raises(RuntimeError, match="stop here"),
    ):
        cls(dataclasses.replace(cfg, trust_remote_code=True)).load("cpu")
    assert seen["trust_remote_code"] is True


# ---------------------------------------------------------------- a second class: LCM


def test_lcm_matches_plain_pipeline(tmp_path_factory):
    cls, folder, cfg = _build(LCM, tmp_path_factory)
    gen = loaded(cls, cfg)
    s = draw(cfg, 0)
    images = gen.generate(PROMPTS[:2], CLASS_IDS[:2], SEEDS[:2], s)
    pipe = _plain(LCM, folder)
    for prompt, seed, im in zip(PROMPTS[:2], SEEDS[:2], images, strict=True):
        assert im.size == (64, 64) and im.mode == "RGB"
        assert close(im, _plain_call(pipe, prompt, seed, s, negative=False))
    alone = gen.generate(PROMPTS[1:2], CLASS_IDS[1:2], SEEDS[1:2], s)[0]
    assert close(alone, images[1])
    prov = gen.provenance(s)
    assert all(prov[k] for k in PROV_KEYS)
    assert prov["pipeline"] == LCM and prov["scheduler"] == "LCMScheduler"


def test_lcm_rejects_a_setting_its_call_lacks(tmp_path_factory):
    cls, _, cfg = _build(LCM, tmp_path_factory)
    with pytest.raises(Invalid) as e:
        cls(dataclasses.replace(cfg, negative_prompt="blurry")).load("cpu")
    assert e.value.key == "negative_prompt" and "LatentConsistencyModelPipeline" in str(e.value)


# ---------------------------------------------------------------- a third class: the fallback


def test_class_unknown_to_autopipeline_loads_through_diffusion_pipeline(tmp_path_factory):
    cls, folder, cfg = _build(SAG, tmp_path_factory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        gen = loaded(cls, cfg)
        s = draw(cfg, 0)
        ours = gen.generate(PROMPTS[:1], CLASS_IDS[:1], SEEDS[:1], s)[0]
        ref = _plain_call(_plain(SAG, folder), PROMPTS[0], SEEDS[0], s)
    assert gen.provenance(s)["pipeline"] == SAG
    assert close(ours, ref)
