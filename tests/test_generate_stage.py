"""The generate stage: sampling settings drawn per image, identity by weights content, row ranges."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from aigi.core.configtools import ConfigError, build
from aigi.generators.base import GeneratorConfig
from aigi.generators.settings import FloatRange, IntRange, draw
from aigi.manifests.rundir import RunDir
from aigi.pipeline.cluster import SerialExecutor
from aigi.pipeline.config import parse_config
from aigi.pipeline.runner import run_stages
from aigi.pipeline.stage import RunContext


def cfg_of(**kw) -> GeneratorConfig:
    return build(GeneratorConfig, {"name": "g", "family": "stable_diffusion", "model": "m", **kw}, "generators[0]")


def test_settings_are_drawn_per_image_reproducibly_within_their_ranges():
    cfg = cfg_of(steps={"min": 10, "max": 12}, guidance={"min": 2.0, "max": 4.0},
                 size=[[64, 64], [96, 64]], scheduler=["", "DPMSolverMultistepScheduler"],
                 negative_prompt=["", "blurry"])
    assert isinstance(cfg.steps, IntRange) and isinstance(cfg.guidance, FloatRange)
    drawn = [draw(cfg, s) for s in range(400)]
    assert drawn == [draw(cfg, s) for s in range(400)]  # a function of the seed alone
    assert {d.steps for d in drawn} == {10, 11, 12}
    assert all(2.0 <= d.guidance <= 4.0 and round(d.guidance, 3) == d.guidance for d in drawn)
    assert {(d.width, d.height) for d in drawn} == {(64, 64), (96, 64)}
    assert {d.scheduler for d in drawn} == {"", "DPMSolverMultistepScheduler"}
    assert {d.negative_prompt for d in drawn} == {"", "blurry"}
    # Fixing one setting does not change what the others draw.
    fixed = cfg_of(steps=11, guidance={"min": 2.0, "max": 4.0}, size=[[64, 64], [96, 64]],
                   scheduler=["", "DPMSolverMultistepScheduler"], negative_prompt=["", "blurry"])
    assert [(d.guidance, d.width) for d in drawn] == [(d.guidance, d.width) for d in (draw(fixed, s) for s in range(400))]


@pytest.mark.parametrize("table, key", [
    ({"steps": {"min": 5, "max": 2}}, "generators[0].steps.max"),
    ({"steps": [10, 0]}, "generators[0].steps"),
    ({"size": [[64, 64], [64, 60]]}, "generators[0].size"),
    ({"guidance": {"min": -1.0, "max": 2.0}}, "generators[0].guidance"),
])
def test_bad_settings_name_the_key(table, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        cfg_of(**table)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from aigi.generators.tiny import tiny_stable_diffusion

    return tiny_stable_diffusion(tmp_path_factory.mktemp("sd"), seed=4)


def run_generation(out: Path, model: Path, **gen) -> RunContext:
    from aigi.pipeline.stages.generate import GenerateStage
    from aigi.pipeline.stages.prompts import PromptsStage

    cfg = parse_config({
        "run": {"out": str(out), "seed": 9},
        "prompts": {"classes": ["tench", "goldfish", "volcano"]},
        "generators": [{"name": "g", "family": "stable_diffusion", "model": str(model), "steps": 2,
                        "size": [32, 32], "images_per_prompt": 2, "unit_size": 4, **gen}],
    })
    ctx = RunContext(cfg, RunDir(out).make())
    run_stages([PromptsStage(ctx), GenerateStage(ctx, cfg.generators[0])], SerialExecutor(), ctx.run.logs, io.StringIO())
    return ctx


def rows_of(ctx: RunContext) -> list[dict]:
    from aigi.pipeline.stages.common import image_shards

    return sorted((r for p in image_shards(ctx) for r in pq.read_table(p).to_pylist()), key=lambda r: r["image_id"])


def test_rows_record_the_settings_used_and_images_match_them(tmp_path, tiny_sd):
    ctx = run_generation(tmp_path / "run", tiny_sd, steps=[2, 3], size=[[32, 32], [48, 32]],
                         guidance={"min": 1.5, "max": 3.0}, negative_prompt=["", "blurry"])
    rows = rows_of(ctx)
    assert len(rows) == 6 and len({r["image_id"] for r in rows}) == 6
    for r in rows:
        st = draw(ctx.config.generators[0], r["seed"])
        assert (r["steps"], r["guidance"], r["width"], r["height"]) == (st.steps, st.guidance, st.width, st.height)
        assert (r["negative_prompt"] or "") == st.negative_prompt
        assert r["scheduler"] == "DDIMScheduler" and r["scheduler_config"] and r["safety_checker"] is False
        assert r["revision"].startswith("sha256:")
    assert len({(r["width"], r["height"]) for r in rows}) >= 1


def test_same_config_elsewhere_gives_same_ids_and_bytes_and_changed_weights_redo_the_work(tmp_path, tiny_sd):
    from aigi.pipeline.stages.common import image_shards

    a = rows_of(run_generation(tmp_path / "a", tiny_sd))
    moved = Path(shutil.copytree(tiny_sd, tmp_path / "elsewhere" / "model"))
    b = rows_of(run_generation(tmp_path / "b", moved))
    assert [r["image_id"] for r in a] == [r["image_id"] for r in b]
    assert [r["image"]["bytes"] for r in a] == [r["image"]["bytes"] for r in b]
    # Weights changed in place under the same path: the re-run redoes the work in new shards,
    # keeps the old ones untouched, and later stages see only the new ones.
    old_shards = {p: p.read_bytes() for p in (tmp_path / "b" / "images" / "g").glob("*.parquet")}
    weights = next(moved.glob("unet/*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-8] ^= 0xFF
    weights.write_bytes(bytes(data))
    ctx = run_generation(tmp_path / "b", moved)
    assert all(p.read_bytes() == blob for p, blob in old_shards.items())
    current = image_shards(ctx)
    assert len(current) == len(old_shards) and not set(current) & set(old_shards)
    redone = sorted((r for p in current for r in pq.read_table(p).to_pylist()), key=lambda r: r["image_id"])
    assert len(redone) == 6 and not {r["image_id"] for r in redone} & {r["image_id"] for r in b}
    assert redone[0]["revision"] != b[0]["revision"]


def test_planning_a_million_prompts_is_fast(tmp_path):
    from aigi.manifests.schema import PROMPTS
    from aigi.manifests.shards import write_shard
    from aigi.pipeline.stages.generate import GenerateStage, read_items

    n = 1_000_000
    ids = [f"p{i:07d}" for i in range(n)]
    rd = RunDir(tmp_path / "run").make()
    write_shard({"prompt_id": ids, "prompt": ids, "class_id": [None] * n, "class_name": [None] * n,
                 "source": ["file"] * n}, rd.prompts / "prompts.parquet", PROMPTS, "p", row_group_size=4096)
    cfg = parse_config({"run": {"out": str(rd.root)}, "prompts": {"source": "file", "path": "x"},
                        "generators": [{"name": "g", "family": "stable_diffusion", "model": str(tmp_path),
                                        "unit_size": 256}]})
    stage = GenerateStage(RunContext(cfg, rd), cfg.generators[0])
    t0 = time.perf_counter()
    units = stage.plan()
    assert time.perf_counter() - t0 < 30  # seconds, on a 2-core CI machine (measured ~3 s)
    assert len(units) == n // 256 + 1 and sum(u.n_items for u in units) == n
    items = read_items(units[1234].payload)
    assert [it["prompt_id"] for it in items] == ids[1234 * 256 : 1235 * 256]
    assert np.all([it["k"] == 0 for it in items])


@pytest.mark.parametrize("family, table, key", [
    ("dit", {"negative_prompt": "blurry"}, "generators[0].negative_prompt"),
    ("ddpm", {"guidance": 3.0}, "generators[0].guidance"),
    ("flux", {"negative_prompt": "blurry"}, "generators[0].negative_prompt"),
    ("stable_diffusion", {"trust_remote_code": True}, "generators[0].trust_remote_code"),
])
def test_a_value_the_family_cannot_use_is_a_config_error(family, table, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_config({"run": {"out": "x"}, "prompts": {"classes": ["tench"]},
                      "generators": [{"name": "g", "family": family, "model": "m", **table}]})


def test_class_conditional_family_needs_class_prompts():
    with pytest.raises(ConfigError, match="class-conditional"):
        parse_config({"run": {"out": "x"}, "prompts": {"source": "file", "path": "p.txt"},
                      "generators": [{"name": "g", "family": "dit", "model": "m"}]})


def test_a_family_that_cannot_import_fails_alone(monkeypatch):
    import sys

    from aigi.generators import registry

    monkeypatch.setitem(sys.modules, "aigi.generators.flux", None)  # as if its import failed
    with pytest.raises(ImportError, match="'flux' cannot be imported"):
        registry.get("flux")
    assert registry.get("sdxl").family == "sdxl"


@pytest.mark.parametrize("family", __import__("aigi.generators.registry", fromlist=["names"]).names())
def test_every_family_through_the_stage_fills_every_provenance_column(family, tmp_path):
    from aigi.core.configtools import to_dict
    from aigi.generators.registry import get
    from aigi.pipeline.stages.generate import GenerateStage
    from aigi.pipeline.stages.prompts import PromptsStage

    cls = get(family)
    entry = {k: v for k, v in to_dict(cls.tiny(tmp_path / "model", name="g")).items() if v not in ("", None)}
    entry.update(images_per_prompt=1, unit_size=2)

    def run(out: Path) -> list[dict]:
        cfg = parse_config({"run": {"out": str(out), "seed": 3}, "prompts": {"classes": ["tench", "daisy"]},
                            "generators": [entry]})
        ctx = RunContext(cfg, RunDir(out).make())
        run_stages([PromptsStage(ctx), GenerateStage(ctx, cfg.generators[0])], SerialExecutor(),
                   ctx.run.logs, io.StringIO())
        return rows_of(ctx)

    rows = run(tmp_path / "a")
    assert len(rows) == 2
    for r in rows:
        for col in ("image_id", "model", "revision", "pipeline", "scheduler", "scheduler_config", "seed", "dtype",
                    "safety_checker", "width", "height", "sha256", "prompt_id"):
            assert r[col] is not None and r[col] != "", (family, col)
        for key in ("steps", "guidance"):
            assert (r[key] is not None) == (key in cls.honours), (family, key)
        assert r["class_id"] is not None if cls.conditioning == "class" else True
    # Same config, same machine, same versions: byte-identical PNGs and the same ids.
    again = run(tmp_path / "b")
    assert [(r["image_id"], r["image"]["bytes"]) for r in rows] == [(r["image_id"], r["image"]["bytes"]) for r in again]


def test_out_of_memory_halves_the_batch_and_counts_the_retries():
    import torch

    from aigi.pipeline.stages.generate import generate_with_retry

    class Fussy:
        """Runs out of GPU memory on any batch of more than 2 images."""

        calls: list[int] = []

        def generate(self, prompts, class_ids, seeds, settings):
            self.calls.append(len(prompts))
            if len(prompts) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return [f"img{s}" for s in seeds]

    stats = {"oom_retries": 0}
    gen = Fussy()
    out = generate_with_retry(gen, list("abcdefg"), [None] * 7, list(range(7)), draw(cfg_of(), 0), stats)
    assert out == [f"img{s}" for s in range(7)]  # every image, in order
    assert stats["oom_retries"] == 3 and max(c for c in gen.calls if c <= 2) == 2
