"""Paths that work on any cluster (issue 11, item 6): relative paths resolve once, at load,
against the directory they were given in, so a worker started elsewhere sees the same files;
identities stay content-based, so the same relative config run from another directory makes the
same ids and producers; every local input is checked before any work (`check_inputs`)."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

from aigi.core.configtools import ConfigError
from aigi.pipeline.config import check_inputs, load_config, parse_config

SD = {"family": "stable_diffusion", "steps": 2, "size": [32, 32], "images_per_prompt": 2, "batch_size": 2}


def relative_config(**extra) -> dict:
    return {
        "run": {"out": "run", "seed": 3},
        "prompts": {"source": "file", "path": "prompts.txt"},
        "real": {"path": "photos", "class_from_folder": True},
        "generators": [{"name": "sd", "model": "models/sd", **SD}, {"name": "hub", "model": "org/hub-model", **SD}],
        "curation": {"dedupe": {"reference": ["../old-run"]}},
        "features": {"dire": {"model": "./ddpm"}},
        "detectors": {"resnet_dire": {"pretrained": "weights/resnet.safetensors"}},
        **extra,
    }


def test_relative_paths_become_absolute_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "models" / "sd").mkdir(parents=True)  # exists relative to cwd: a local folder
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(relative_config())
    assert cfg.run.out == str(tmp_path / "run")
    assert cfg.prompts.path == str(tmp_path / "prompts.txt")
    assert cfg.reals[0].path == str(tmp_path / "photos")
    assert [g.model for g in cfg.generators] == [str(tmp_path / "models" / "sd"), "org/hub-model"]
    assert cfg.curation.dedupe.reference == (str(tmp_path.parent / "old-run"),)
    assert cfg.features["dire"].model == str(tmp_path / "ddpm")
    assert cfg.detectors["resnet_dire"].pretrained == str(tmp_path / "weights" / "resnet.safetensors")
    # a pattern keeps its magic; ~ is the home folder
    cfg = parse_config({"run": {"out": "~/runs/x"}, "real": {"path": "shards/{000..009}.tar", "source": "webdataset"}})
    assert cfg.run.out == os.path.expanduser("~/runs/x")
    assert cfg.reals[0].path == str(tmp_path / "shards" / "{000..009}.tar")
    # absolute paths are kept as they are, from any directory
    monkeypatch.chdir(tmp_path / "models")
    again = parse_config({"run": {"out": cfg.run.out}, "real": {"path": cfg.reals[0].path, "source": "webdataset"}})
    assert (again.run.out, again.reals[0].path) == (cfg.run.out, cfg.reals[0].path)


def test_out_on_the_command_line_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[run]\nout = "ignored"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config("c.toml", out="elsewhere/run").run.out == str(tmp_path / "elsewhere" / "run")


def test_fingerprinted_identity_does_not_depend_on_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aigi.manifests.ids import fingerprint

    configs = []
    for d in ("a", "b"):
        (tmp_path / d / "models" / "sd").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / d)
        configs.append(parse_config(relative_config()))
    a, b = configs
    assert a.to_dict() != b.to_dict()  # run.json records the paths actually used
    assert fingerprint(a.identity()) == fingerprint(b.identity())
    assert a.identity()["generators"][1]["model"] == "org/hub-model"  # a hub id is identity
    changed = parse_config(relative_config(run={"out": "run", "seed": 4}))
    assert fingerprint(changed.identity()) != fingerprint(b.identity())


def test_check_inputs_names_every_missing_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(relative_config(), file="corpus.toml")
    with pytest.raises(ConfigError) as e:
        check_inputs(cfg)
    message = str(e.value)
    assert message.startswith("corpus.toml: input missing: ") and "\n" not in message
    for key in ("prompts.path", "real.path", "curation.dedupe.reference[0]", "features.dire.model",
                "detectors.resnet_dire.pretrained"):
        assert key in message, key
    # `models/sd` does not exist here, so it reads as a hub id (diffusers' own rule), not checked
    assert "generators" not in message and "org/hub-model" not in message

    for folder in ("photos", "models/sd", "ddpm", "weights", "../old-run"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / "prompts.txt").write_text("a cat\n", encoding="utf-8")
    (tmp_path / "weights" / "resnet.safetensors").write_bytes(b"")
    cfg = parse_config(relative_config(generators=[{"name": "sd", "model": "./models/sd", **SD},
                                                   {"name": "gone", "model": "./models/gone", **SD}]))
    with pytest.raises(ConfigError, match=r"input missing: generators\[1\]\.model = '[^']*/models/gone' "
                                          r"\(model folder not found\)$"):
        check_inputs(cfg)
    check_inputs(parse_config(relative_config(generators=[{"name": "sd", "model": "./models/sd", **SD}])))


@pytest.mark.parametrize("source, path, ok", [
    ("webdataset", "shards/{000..001}.tar", True),
    ("webdataset", "shards/{000..002}.tar", False),  # 002 is missing
    ("parquet", "tables/*.parquet", True),
    ("parquet", "tables/*.tar", False),
    ("parquet", "tables/a.parquet", True),
    ("imagefolder", "tables/a.parquet", False),  # a folder is needed
])
def test_check_inputs_of_source_patterns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source, path, ok) -> None:
    for name in ("shards/000.tar", "shards/001.tar", "tables/a.parquet"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    cfg = parse_config({"run": {"out": "run"}, "real": {"path": path, "source": source}})
    if ok:
        check_inputs(cfg)
    else:
        with pytest.raises(ConfigError, match=r"real\.path"):
            check_inputs(cfg)


# ------------------------------------------------------------------ a worker in another directory


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aigi.generators.tiny import tiny_stable_diffusion

    return tiny_stable_diffusion(tmp_path_factory.mktemp("model") / "sd", seed=4)


def inputs(folder: Path, model: Path) -> None:
    """The same photos, prompts and weights (copied byte for byte) under `folder`."""
    from small_run import png

    (folder / "photos" / "cat").mkdir(parents=True)
    for i in range(3):
        (folder / "photos" / "cat" / f"{i}.png").write_bytes(png(i))
    (folder / "prompts.txt").write_text("a photo of a cat\n", encoding="utf-8")
    shutil.copytree(model, folder / "models" / "sd")


def outputs(run: Path) -> tuple[dict[str, str], list[str]]:
    """(every shard's path relative to the run -> its producer, the image ids)."""
    import pyarrow.parquet as pq

    from aigi.manifests.schema import IMAGES
    from aigi.manifests.shards import shard_meta

    producers, ids = {}, []
    for p in sorted(run.rglob("*.parquet")):
        meta = shard_meta(p)
        producers[p.relative_to(run).as_posix()] = meta["producer"]
        if meta["schema"] == IMAGES.name:
            ids += pq.read_table(p, columns=["image_id"]).column("image_id").to_pylist()
    return producers, sorted(ids)


def test_same_relative_config_from_two_directories_run_by_a_worker_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: Path
) -> None:
    """Each config is loaded in its own directory, then run from a third one, as a Dask worker
    with another working directory runs it: the outputs land in the config's directory, the real
    photos are read (not quarantined as unreadable), and both runs make the same ids and
    producers."""
    from aigi.pipeline.run import run

    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    cfg = {
        "run": {"out": "run", "seed": 3},
        "prompts": {"source": "file", "path": "prompts.txt"},
        "real": {"path": "photos", "class_from_folder": True, "unit_size": 2},
        "generators": [{"name": "sd", "model": "models/sd", **SD}],
    }
    results = []
    for d in ("a", "b"):
        inputs(tmp_path / d, model)
        monkeypatch.chdir(tmp_path / d)
        config = parse_config(cfg, file=f"{d}/config.toml")
        monkeypatch.chdir(elsewhere)
        run(config, serial=True, stream=io.StringIO())
        assert not any(elsewhere.iterdir())
        produced, ids = outputs(tmp_path / d / "run")
        assert len(ids) == 3 + 2  # three photos (none quarantined as unreadable), one prompt x two images
        results.append((produced, ids, json.loads((tmp_path / d / "run" / "run.json").read_text())))
    (prod_a, ids_a, info_a), (prod_b, ids_b, info_b) = results
    assert ids_a == ids_b
    assert prod_a == prod_b
    assert info_a["config"]["run"]["out"] == str(tmp_path / "a" / "run")


def test_a_detectors_local_weights_count_by_content_not_path(tmp_path: Path) -> None:
    import shutil

    from aigi.detectors.registry import get

    cls = get("resnet_dire")
    a = tmp_path / "a" / "resnet.safetensors"
    a.parent.mkdir()
    a.write_bytes(b"weights" * 100)
    b = tmp_path / "b" / "moved.safetensors"
    b.parent.mkdir()
    shutil.copy(a, b)
    fp = [cls(cls.Config(pretrained=str(p))).fingerprint("inputs") for p in (a, b)]
    assert fp[0] == fp[1]  # the same bytes elsewhere: the same detector
    b.write_bytes(b"other weights")
    assert cls(cls.Config(pretrained=str(b))).fingerprint("inputs") != fp[0]  # new weights: new work
