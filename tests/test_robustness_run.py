"""Perturbed copies of the test images through `aigi run`: made by curation, featurized, scored
as a variant × generator grid, never trained on."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from aigi.core.configtools import ConfigError
from aigi.pipeline.config import parse_config
from aigi.pipeline.run import run

VARIANTS = ["jpeg50", "blur1", "crop0.8", "resize0.5"]


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    from aigi.core.configtools import to_dict
    from aigi.features.registry import get
    from aigi.generators.tiny import tiny_stable_diffusion

    root = tmp_path_factory.mktemp("robust")
    sd = tiny_stable_diffusion(root / "sd", seed=3)
    clip = {k: list(v) if isinstance(v, tuple) else v for k, v in to_dict(get("clip_rn50").tiny(root / "clip")).items()}
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((48, 48), Image.Resampling.BICUBIC).save(photos / f"{i}.png")
    cfg = parse_config({
        "run": {"out": str(root / "run"), "seed": 2},
        "real": {"path": str(photos)},
        "prompts": {"classes": ["tench", "goldfish", "daisy", "lemon", "volcano", "espresso"]},
        "generators": [{"name": "sd", "family": "stable_diffusion", "model": str(sd), "steps": 2,
                        "size": [48, 48], "images_per_prompt": 4, "batch_size": 8}],
        "curation": {"split": {"by": "image", "fractions": [0.5, 0.2, 0.3]}},
        "features": {"clip_rn50": clip},
        "detectors": {"logreg": {"feature": "clip_rn50", "column": "pooled"}},
        "evaluate": {"protocols": ["per_generator"], "bootstrap": 0, "perturbations": VARIANTS},
    })
    run(cfg, serial=True, stream=io.StringIO())
    return root / "run"


def test_copies_are_made_featurized_scored_and_never_trained_on(done: Path) -> None:
    splits = {r["image_id"]: r["split"] for r in pq.read_table(done / "curation" / "splits.parquet").to_pylist()}
    test = {i for i, s in splits.items() if s == "test"}
    records = pq.read_table(done / "curation" / "perturbations").to_pylist()
    assert {r["original_id"] for r in records} == test  # the test images, and only them
    assert {r["variant"] for r in records} == set(VARIANTS) and len(records) == 4 * len(test)
    copies = {r["image_id"]: r for r in pq.read_table(done / "curation" / "perturbed").to_pylist()}
    for r in records:
        img = copies[r["image_id"]]
        if r["variant"] == "resize0.5":
            assert (img["width"], img["height"]) == (24, 24)
        if r["variant"] == "jpeg50":
            assert img["format"] == "JPEG"
    [folder] = done.glob("detectors/logreg-*")
    preds = pq.read_table(folder / "predictions.parquet").to_pylist()
    perturbed = [p for p in preds if p["split"] == "perturbed"]
    assert {p["image_id"] for p in perturbed} == set(copies)
    metrics = pq.read_table(folder / "metrics.parquet").to_pylist()
    assert sum(r["n_real"] + r["n_fake"] for r in metrics if r["split"] == "test" and r["generator"] == "all") == len(test)
    grid = [r for r in pq.read_table(folder / "protocols.parquet").to_pylist() if r["protocol"] == "robustness"]
    assert {r["train"] for r in grid} == {"none", *VARIANTS}  # the variant each row evaluates
    assert (folder / "robustness.png").stat().st_size > 0


def test_a_bad_perturbation_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"evaluate\.perturbations\[1\]"):
        parse_config({"run": {"out": str(tmp_path)}, "evaluate": {"perturbations": ["jpeg90", "sharpen2"]}})
