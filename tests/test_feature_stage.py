"""The feature stage: several features share one pass over the images, resume per feature, and
store where the config and the weights (not the folder) say."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from aigi.core.configtools import to_dict
from aigi.features.registry import get
from aigi.features.store import feature_meta, read_features
from aigi.manifests.imagebytes import encode_png
from aigi.manifests.rundir import RunDir
from aigi.pipeline.cluster import SerialExecutor
from aigi.pipeline.config import parse_config
from aigi.pipeline.runner import run_stages
from aigi.pipeline.stage import RunContext
from aigi.pipeline.stages.features import FeatureStage, group_by_device, run_batches


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: to_dict(get(name).tiny(root / name)) for name in ("lare", "clip_rn50")}


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    folder = tmp_path / "photos" / "cat"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return tmp_path / "photos"


def context(tmp_path: Path, photos: Path, features: dict) -> RunContext:
    cfg = parse_config({
        "run": {"out": str(tmp_path / "run"), "seed": 3},
        "real": {"path": str(photos), "class_from_folder": True, "unit_size": 2},
        "features": features,
    })
    return RunContext(cfg, RunDir(tmp_path / "run").make())


def run_all(ctx: RunContext):
    from aigi.pipeline.run import build_stages
    from aigi.pipeline.runner import forget_other_plans

    stages = build_stages(ctx)
    forget_other_plans(ctx.run.logs, [s.label for s in stages])  # as `aigi run` does
    return run_stages(stages, SerialExecutor(), ctx.run.logs, io.StringIO())


def test_features_on_one_device_form_one_stage(tmp_path, photos, models):
    ctx = context(tmp_path, photos, {"lare": models["lare"], "clip_rn50": models["clip_rn50"]})
    results = run_all(ctx)
    [feat] = [r for r in results if r.label.startswith("features/")]
    assert feat.label == "features/lare+clip_rn50" and feat.units == 3 and feat.items == 5
    for name in ("lare", "clip_rn50"):
        [store] = ctx.run.features.glob(f"{name}-*")
        shards = sorted(store.glob("real/*.parquet"))
        assert len(shards) == 3
        ids, arr = read_features(shards, next(iter(get(name)(ctx.config.features[name]).columns())))
        assert len(ids) == 5 and len(set(ids)) == 5
        meta = feature_meta(shards[0])
        assert meta["extractor"] == name and meta["model_revision"].startswith("sha256:")
        assert meta["preprocessing"] == get(name)(ctx.config.features[name]).preprocessing()
    assert group_by_device({"a": ctx.config.features["lare"], "b": ctx.config.features["clip_rn50"]}) == [
        {"a": ctx.config.features["lare"], "b": ctx.config.features["clip_rn50"]}
    ]


def test_stage_output_equals_extract_and_a_new_feature_runs_alone(tmp_path, photos, models):
    ctx = context(tmp_path, photos, {"lare": models["lare"]})
    run_all(ctx)
    [lare_store] = ctx.run.features.glob("lare-*")
    before = {p: p.stat().st_mtime_ns for p in lare_store.rglob("*.parquet")}

    # Adding a feature later: the group now holds both, and only the new one is computed.
    ctx2 = context(tmp_path, photos, {"lare": models["lare"], "clip_rn50": models["clip_rn50"]})
    [feat] = [r for r in run_all(ctx2) if r.label.startswith("features/")]
    assert all(s["features"] == ["clip_rn50"] for s in feat.summaries)
    assert {p: p.stat().st_mtime_ns for p in lare_store.rglob("*.parquet")} == before

    # The stored values are what the extractor computes on the decoded images with the stored seeds.
    from aigi.manifests.schema import IMAGES
    from aigi.manifests.shards import read_shards

    shards = sorted(lare_store.glob("real/*.parquet"))
    ids, got = read_features(shards, "lare")
    seeds = pa.concat_tables([pa.parquet.read_table(s, columns=["seed"]) for s in shards]).column("seed").to_pylist()
    images = read_shards(ctx.run.image_shards("real"), IMAGES)
    by_id = {r["image_id"]: r for r in images.to_pylist()}
    ex = get("lare")(ctx.config.features["lare"])
    ex.load("cpu")
    rows = [by_id[i] for i in ids]
    pil = [Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB") for r in rows]
    from aigi.core.determinism import pinned_threads

    with pinned_threads(ctx.config.run.torch_threads):  # the thread count the stage's units use
        want = ex.extract(pil, rows, seeds)["lare"]
    np.testing.assert_array_equal(got, want)


def test_store_location_follows_weights_not_folder(tmp_path, photos, models):
    moved = tmp_path / "moved-model"
    shutil.copytree(models["lare"]["model"], moved)
    a = context(tmp_path, photos, {"lare": models["lare"]})
    b = context(tmp_path, photos, {"lare": {**models["lare"], "model": str(moved)}})
    from aigi.pipeline.stages.ingest import IngestStage

    run_stages([IngestStage(a, a.config.reals[0])], SerialExecutor(), a.run.logs, io.StringIO())
    outs_a = [u.output for u in FeatureStage(a, a.config.features).plan()]
    outs_b = [u.output for u in FeatureStage(b, b.config.features).plan()]
    assert outs_a == outs_b


def test_run_batches_prefetch_gives_the_same_result_as_one_batch(models):
    ex = get("lare")(get("lare").Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in models["lare"].items()}))
    ex.load("cpu")
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(7)]
    data = pa.array([encode_png(im) for im in ims])
    rows = [{"class_name": "cat"}] * 7
    seeds = list(range(7))
    parts = run_batches({"lare": ex}, data, rows, {"lare": seeds}, batch=3, threads=2)
    assert len(parts["lare"]["lare"]) == 3  # 3 + 3 + 1
    np.testing.assert_array_equal(np.concatenate(parts["lare"]["lare"]), ex.extract(ims, rows, seeds)["lare"])


def test_float16_byte_stream_split_is_a_run_option(tmp_path, photos, models):
    import pyarrow.parquet as pq

    def encodings(store: str, ctx: RunContext) -> tuple:
        [shard, *_] = sorted(next(ctx.run.features.glob(f"{store}-*")).glob("real/*.parquet"))
        return pq.ParquetFile(shard).metadata.row_group(0).column(2).encodings

    plain = context(tmp_path / "a", photos, {"lare": models["lare"]})
    run_all(plain)
    assert "BYTE_STREAM_SPLIT" not in encodings("lare", plain)  # DuckDB-readable float16 by default
    cfg = parse_config({
        "run": {"out": str(tmp_path / "b" / "run")},
        "real": {"path": str(photos), "class_from_folder": True, "unit_size": 2},
        "feature_store": {"float16_byte_stream_split": True},
        "features": {"lare": models["lare"]},
    })
    split = RunContext(cfg, RunDir(tmp_path / "b" / "run").make())
    run_all(split)
    assert "BYTE_STREAM_SPLIT" in encodings("lare", split)


def test_status_shows_the_current_feature_group_only(tmp_path, photos, models):
    from aigi.pipeline.runner import stage_status

    run_all(context(tmp_path, photos, {"lare": models["lare"]}))
    ctx = context(tmp_path, photos, {"lare": models["lare"], "clip_rn50": models["clip_rn50"]})
    run_all(ctx)
    rows = {r["stage"]: r for r in stage_status(ctx.run.logs)}
    assert "features/lare" not in rows
    assert rows["features/lare+clip_rn50"]["done"] == rows["features/lare+clip_rn50"]["total"] == 3
