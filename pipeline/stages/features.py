"""Stage: compute the configured features of every image, one feature shard per image shard each.

The features that run on the same device form one stage, so an image shard is read and decoded
once for all of them, and extractors with equal preprocessing share one preprocessed batch. While
the models work on one batch, a thread pool decodes and preprocesses the next (Pillow and numpy
release the GIL), so the accelerator does not wait on the CPU. A unit writes one shard per
feature; on a re-run only the features whose shard is missing are computed.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from aigi.features.base import FeatureExtractor
from aigi.manifests.ids import derive_seed, fingerprint
from aigi.manifests.schema import IMAGES
from aigi.manifests.shards import read_shard
from aigi.pipeline.stage import RunContext, Stage, Unit, output_done
from aigi.pipeline.stages.common import curated_shards, num_rows, producer_of

FEATURE_INPUT_COLUMNS = ["image_id", "image", "label", "source", "prompt_id", "prompt", "class_id", "class_name"]
#: Images decoded, preprocessed and handed to the models at a time (each model then chunks by its
#: own `batch_size`); the next batch is prepared while this one computes.
PIPELINE_BATCH = 64


def make_extractor(name: str, config: Any) -> FeatureExtractor:
    from aigi.features.registry import get

    return get(name)(config)


def feature_dir(ctx: RunContext, name: str, config: Any) -> Path:
    return ctx.run.feature_dir(name, make_extractor(name, config).fingerprint())


def featurized_shards(ctx: RunContext, perturbed: bool = True) -> list[Path]:
    """The image shards the features are computed on: the curated ones, and the perturbed copies
    of the test images when `[evaluate] perturbations` asks for them."""
    shards = curated_shards(ctx)
    if perturbed and ctx.config.evaluate.perturbations:
        from aigi.pipeline.stages.common import planned_outputs

        shards = shards + planned_outputs(ctx, "perturb")
    return shards


def feature_shards(ctx: RunContext, name: str, config: Any, perturbed: bool = False) -> list[Path]:
    """A feature's shards, one per image shard (`perturbed`: the perturbed copies' too)."""
    base = feature_dir(ctx, name, config)
    return [base / s.parent.name / s.name for s in featurized_shards(ctx, perturbed)]


def group_by_device(features: dict[str, Any]) -> list[dict[str, Any]]:
    """Features that request the same device run as one stage, in config order."""
    groups: dict[str, dict[str, Any]] = {}
    for name, cfg in features.items():
        groups.setdefault(getattr(cfg, "device", "auto"), {})[name] = cfg
    return list(groups.values())


class FeatureStage(Stage):
    name = "features"
    gpu = True

    def __init__(self, ctx: RunContext, features: dict[str, Any]) -> None:
        super().__init__(ctx)
        if not features:
            raise ValueError("FeatureStage needs at least one feature")
        self.features = dict(features)
        # Resolving weights (hashing a local model folder) happens once, at construction.
        self.fingerprints = {n: make_extractor(n, c).fingerprint() for n, c in self.features.items()}

    @property
    def label(self) -> str:
        return "features/" + "+".join(self.features)

    def plan(self) -> list[Unit]:
        units = []
        for shard in featurized_shards(self.ctx):
            outs = []
            for name, fp in self.fingerprints.items():
                out = self.ctx.run.feature_dir(name, fp) / shard.parent.name / shard.name
                producer = fingerprint(["features", fp, self.ctx.config.run.seed, producer_of(shard)])
                outs.append((str(out), producer))
            (first, producer), *rest = outs
            units.append(
                Unit(self.label, f"{shard.parent.name}/{shard.stem}", first, producer,
                     num_rows(shard), str(shard), also=tuple(rest))
            )
        return units

    def setup_key(self) -> str:
        return "features:" + ",".join(f"{n}-{fp}" for n, fp in self.fingerprints.items())

    def device_request(self) -> str:
        return getattr(next(iter(self.features.values())), "device", "auto")

    def setup(self, device: str) -> dict[str, FeatureExtractor]:
        state = {}
        for name, cfg in self.features.items():
            extractor = make_extractor(name, cfg)
            extractor.load(device)
            state[name] = extractor
        return state

    def process(self, unit: Unit, state: dict[str, FeatureExtractor]) -> dict[str, Any]:
        from aigi.features.store import write_features

        pending = {
            name: (out, producer)
            for name, (out, producer) in zip(self.features, unit.outputs(), strict=True)
            if not output_done(unit.stage, out, producer)
        }
        table = read_shard(unit.payload, IMAGES, columns=FEATURE_INPUT_COLUMNS)
        rows = table.drop_columns(["image"]).to_pylist()
        images = table.column("image").combine_chunks().field("bytes")
        ids = [r["image_id"] for r in rows]
        extractors = {n: state[n] for n in pending}
        seeds = {n: [derive_seed(self.ctx.config.run.seed, "feature", n, i) for i in ids] for n in pending}
        parts = run_batches(extractors, images, rows, seeds)
        provenance = {}
        for name, (out, producer) in pending.items():
            ex = extractors[name]
            arrays = {
                col: np.concatenate(parts[name][col]) if parts[name].get(col) else np.zeros((0, *shape), dtype=dtype)
                for col, (shape, dtype) in ex.columns().items()
            }
            write_features(
                out, ids, seeds[name], arrays, ex, producer,
                extra={"input": os.path.basename(unit.payload)},
                split_float16=self.ctx.config.feature_store.float16_byte_stream_split,
            )
            provenance[f"feature:{name}"] = {
                "model": getattr(ex.config, "model", ""),
                "revision": ex.model_revision(),
                "fingerprint": self.fingerprints[name],
            }
        return {"items": len(ids), "features": sorted(pending), "provenance": provenance}


def run_batches(
    extractors: dict[str, FeatureExtractor],
    images: Any,
    rows: list[dict[str, Any]],
    seeds: dict[str, list[int]],
    batch: int = PIPELINE_BATCH,
    threads: int | None = None,
    prefetch: bool | None = None,
) -> dict[str, dict[str, list[np.ndarray]]]:
    """Compute every extractor over `images` (encoded bytes), preparing batch i+1 on CPU threads
    while the models run on batch i. Returns name -> column -> list of per-batch arrays.

    `prefetch` defaults to on when a model runs on an accelerator; when every model computes on
    the CPU, preparing ahead only competes with the models for the same cores, so batches are
    prepared (still on the thread pool) just before they are used.
    """
    from aigi.manifests.imagebytes import decode_rgb

    n = len(rows)
    # One preprocessing per distinct key: extractors with equal preprocessing share the array.
    by_key: dict[str, FeatureExtractor] = {}
    key_of = {}
    for name, ex in extractors.items():
        key_of[name] = ex.preprocess_key()
        by_key.setdefault(key_of[name], ex)
    out: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in extractors}
    if not extractors or n == 0:
        return out
    workers = threads or max(1, min(8, (os.cpu_count() or 2)))
    if prefetch is None:
        prefetch = any(_on_accelerator(ex) for ex in extractors.values())

    with ThreadPoolExecutor(workers, thread_name_prefix="aigi-decode") as pool:

        def prepare(lo: int) -> dict[str, np.ndarray]:
            hi = min(lo + batch, n)
            decoded = list(pool.map(lambda i: decode_rgb(images[i].as_py()), range(lo, hi)))
            arrays = {}
            for key, ex in by_key.items():
                arrays[key] = np.stack(list(pool.map(lambda j, ex=ex: ex.preprocess(decoded[j], rows[lo + j]), range(hi - lo))))
            return arrays

        starts = list(range(0, n, batch))
        # A helper thread (not a pool worker, which would deadlock waiting on its own pool)
        # prepares the next batch while this thread runs the models.
        with ThreadPoolExecutor(1, thread_name_prefix="aigi-prefetch") as ahead:
            nxt: Future | None = ahead.submit(prepare, starts[0]) if prefetch else None
            for k, lo in enumerate(starts):
                arrays = nxt.result() if nxt is not None else prepare(lo)
                if prefetch and k + 1 < len(starts):
                    nxt = ahead.submit(prepare, starts[k + 1])
                hi = min(lo + batch, n)
                for name, ex in extractors.items():
                    res = ex.compute(arrays[key_of[name]], rows[lo:hi], seeds[name][lo:hi])
                    for col, arr in res.items():
                        out[name].setdefault(col, []).append(arr)
    return out


def _on_accelerator(extractor: FeatureExtractor) -> bool:
    """Whether the loaded extractor computes on a GPU (or another non-CPU device)."""
    from aigi.core.devices import resolve_device

    device = getattr(extractor.config, "device", "auto")
    return not str(resolve_device(device)).startswith("cpu")
