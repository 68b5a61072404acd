"""Hostile and malformed configs: each is one ConfigError naming the file and the key, at load,
never a traceback, a stall or a silently wrong corpus (issue 11, item 7). A generated image with
NaN or infinite values is an error naming the generator and the prompt, never a (black) row."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aigi.core.configtools import ConfigError
from aigi.pipeline.config import load_config

GOOD = """\
[run]
out = "runs/x"

[prompts]
classes = ["cat"]

[[generators]]
name = "sd"
family = "stable_diffusion"
model = "org/model"
"""


def write(tmp_path: Path, extra: str = "", text: str = GOOD) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def test_good_config_loads(tmp_path: Path) -> None:
    assert load_config(write(tmp_path)).generators[0].steps == 30


def test_non_utf8_config_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(GOOD.encode() + '# café\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    offset = len(GOOD.encode()) + len(b"# caf")
    assert str(e.value) == f"{path}: not UTF-8 text (byte 0xe9 at offset {offset})"


def test_non_utf8_config_through_the_cli_exits_2_without_traceback(tmp_path: Path, capsys) -> None:
    from aigi.pipeline.cli import main

    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe[run]\n")
    assert main(["run", str(path), "--plan"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"aigi: config error: {path}: not UTF-8 text (byte 0xff at offset 0)"


@pytest.mark.parametrize(
    "line, key, says",
    [
        ("steps = 1e9", "steps", "expected int"),  # a float where an integer is expected
        ("steps = 1000000000", "steps", "at most 1000"),
        ("steps = [20, 5000]", "steps", "at most 1000"),
        ("steps = {min = 20, max = 5000}", "steps", "at most 1000"),
        ("size = [999992, 8]", "size", "at most 4096 px"),
        ("size = [[512, 512], [8192, 512]]", "size", "at most 4096 px"),
        ("images_per_prompt = 1e8", "images_per_prompt", "expected an integer"),
        ("images_per_prompt = 100000000", "images_per_prompt", "at most 100,000"),
        ("batch_size = 1024\nsize = [1024, 1024]", "batch_size", "use batch_size <= 256"),
        ("guidance = inf", "guidance", "must be a finite number, got inf"),
        ("guidance = -inf", "guidance", "must be a finite number, got -inf"),
        ("guidance = nan", "guidance", "must be a finite number, got nan"),
        ("guidance = [7.5, inf]", "guidance[1]", "must be a finite number, got inf"),
        ("guidance = {min = 1.0, max = inf}", "guidance.max", "must be a finite number, got inf"),
    ],
)
def test_impossible_generator_settings_fail_at_load(tmp_path: Path, line: str, key: str, says: str) -> None:
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert message.startswith(f"{path}: generators[0].{key}: "), message
    assert says in message and "\n" not in message


def test_any_float_key_refuses_inf_and_nan(tmp_path: Path) -> None:
    text = GOOD + "\n[curation.split]\nfractions = [0.8, 0.1, nan]\n"
    with pytest.raises(ConfigError, match=r"curation\.split\.fractions\[2\]: must be a finite number, got nan"):
        load_config(write(tmp_path, text=text))


def test_bounds_leave_every_family_its_real_settings(tmp_path: Path) -> None:
    """The largest real settings still load: 1000 DDPM steps, 4096-px sides, large batches."""
    for extra in ("steps = 1000", "size = [4096, 4096]\nbatch_size = 16", "size = [1024, 1024]\nbatch_size = 256",
                  "images_per_prompt = 100000", "guidance = {min = 0.0, max = 30.0}"):
        load_config(write(tmp_path, extra + "\n"))


def test_settings_bypassing_the_loader_are_checked_too() -> None:
    from aigi.core.configtools import Invalid
    from aigi.generators.base import GeneratorConfig

    cfg = GeneratorConfig(name="sd", family="stable_diffusion", model="org/model")
    for change, key in ((dict(guidance=float("inf")), "guidance"), (dict(guidance=float("nan")), "guidance"),
                        (dict(steps=10**9), "steps"), (dict(size=(999992, 8)), "size"),
                        (dict(images_per_prompt=10**8), "images_per_prompt")):
        with pytest.raises(Invalid) as e:
            dataclasses.replace(cfg, **change)
        assert e.value.key == key


# ------------------------------------------------------------------ non-finite generated images


@pytest.fixture(scope="module")
def tiny_sd_config(tmp_path_factory: pytest.TempPathFactory):
    from aigi.generators.stable_diffusion import StableDiffusion

    return StableDiffusion.tiny(tmp_path_factory.mktemp("sd"), name="tiny-sd", steps=2, size=(32, 32), batch_size=2)


def loaded(config):
    from aigi.generators.stable_diffusion import StableDiffusion

    gen = StableDiffusion(config)
    gen.load("cpu")
    return gen


def _nan_decoder(monkeypatch: pytest.MonkeyPatch, vae) -> None:
    """Make the autoencoder decode NaN, as a float16 overflow or a runaway guidance does."""
    from diffusers.models.autoencoders.vae import DecoderOutput

    decode = vae.decode

    def nan_decode(*args, **kwargs):
        out = decode(*args, **kwargs)
        sample = (out[0] if isinstance(out, tuple) else out.sample) * float("nan")
        return (sample,) if isinstance(out, tuple) else DecoderOutput(sample=sample)

    monkeypatch.setattr(vae, "decode", nan_decode)


def test_a_nan_image_is_an_error_naming_generator_and_prompt(tiny_sd_config, monkeypatch: pytest.MonkeyPatch) -> None:
    from aigi.generators._pipeline import NonFiniteImage
    from aigi.generators.settings import draw

    tiny_sd = loaded(tiny_sd_config)
    settings = draw(tiny_sd.config, 0)
    prompts = ["a photo of a cat", "a photo of a dog"]
    ok = tiny_sd.generate(prompts, [None, None], [1, 2], settings)
    assert len(ok) == 2
    _nan_decoder(monkeypatch, tiny_sd.pipe.vae)
    with pytest.raises(NonFiniteImage) as e:
        tiny_sd.generate(prompts, [None, None], [1, 2], settings)
    message = str(e.value)
    assert "'tiny-sd'" in message and "'a photo of a cat'" in message and "seed 1" in message
    assert "NaN or infinite" in message


def test_a_nan_vae_roundtrip_is_an_error(tiny_sd_config, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from aigi.generators._pipeline import NonFiniteImage
    from aigi.generators.settings import draw

    tiny_sd = loaded(dataclasses.replace(tiny_sd_config, mode="vae_roundtrip"))
    parents = [Image.new("RGB", (32, 32), (120, 30, 200))]
    settings = draw(tiny_sd.config, 0)
    assert len(tiny_sd.generate_aligned("vae_roundtrip", parents, [None], ["p"], [3], settings, 1.0)) == 1
    _nan_decoder(monkeypatch, tiny_sd.pipe.vae)
    with pytest.raises(NonFiniteImage, match="'tiny-sd'.*prompt 'p' \\(seed 3\\)"):
        tiny_sd.generate_aligned("vae_roundtrip", parents, [None], ["p"], [3], settings, 1.0)


def test_finite_images_convert_exactly_as_diffusers_pil_output() -> None:
    import numpy as np
    from diffusers.image_processor import VaeImageProcessor

    from aigi.generators._pipeline import checked_images

    batch = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    ours = checked_images(batch, "g", ["a", "b"], [1, 2])
    theirs = VaeImageProcessor.numpy_to_pil(batch)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ours, theirs, strict=True))
    assert len(checked_images(list(batch), "g", ["a", "b"], [1, 2])) == 2
