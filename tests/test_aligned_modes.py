"""Aligned modes (vae_roundtrip, regenerate, inpaint, img2img) of every generator family that
declares them, on tiny random-weight doubles, against independent computations: the autoencoder
run by hand through diffusers, and plain `AutoPipelineFor*.from_pipe(pipe)` calls."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from family_checks import assert_close, assert_differs, check_size_and_rgb, px  # noqa: E402
from PIL import Image  # noqa: E402

from aigi.core.configtools import Invalid  # noqa: E402
from aigi.generators._aligned import ALIGNED_MODES, AlignedConfig, box_mask  # noqa: E402
from aigi.generators.base import GeneratorConfig  # noqa: E402
from aigi.generators.registry import get, names  # noqa: E402
from aigi.generators.settings import Settings  # noqa: E402
from aigi.manifests.imagebytes import encode_png  # noqa: E402

SIZE = (64, 64)
S = Settings(steps=4, guidance=3.0, scheduler="", width=64, height=64, negative_prompt="")
STRENGTH = 0.75
PROMPTS = ["a photo of the cat", "a painting of a house", "the dog on the beach"]
SEEDS = [11, 22, 33]
#: The pipeline class (and arguments) each family loads, for the plain diffusers reference.
PLAIN = {
    "stable_diffusion": ("StableDiffusionPipeline", {"safety_checker": None, "requires_safety_checker": False}),
    "generic": ("StableDiffusionPipeline", {"safety_checker": None, "requires_safety_checker": False}),
    "sdxl": ("StableDiffusionXLPipeline", {"add_watermarker": False}),
    "sd3": ("StableDiffusion3Pipeline", {}),
    "flux": ("FluxPipeline", {}),
    "kandinsky": ("KandinskyV22CombinedPipeline", {}),
}


def _parents() -> list:
    """Three different smooth pictures with some texture (what an autoencoder is made for)."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]] / SIZE[0]
    out = []
    for i in range(3):
        base = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), np.sin(xx * yy * 5 + i)], axis=-1)
        noisy = 127.5 + 90 * base + rng.normal(0, 12, base.shape)
        out.append(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))
    return out


PARENTS = _parents()
BOXES = [box_mask(SIZE, 0.3, 0.5, u) for u in (0.1, 0.5, 0.9)]


class Case(NamedTuple):
    model: str  # a key of MODELS
    mode: str

    @property
    def family(self) -> str:
        return MODELS[self.model][0]


#: key -> (family, the tiny double's folder key, config changes)
MODELS = {
    "sd": ("stable_diffusion", "sd", {}),
    "sd-sample": ("stable_diffusion", "sd", {"mode": "vae_roundtrip", "aligned": AlignedConfig(vae_sample="sample")}),
    "sd9": ("stable_diffusion", "sd9", {"mode": "regenerate"}),
    "sdxl": ("sdxl", "sdxl", {}),
    "sdxl9": ("sdxl", "sdxl9", {"mode": "regenerate"}),
    "sd3": ("sd3", "sd3", {}),
    "flux": ("flux", "flux", {}),
    "flux-sample": ("flux", "flux", {"mode": "vae_roundtrip", "aligned": AlignedConfig(vae_sample="sample")}),
    "pixart": ("pixart", "pixart", {}),
    "dit": ("dit", "dit", {}),
    "kandinsky": ("kandinsky", "kandinsky", {}),
    "generic": ("generic", "sd", {}),
    "generic9": ("generic", "sd9", {"mode": "regenerate"}),
}
CASES = [
    *(Case(m, mode) for m in ("sd", "sdxl", "sd3", "flux", "generic") for mode in ("vae_roundtrip", "inpaint", "img2img")),
    Case("sd-sample", "vae_roundtrip"),
    Case("flux-sample", "vae_roundtrip"),
    *(Case(m, "regenerate") for m in ("sd9", "sdxl9", "generic9")),
    Case("pixart", "vae_roundtrip"),
    Case("dit", "vae_roundtrip"),
    Case("kandinsky", "vae_roundtrip"),
    Case("kandinsky", "img2img"),
]
IDS = [f"{c.model}-{c.mode}" for c in CASES]


def stochastic(case: Case) -> bool:
    return case.mode != "vae_roundtrip" or case.model.endswith("-sample")


# ---------------------------------------------------------------- tiny doubles, built once


def _tiny_sdxl_inpainting(folder: Path, base: Path) -> Path:
    """The tiny SDXL with a 9-channel UNet (as diffusers/stable-diffusion-xl-1.0-inpainting-0.1),
    saved as an inpainting pipeline; the SDXL family loads it with StableDiffusionXLPipeline."""
    import diffusers
    import torch

    sdxl = diffusers.StableDiffusionXLPipeline.from_pretrained(base, add_watermarker=False)
    torch.manual_seed(1)
    unet = diffusers.UNet2DConditionModel.from_config({**sdxl.unet.config, "in_channels": 9}).eval()
    components = {**sdxl.components, "unet": unet}
    diffusers.StableDiffusionXLInpaintPipeline(**components, add_watermarker=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """zoo(key) -> (folder, config, generator loaded on the CPU), each built on first use."""
    folders: dict[str, tuple[Path, GeneratorConfig]] = {}
    loaded: dict[str, tuple] = {}

    def folder_of(key: str) -> tuple[Path, GeneratorConfig]:
        if key not in folders:
            from aigi.generators.tiny import tiny_stable_diffusion

            path = tmp_path_factory.mktemp(f"tiny-{key}")
            if key == "sd9":
                tiny_stable_diffusion(path, in_channels=9)
                cfg = GeneratorConfig(name="tiny", family="stable_diffusion", model=str(path), steps=4,
                                      guidance=3.0, size=SIZE, batch_size=2)
            elif key == "sdxl9":
                _tiny_sdxl_inpainting(path, folder_of("sdxl")[0])
                cfg = dataclasses.replace(folder_of("sdxl")[1], model=str(path))
            else:
                family = {"sd": "stable_diffusion"}.get(key, key)
                cfg = get(family).tiny(path, batch_size=2)
            folders[key] = path, cfg
        return folders[key]

    def build(key: str) -> tuple:
        if key not in loaded:
            family, folder_key, changes = MODELS[key]
            folder, cfg = folder_of(folder_key)
            cfg = dataclasses.replace(cfg, family=family, steps=S.steps, guidance=S.guidance, **changes)
            gen = get(family)(cfg)
            gen.load("cpu")
            loaded[key] = folder, cfg, gen
        return loaded[key]

    build.folder_of = folder_of
    return build


def run(gen, mode, parents=PARENTS, seeds=SEEDS, prompts=PROMPTS, s=S, masks=None):
    masks = masks if masks is not None else (BOXES[: len(parents)] if mode == "inpaint" else [None] * len(parents))
    return gen.generate_aligned(mode, list(parents), list(masks), list(prompts), list(seeds), s, STRENGTH)


# ---------------------------------------------------------------- independent computations


def roundtrip_by_hand(folder: Path, parents: list, seeds: list[int] | None) -> list:
    """decode(encode(x)) with the model's own autoencoder loaded straight from its folder: the
    posterior mean, or mean + std * ε with ε drawn per image from its seed; Kandinsky's MoVQ
    decodes the encoder's latents unquantized, as its pipelines do."""
    import diffusers
    import torch

    arrays = np.stack([np.asarray(p, dtype=np.float32) for p in parents])
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0
    with torch.no_grad():
        if (folder / "movq").is_dir():
            vq = diffusers.VQModel.from_pretrained(folder / "movq").eval()
            y = vq.decode(vq.encode(x).latents, force_not_quantize=True).sample
        else:
            vae = diffusers.AutoencoderKL.from_pretrained(folder / "vae").eval()
            dist = vae.encode(x).latent_dist
            z = dist.mean
            if seeds is not None:
                eps = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator("cpu").manual_seed(s))
                                   for s in seeds])
                z = dist.mean + dist.std * eps
            y = vae.decode(z).sample
    pixels = ((y / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in pixels]


_PLAIN: dict[Path, object] = {}


def plain_pipe(family: str, folder: Path):
    import diffusers

    if folder not in _PLAIN:
        cls_name, kwargs = PLAIN[family]
        pipe = getattr(diffusers, cls_name).from_pretrained(folder, **kwargs)
        pipe.set_progress_bar_config(disable=True)
        _PLAIN[folder] = pipe
    return _PLAIN[folder]


def plain_call(family: str, folder: Path, mode: str, parents, masks, prompts, seeds, s, strength):
    """The bare diffusers call: the AutoPipeline twin of the family's pipeline, prompts as text,
    one CPU generator per image; regenerate = an all-zero mask at strength 1."""
    import diffusers
    import torch

    base = plain_pipe(family, folder)
    auto = diffusers.AutoPipelineForImage2Image if mode == "img2img" else diffusers.AutoPipelineForInpainting
    pipe = auto.from_pipe(base, **({"add_watermarker": False} if family == "sdxl" else {}))
    pipe.set_progress_bar_config(disable=True)
    own = pipe.scheduler
    if s.scheduler:
        pipe.scheduler = getattr(diffusers, s.scheduler).from_config(own.config)
        if hasattr(pipe, "decoder_pipe"):  # Kandinsky's combined pipeline samples in its decoder
            pipe.decoder_pipe.scheduler = pipe.scheduler
    kw = dict(
        prompt=list(prompts), image=list(parents), strength=strength, num_inference_steps=s.steps,
        guidance_scale=s.guidance, height=s.height, width=s.width,
        negative_prompt=[s.negative_prompt] * len(prompts) if s.negative_prompt else None,
        generator=[torch.Generator("cpu").manual_seed(x) for x in seeds],
    )
    if len(seeds) == 1:  # one image: plain arguments (Kandinsky's prior with a negative prompt
        # doubles its batch, which a one-generator list cannot follow)
        kw.update(prompt=prompts[0], generator=kw["generator"][0], negative_prompt=s.negative_prompt or None)
    if mode == "regenerate":
        kw.update(mask_image=[Image.new("L", SIZE, 0)] * len(parents), strength=1.0)
    elif mode == "inpaint":
        kw["mask_image"] = list(masks)
    return pipe(**kw).images


# ---------------------------------------------------------------- every declared mode


def test_every_declared_mode_is_tested():
    tested = {(c.family, c.mode) for c in CASES}
    for family in names():
        for mode in get(family).aligned_modes:
            assert (family, mode) in tested, (family, mode)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_count_size_rgb_and_seeds(zoo, case):
    gen = zoo(case.model)[2]
    images = run(gen, case.mode)
    check_size_and_rgb(images, SIZE, 3)
    again = run(gen, case.mode)
    assert [encode_png(a) for a in again] == [encode_png(a) for a in images]
    one, other = (run(gen, case.mode, PARENTS[:1], [seed], PROMPTS[:1])[0] for seed in (SEEDS[0], SEEDS[0] + 1))
    if stochastic(case):
        assert_differs(other, one, 0.5)
    else:  # the posterior mean: the seed plays no part
        assert encode_png(other) == encode_png(one)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fake_depends_only_on_its_own_inputs(zoo, case):
    """batch_size 2, 3 images: the batch reversed, and the middle one alone, give the same fakes."""
    gen = zoo(case.model)[2]
    images = run(gen, case.mode)
    masks = BOXES if case.mode == "inpaint" else [None] * 3
    reverse = run(gen, case.mode, PARENTS[::-1], SEEDS[::-1], PROMPTS[::-1], masks=masks[::-1])[::-1]
    for a, b in zip(images, reverse, strict=True):
        assert_close(a, b)
    alone = run(gen, case.mode, PARENTS[1:2], SEEDS[1:2], PROMPTS[1:2], masks=masks[1:2])[0]
    assert_close(alone, images[1])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_equals_the_independent_computation(zoo, case):
    folder, cfg, gen = zoo(case.model)
    images = run(gen, case.mode)
    if case.mode == "vae_roundtrip":
        ref = roundtrip_by_hand(folder, PARENTS, SEEDS if case.model.endswith("-sample") else None)
    else:
        ref = plain_call(case.family, folder, case.mode, PARENTS, BOXES, PROMPTS, SEEDS, S, STRENGTH)
    for a, b in zip(images, ref, strict=True):
        assert_close(a, b)


@pytest.mark.parametrize(
    ("model", "mode", "s"),
    [
        ("sd", "inpaint", dataclasses.replace(S, scheduler="EulerAncestralDiscreteScheduler", negative_prompt="blurry")),
        ("sdxl", "img2img", dataclasses.replace(S, scheduler="DPMSolverMultistepScheduler", negative_prompt="blurry")),
        ("kandinsky", "img2img", dataclasses.replace(S, scheduler="DDIMScheduler", negative_prompt="blurry")),
    ],
    ids=["sd-inpaint", "sdxl-img2img", "kandinsky-img2img"],
)
def test_scheduler_swap_and_negative_prompt_reach_the_derived_pipeline(zoo, model, mode, s):
    folder, cfg, gen = zoo(model)
    family = MODELS[model][0]
    images = run(gen, mode, s=s)
    if family == "kandinsky":  # a negative prompt doubles the prior's batch: one call per image
        ref = [plain_call(family, folder, mode, [p], [m], [t], [x], s, STRENGTH)[0]
               for p, m, t, x in zip(PARENTS, BOXES, PROMPTS, SEEDS, strict=True)]
    else:
        ref = plain_call(family, folder, mode, PARENTS, BOXES, PROMPTS, SEEDS, s, STRENGTH)
    for a, b in zip(images, ref, strict=True):
        assert_close(a, b)
    assert_differs(images[0], run(gen, mode)[0], 0.5)  # the swap changed something


def test_provenance_names_what_made_the_fakes(zoo):
    assert zoo("sd9")[2].provenance(S)["pipeline"] == "StableDiffusionInpaintPipeline"
    prov = zoo("sd-sample")[2].provenance(S)
    assert (prov["pipeline"], prov["scheduler"], prov["scheduler_config"]) == ("AutoencoderKL", "none", "none")


# ---------------------------------------------------------------- regenerate and checkpoints


@pytest.mark.parametrize("model", ["sd9", "sdxl9"])
def test_regenerate_on_an_inpainting_checkpoint_makes_a_new_image(zoo, model):
    gen = zoo(model)[2]
    fakes = run(gen, "regenerate")
    roundtrip = run(gen, "vae_roundtrip")
    for fake, parent, rt in zip(fakes, PARENTS, roundtrip, strict=True):
        assert_differs(fake, parent, 5.0)
        assert_differs(fake, rt, 5.0)


def test_all_zero_mask_on_a_4_channel_unet_only_round_trips_so_regenerate_is_refused(zoo):
    """Why regenerate needs an inpainting checkpoint: with a 4-channel UNet diffusers blends the
    encoded original back wherever the mask is 0, so the plain all-zero-mask call returns exactly
    the sampled VAE round trip (the input itself, up to the autoencoder) whatever the sampler
    did; aigi refuses that mode there, naming `mode`."""
    folder, cfg, _ = zoo("sd")
    plain = plain_call("stable_diffusion", folder, "regenerate", PARENTS, None, PROMPTS, SEEDS, S, 1.0)
    roundtrip = run(zoo("sd-sample")[2], "vae_roundtrip")
    for a, b in zip(plain, roundtrip, strict=True):
        assert_close(a, b)
    for family in ("stable_diffusion", "generic"):
        with pytest.raises(Invalid) as e:
            get(family)(dataclasses.replace(cfg, family=family, mode="regenerate")).load("cpu")
        assert e.value.key == "mode" and "inpainting checkpoint" in str(e.value)
    with pytest.raises(Invalid) as e:
        run(zoo("sd")[2], "regenerate")
    assert e.value.key == "mode"


def test_an_inpainting_checkpoint_cannot_run_text_or_img2img(zoo):
    cfg = zoo("sd9")[1]
    for mode in ("text", "img2img"):
        with pytest.raises(Invalid) as e:
            get("stable_diffusion")(dataclasses.replace(cfg, mode=mode)).load("cpu")
        assert e.value.key == "mode"


# ---------------------------------------------------------------- what a family cannot run


@pytest.mark.parametrize("family", sorted(names()))
def test_check_config_rejects_an_undeclared_mode(family):
    cls = get(family)
    for mode in ALIGNED_MODES:
        if mode in cls.aligned_modes:
            continue
        aligned = AlignedConfig(mask="box") if mode == "inpaint" else AlignedConfig()
        cfg = GeneratorConfig(name="x", family=family, model="/nowhere", mode=mode, aligned=aligned)
        with pytest.raises(Invalid) as e:
            cls.check_config(cfg)
        assert e.value.key == "mode"


def test_generic_refuses_at_load_a_mode_its_pipeline_has_no_twin_for(zoo):
    folder, cfg = zoo.folder_of("pixart")
    generic = dataclasses.replace(cfg, family="generic", mode="img2img", aligned=AlignedConfig(strength=0.5))
    with pytest.raises(Invalid, match="PixArtSigmaPipeline has no img2img pipeline") as e:
        get("generic")(generic).load("cpu")
    assert e.value.key == "mode"


def test_a_vq_autoencoder_has_no_posterior_to_sample(zoo):
    cfg = zoo.folder_of("kandinsky")[1]
    bad = dataclasses.replace(cfg, mode="vae_roundtrip", aligned=AlignedConfig(vae_sample="sample"))
    with pytest.raises(Invalid) as e:
        get("kandinsky")(bad).load("cpu")
    assert e.value.key == "aligned.vae_sample"


def test_inputs_are_checked(zoo):
    gen = zoo("sd")[2]
    with pytest.raises(ValueError, match="mask"):
        run(gen, "inpaint", masks=[None, None, None])
    with pytest.raises(ValueError, match="size"):
        run(gen, "img2img", [p.resize((32, 32)) for p in PARENTS])
    with pytest.raises(ValueError, match="3 parents, 3 masks, 2 prompts"):
        run(gen, "img2img", prompts=PROMPTS[:2])
    with pytest.raises(RuntimeError, match="load"):
        run(get("stable_diffusion")(gen.config), "vae_roundtrip")


def test_a_float16_vae_that_asks_to_be_upcast_runs_in_float32(zoo):
    """SDXL's VAE overflows in float16 (`force_upcast`): the round trip runs it in float32 (cast
    once and kept). Checked on the CPU with a float16 copy of the tiny VAE."""
    import torch

    folder, cfg, _ = zoo("sd")
    gen = get("stable_diffusion")(cfg)
    gen.load("cpu")
    vae = gen.pipe.vae.to(torch.float16)
    assert vae.config.force_upcast
    seen = []
    hook = vae.decoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    try:
        images = run(gen, "vae_roundtrip")
    finally:
        hook.remove()
    assert seen and set(seen) == {torch.float32}
    assert vae.dtype == torch.float32
    ref = roundtrip_by_hand(folder, PARENTS, None)
    assert max(int(np.abs(px(a) - px(b)).max()) for a, b in zip(images, ref, strict=True)) <= 4
