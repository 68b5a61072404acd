"""Config errors name the file and the key; a good config round-trips into frozen dataclasses."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from aigi.core.configtools import ConfigError
from aigi.pipeline.config import load_config

GOOD = """
[run]
out = "runs/x"
seed = 7

[prompts]
source = "classes"
classes = ["tench", "my custom class"]

[real]
path = "/data/real"

[[generators]]
name = "sd15"
family = "stable_diffusion"
model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
steps = 30
guidance = 7.5
size = [512, 512]
dtype = "float16"

[curation.split]
by = "prompt"
fractions = [0.8, 0.1, 0.1]

[features.lare]
t = 200

[detectors.logreg]
feature = "lare"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    return p


def test_good_config_loads_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.run.seed == 7
    assert cfg.generators[0].size == (512, 512)
    assert cfg.generators[0].dtype == "float16"
    assert cfg.features["lare"].t == 200 and cfg.features["lare"].ensemble == 4
    assert cfg.detectors["logreg"].feature == "lare"
    assert cfg.curation.split.fractions == (0.8, 0.1, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.seed = 3  # type: ignore[misc]


def test_out_override(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD), out="elsewhere").run.out == os.path.abspath("elsewhere")


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("seed = 7", "seed = 7\nsede = 1", "run.sede"),  # unknown key
        ("seed = 7", 'seed = "7"', "run.seed"),  # wrong type
        ("steps = 30", "steps = -3", "generators[0].steps"),  # impossible value
        ("steps = 30", "steps = 30.5", "generators[0].steps"),
        ("guidance = 7.5", "guidance = 7.5\nfoo = 1", "generators[0].foo"),
        ('family = "stable_diffusion"', 'family = "no_such_family"', "generators[0].family"),
        ("fractions = [0.8, 0.1, 0.1]", "fractions = [0.8, 0.1, 0.2]", "curation.split.fractions"),
        ('by = "prompt"', 'by = "colour"', "curation.split.by"),
        ('dtype = "float16"', 'dtype = "float8"', "generators[0].dtype"),
        ("size = [512, 512]", "size = [500, 512]", "generators[0].size"),
        ('path = "/data/real"', "", "real.path"),  # missing required value
        ('model = "stable-diffusion-v1-5/stable-diffusion-v1-5"', "", "generators[0].model"),
        ("t = 200", "t = -1", "features.lare.t"),
        ("t = 200", "tt = 200", "features.lare.tt"),
        ('feature = "lare"', 'feature = "dnf"', "detectors.logreg.feature"),
        ("[features.lare]", "[features.nonexistent]", "features.nonexistent"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg
    assert f"{key}:" in msg


def test_duplicate_generator_names(tmp_path: Path) -> None:
    gen = GOOD[GOOD.index("[[generators]]") : GOOD.index("[curation.split]")]
    with pytest.raises(ConfigError, match=r"generators\[1\]\.name: duplicate"):
        load_config(write(tmp_path, GOOD + "\n" + gen))


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[run\nout = 1"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
