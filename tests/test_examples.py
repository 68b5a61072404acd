"""Every shipped example config validates (parsing only: no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigi.pipeline.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_config_is_valid(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.run.out


def test_examples_exist() -> None:
    assert any(p.name == "sd15-imagenet.toml" for p in EXAMPLES)


def test_sd15_example_uses_released_lare_settings() -> None:
    cfg = load_config(next(p for p in EXAMPLES if p.name == "sd15-imagenet.toml"))
    lare = cfg.features["lare"]
    assert (lare.t, lare.ensemble, lare.img_size, lare.posterior, lare.error) == (200, 4, (256, 256), "sample", "squared")
    assert cfg.generators[0].model == "stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_sd15_example_configures_every_feature() -> None:
    from aigi.features.registry import names

    cfg = load_config(next(p for p in EXAMPLES if p.name == "sd15-imagenet.toml"))
    assert set(cfg.features) == set(names())
    assert cfg.features["dnf"].mode == "released" and cfg.features["dire"].steps == 20


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_plan_and_writes_nothing(path: Path, tmp_path: Path, capsys) -> None:
    from aigi.pipeline.cli import main

    out = tmp_path / "run"
    assert main(["run", str(path), "--plan", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "valid" in printed and ("generate/" in printed or "aligned/" in printed)
    # counted, or (a real source that is not on this machine) said so
    assert " units " in printed or "input missing here" in printed
    assert not out.exists()
