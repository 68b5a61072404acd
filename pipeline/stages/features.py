"""Stage: compute one feature for every image, a feature shard per image shard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aigi.features.base import FeatureExtractor
from aigi.manifests.ids import derive_seed, fingerprint
from aigi.manifests.schema import IMAGES
from aigi.manifests.shards import read_shard
from aigi.pipeline.stage import RunContext, Stage, Unit
from aigi.pipeline.stages.common import image_shards, num_rows, producer_of

FEATURE_INPUT_COLUMNS = ["image_id", "image", "label", "source", "prompt_id", "prompt", "class_id", "class_name"]


def make_extractor(name: str, config: Any) -> FeatureExtractor:
    from aigi.features.registry import get

    return get(name)(config)


def feature_dir(ctx: RunContext, name: str, config: Any) -> Path:
    return ctx.run.feature_dir(name, make_extractor(name, config).fingerprint())


def feature_shards(ctx: RunContext, name: str, config: Any) -> list[Path]:
    base = feature_dir(ctx, name, config)
    return [base / s.parent.name / s.name for s in image_shards(ctx)]


class FeatureStage(Stage):
    name = "features"
    gpu = True

    def __init__(self, ctx: RunContext, feature: str, config: Any) -> None:
        super().__init__(ctx)
        self.feature = feature
        self.config = config

    @property
    def label(self) -> str:
        return f"features/{self.feature}"

    def plan(self) -> list[Unit]:
        fp = make_extractor(self.feature, self.config).fingerprint()
        units = []
        for shard, out in zip(image_shards(self.ctx), feature_shards(self.ctx, self.feature, self.config), strict=True):
            producer = fingerprint(["features", fp, self.ctx.config.run.seed, producer_of(shard)])
            n = num_rows(shard)
            units.append(Unit(self.label, f"{shard.parent.name}/{shard.stem}", str(out), producer, n, str(shard)))
        return units

    def setup_key(self) -> str:
        return f"feature:{self.feature}:{make_extractor(self.feature, self.config).fingerprint()}"

    def device_request(self) -> str:
        return getattr(self.config, "device", "auto")

    def setup(self, device: str) -> FeatureExtractor:
        extractor = make_extractor(self.feature, self.config)
        extractor.load(device)
        return extractor

    def process(self, unit: Unit, state: FeatureExtractor) -> dict[str, Any]:
        from aigi.features.store import write_features
        from aigi.manifests.imagebytes import decode_rgb

        table = read_shard(unit.payload, IMAGES, columns=FEATURE_INPUT_COLUMNS)
        meta = table.drop_columns(["image"]).to_pylist()
        images = table.column("image").combine_chunks().field("bytes")
        ids = [m["image_id"] for m in meta]
        seeds = [derive_seed(self.ctx.config.run.seed, "feature", self.feature, i) for i in ids]
        batch = max(1, int(getattr(self.config, "batch_size", 16)))
        parts: dict[str, list[np.ndarray]] = {}
        for lo in range(0, len(ids), batch):
            pil = [decode_rgb(images[i].as_py()) for i in range(lo, min(lo + batch, len(ids)))]
            out = state.extract(pil, meta[lo : lo + batch], seeds[lo : lo + batch])
            for col, arr in out.items():
                parts.setdefault(col, []).append(arr)
        columns = state.columns()
        arrays = {
            col: np.concatenate(parts[col]) if col in parts else np.zeros((0, *shape), dtype=dtype)
            for col, (shape, dtype) in columns.items()
        }
        write_features(unit.output, ids, seeds, arrays, state, unit.producer, extra={"input": unit.payload})
        return {"items": len(ids)}
