"""Stage: generate images with one configured generator, a shard per unit of prompts × k."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from aigi.generators.base import Generator, GeneratorConfig
from aigi.manifests.ids import content_id, derive_seed, fingerprint, sha256_bytes
from aigi.manifests.imagebytes import encode_png
from aigi.manifests.schema import IMAGES, PROMPTS
from aigi.manifests.shards import read_shard, write_shard
from aigi.pipeline.stage import RunContext, Stage, Unit
from aigi.pipeline.stages.common import chunks, shard_index


class GenerateStage(Stage):
    name = "generate"
    gpu = True

    def __init__(self, ctx: RunContext, gen: GeneratorConfig) -> None:
        super().__init__(ctx)
        self.gen = gen

    @property
    def label(self) -> str:
        return f"generate/{self.gen.name}"

    def plan(self) -> list[Unit]:
        prompts = read_shard(self.ctx.run.prompts / "prompts.parquet", PROMPTS).to_pylist()
        items = [
            (p["prompt_id"], p["prompt"], p["class_id"], p["class_name"], k)
            for p in prompts
            for k in range(self.gen.images_per_prompt)
        ]
        gen_fp = self.gen.fingerprint()
        seed = self.ctx.config.run.seed
        units = []
        for i, chunk in enumerate(chunks(items, self.gen.unit_size)):
            producer = fingerprint(["generate", gen_fp, seed, [(it[0], it[4]) for it in chunk]])
            out = self.ctx.run.image_dir(self.gen.name) / f"{shard_index(i)}.parquet"
            units.append(Unit(self.label, f"{self.gen.name}/{shard_index(i)}", str(out), producer, len(chunk), chunk))
        return units

    def setup_key(self) -> str:
        return f"generator:{self.gen.name}:{self.gen.fingerprint()}"

    def device_request(self) -> str:
        return self.gen.device

    def setup(self, device: str) -> Generator:
        from aigi.generators.registry import get

        generator = get(self.gen.family)(self.gen)
        generator.load(device)
        return generator

    def process(self, unit: Unit, state: Generator) -> dict[str, Any]:
        seed = self.ctx.config.run.seed
        gen_fp = self.gen.fingerprint()
        seeds = [derive_seed(seed, self.gen.name, pid, k) for pid, _, _, _, k in unit.payload]
        images = state.generate([it[1] for it in unit.payload], seeds)
        prov = state.provenance()
        rows = []
        for (pid, prompt, class_id, class_name, _k), s, img in zip(unit.payload, seeds, images, strict=True):
            data = encode_png(img)
            image_id = content_id("generated", gen_fp, pid, s)
            rows.append(
                {
                    "image_id": image_id,
                    "image": {"bytes": data, "path": f"{image_id}.png"},
                    "label": 1,
                    "source": self.gen.name,
                    "sha256": sha256_bytes(data),
                    "width": img.width,
                    "height": img.height,
                    "format": "PNG",
                    "jpeg_quality": None,
                    "prompt_id": pid,
                    "prompt": prompt,
                    "class_id": class_id,
                    "class_name": class_name,
                    "model": prov["model"],
                    "revision": prov["revision"],
                    "pipeline": prov["pipeline"],
                    "scheduler": prov["scheduler"],
                    "steps": self.gen.steps,
                    "guidance": self.gen.guidance,
                    "seed": s,
                    "dtype": prov["dtype"],
                    "negative_prompt": self.gen.negative_prompt or None,
                    "origin": None,
                }
            )
        table = pa.Table.from_pylist(rows, schema=IMAGES.arrow)
        write_shard(table, unit.output, IMAGES, unit.producer, extra={"generator": self.gen.name, "provenance": prov})
        return {"items": len(rows), "provenance": {self.gen.name: prov}}
