"""Constants and checks shared by the per-family generator tests (tests/test_gen_*.py).

Plain functions, imported as `from family_checks import ...` (tests/ is on sys.path).
"""

import dataclasses
import pickle

import numpy as np
import pytest

from aigi.core.configtools import Invalid
from aigi.manifests.imagebytes import encode_png

PROMPTS = ["a photo of the cat", "a painting of a house", "the dog on the beach"]
SEEDS = [11, 22, 33]
NONE3 = [None, None, None]
PROV_KEYS = ("model", "revision", "pipeline", "scheduler", "scheduler_config", "dtype")
KEYS = (*PROV_KEYS, "safety_checker")


def px(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def close(a, b) -> bool:
    """Equal up to 2 levels per channel."""
    return bool(np.abs(px(a) - px(b)).max() <= 2)


def assert_close(a, b) -> None:
    diff = np.abs(px(a) - px(b)).max()
    assert diff <= 2, f"max pixel difference {diff} > 2"


def assert_differs(a, b, mean: float) -> None:
    diff = np.abs(px(a) - px(b)).mean()
    assert diff > mean, f"mean pixel difference {diff} <= {mean}"


def changer(base):
    """`st(**changes)`: `base` with some fields replaced."""

    def st(**changes):
        return dataclasses.replace(base, **changes)

    return st


def generate(gen, prompts, seeds, s) -> list:
    """A text-conditioned generator's images, no class ids."""
    return gen.generate(prompts, [None] * len(prompts), seeds, s)


def loaded(cls, cfg, *, check_unloaded: bool = False):
    """The generator as Dask ships it (pickled, unloaded), then loaded on the CPU."""
    g = pickle.loads(pickle.dumps(cls(cfg)))
    if check_unloaded:
        assert g.config == cfg and g.pipe is None
    g.load("cpu")
    return g


_BUILT: dict[tuple[str, str], tuple] = {}


def build_variant(cls, family: str, variant: str, tmp_path_factory) -> tuple:
    """(variant, folder, config, loaded generator), built once per family and variant."""
    if (family, variant) not in _BUILT:
        folder = tmp_path_factory.mktemp(f"tiny-{family}-{variant}")
        cfg = cls.tiny(folder, variant=variant, batch_size=2)
        _BUILT[family, variant] = (variant, folder, cfg, loaded(cls, cfg, check_unloaded=True))
    return _BUILT[family, variant]


def text_pipeline_call(plain, prompts: list[str], seeds: list[int], s) -> list:
    """The bare diffusers call of a text pipeline (`plain` = (pipe, its own scheduler)):
    prompts as text, one CPU generator per image."""
    import diffusers
    import torch

    pipe, own = plain
    pipe.scheduler = getattr(diffusers, s.scheduler).from_config(own.config) if s.scheduler else own
    return pipe(
        prompt=prompts,
        negative_prompt=[s.negative_prompt] * len(prompts) if s.negative_prompt else None,
        num_inference_steps=s.steps,
        guidance_scale=s.guidance,
        width=s.width,
        height=s.height,
        generator=[torch.Generator("cpu").manual_seed(x) for x in seeds],
    ).images


def check_size_and_rgb(images, size: tuple[int, int], count: int) -> None:
    assert [im.size for im in images] == [size] * count
    assert all(im.mode == "RGB" for im in images)


def check_same_seed_same_bytes(gen, s) -> None:
    a, b = (encode_png(generate(gen, PROMPTS[:1], SEEDS[:1], s)[0]) for _ in range(2))
    c = encode_png(generate(gen, PROMPTS[:1], [SEEDS[0] + 1], s)[0])
    assert a == b
    assert a != c


def check_batch_boundary(gen, s) -> list:
    """The last and first of a batch of 3 (batch_size 2) equal those made alone; returns it."""
    batch = generate(gen, PROMPTS, SEEDS, s)
    alone = generate(gen, PROMPTS[2:], SEEDS[2:], s)[0]
    assert_close(batch[2], alone)
    first = generate(gen, PROMPTS[:1], SEEDS[:1], s)[0]
    assert_close(batch[0], first)
    return batch


def check_seeded(gen, batch, prompts, class_ids, seeds, s) -> None:
    """The first image again: the same bytes; with the next seed: another image."""
    again = gen.generate(prompts[:1], class_ids[:1], seeds[:1], s)[0]
    assert encode_png(again) == encode_png(batch[0])
    other = gen.generate(prompts[:1], class_ids[:1], [seeds[0] + 1], s)[0]
    assert_differs(other, batch[0], 1.0)


def check_alone_and_reversed(gen, batch, prompts, class_ids, seeds, s) -> None:
    """The middle image made alone, and the batch made in reverse, equal `batch`."""
    alone = gen.generate(prompts[1:2], class_ids[1:2], seeds[1:2], s)[0]
    assert_close(alone, batch[1])
    reverse = gen.generate(prompts[::-1], class_ids[::-1], seeds[::-1], s)[::-1]
    for a, b in zip(batch, reverse, strict=True):
        assert_close(a, b)


def check_size_mode_and_seeds(gen, s, size: tuple[int, int]) -> tuple:
    """3 images of `size`, the same bytes again, another image for another seed."""
    images = gen.generate(PROMPTS, NONE3, SEEDS, s)
    check_size_and_rgb(images, size, 3)
    again = gen.generate(PROMPTS, NONE3, SEEDS, s)
    assert [encode_png(im) for im in again] == [encode_png(im) for im in images]
    other = gen.generate(PROMPTS[:1], [None], [SEEDS[0] + 1], s)[0]
    assert_differs(other, images[0], 1.0)
    return images, other


def check_equal_images(ours, ref, s) -> None:
    for a, b in zip(ours, ref, strict=True):
        assert a.size == (s.width, s.height)
        assert_close(a, b)


def check_every_setting_changes(gen, base, changes) -> None:
    first = px(generate(gen, PROMPTS[:1], SEEDS[:1], base)[0])
    for change in changes:
        other = px(generate(gen, PROMPTS[:1], SEEDS[:1], dataclasses.replace(base, **change))[0])
        assert np.abs(other - first).mean() > 0.5, change


def check_provenance_keys(prov, keys=KEYS) -> None:
    assert set(keys) <= set(prov)
    assert all(prov[k] not in (None, "") for k in keys)


def check_other_scheduler(prov, other, name: str) -> None:
    """`other` is the provenance with scheduler `name`; `prov` the model's own."""
    assert other["scheduler"] == name
    assert other["scheduler_config"] != prov["scheduler_config"]


def count_encoded(monkeypatch, pipe) -> list[str]:
    """Records every prompt `pipe.encode_prompt` encodes from now on."""
    encoded: list[str] = []
    original = pipe.encode_prompt

    def counting(prompt, *args, **kwargs):
        if prompt is not None:  # the pipeline calls it with prompt=None to pass ours through
            encoded.extend([prompt] if isinstance(prompt, str) else prompt)
        return original(prompt, *args, **kwargs)

    monkeypatch.setattr(pipe, "encode_prompt", counting)
    return encoded


def check_rejects(cls, cfg, cases) -> None:
    """check_config raises Invalid naming `key` for each (changes, key)."""
    for change, key in cases:
        with pytest.raises(Invalid) as e:
            cls.check_config(dataclasses.replace(cfg, **change))
        assert e.value.key == key


def check_load_errors(cls, cfg, half: str, s) -> None:
    """Half precision on the CPU, device "auto", and generating before load are clear errors."""
    with pytest.raises(ValueError, match='use dtype = "float32" on CPU'):
        cls(dataclasses.replace(cfg, dtype=half)).load("cpu")
    with pytest.raises(ValueError, match="auto"):
        cls(cfg).load("auto")
    with pytest.raises(RuntimeError, match="load"):
        generate(cls(cfg), PROMPTS[:1], SEEDS[:1], s)


def check_pickles_unloaded(gen) -> None:
    copy = pickle.loads(pickle.dumps(gen))
    assert copy.config == gen.config and copy.pipe is None
