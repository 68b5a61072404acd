"""Stage: generate images with one configured generator, a shard per unit of prompts × k.

A unit carries the prompts shard and a range of (prompt, k) items, not prompt text, so planning
a caption corpus of millions of prompts stays small. Each image draws its sampling settings
from its seed; images of equal settings are generated together, in batches, and while the model
makes one batch a thread pool encodes the previous one to PNG. A batch that runs out of GPU
memory is split in halves and retried (counted in the unit's summary) instead of failing the run.

An item that fails (the model raises on one prompt, or makes non-finite pixels) does not fail its
unit: a batch that raises is retried image by image, the images that still fail are left out of
the shard and listed, with their errors, in its metadata (`extra.failed`). The next run plans a
retry unit for exactly those items, writing a new shard beside the first (no finished image is
redone, and no shard changes once written, so later stages never see one change under them).
A unit whose every item fails raises: that is not an item's problem.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from aigi.core.devices import resolve_device
from aigi.generators.base import Generator, GeneratorConfig
from aigi.generators.settings import Settings, draw
from aigi.manifests.ids import content_id, derive_seed, fingerprint, sha256_bytes
from aigi.manifests.imagebytes import encode_png
from aigi.manifests.schema import IMAGES, PROMPTS
from aigi.manifests.shards import (
    check_shard,
    parquet_file,
    read_row_groups,
    read_table,
    write_shard,
)
from aigi.pipeline.stage import RunContext, Stage, Unit
from aigi.pipeline.stages.common import shard_index
from aigi.pipeline.stages.retry import failure, one_by_one, raise_if_all_failed, retry_units

PROMPT_COLUMNS = ["prompt_id", "prompt", "class_id", "class_name"]
ENCODE_THREADS = 4


class GeneratorStage(Stage):
    """A stage that runs one configured generator: its model loads once per worker and stays."""

    gpu = True

    def __init__(self, ctx: RunContext, gen: GeneratorConfig) -> None:
        super().__init__(ctx)
        self.gen = gen
        self._fp = gen.fingerprint()  # resolves the weights once (a folder's hash)

    def setup_key(self) -> str:
        return f"generator:{self.gen.name}:{self._fp}"

    def device_request(self) -> str:
        return self.gen.device

    def setup(self, device: str) -> Generator:
        from aigi.generators.registry import get

        generator = get(self.gen.family)(self.gen)
        generator.load(device)
        return generator


class GenerateStage(GeneratorStage):
    name = "generate"

    @property
    def label(self) -> str:
        return f"generate/{self.gen.name}"

    def plan(self) -> list[Unit]:
        path = self.ctx.run.prompts / "prompts.parquet"
        check_shard(path, PROMPTS)
        ids = read_table(path, columns=["prompt_id"]).column("prompt_id").to_pylist()
        return plan_units(self, str(path), ids)

    def preview(self) -> tuple[int, int] | None:
        from aigi.prompts.table import build_prompt_table

        if self.ctx.config.prompts.source == "real":
            return None  # the prompts come from a real source not yet ingested
        n = len(build_prompt_table(self.ctx.config.prompts)) * self.gen.images_per_prompt
        return -(-n // self.gen.unit_size), n

    def process(self, unit: Unit, state: Generator) -> dict[str, Any]:
        items = read_items(unit.payload)
        if unit.payload.get("only") is not None:  # a retry unit: just the items that failed before
            only = set(unit.payload["only"])
            items = [it for it in items if it["index"] in only]
        run_seed = self.ctx.config.run.seed
        seeds = [derive_seed(run_seed, self.gen.name, it["prompt_id"], it["k"]) for it in items]
        settings = [draw(self.gen, s) for s in seeds]
        groups: dict[Settings, list[int]] = {}
        for i, st in enumerate(settings):
            groups.setdefault(st, []).append(i)
        rows: list[dict[str, Any] | None] = [None] * len(items)
        failed: list[dict[str, Any]] = []
        stats = {"oom_retries": 0}
        provenance = {}
        # Encoding overlaps the model only when the model is not on the CPU: there it would only
        # compete with it for the same cores.
        threads = ENCODE_THREADS if not resolve_device(self.gen.device).startswith("cpu") else 1
        with ThreadPoolExecutor(threads, thread_name_prefix="aigi-png") as pool:
            pending: list[tuple[list[int], Future]] = []
            for st, idx in groups.items():
                prov = state.provenance(st)
                provenance[prov["scheduler"]] = prov
                for lo in range(0, len(idx), self.gen.batch_size):
                    batch = idx[lo : lo + self.gen.batch_size]
                    batch, images = self._generate(state, items, seeds, batch, st, stats, failed)
                    if not batch:
                        continue
                    # PNG encoding of this batch overlaps the model's next batch.
                    encoded = pool.submit(lambda ims: [encode_png(im) for im in ims], images)
                    if threads == 1:
                        encoded.result()
                    pending.append((batch, encoded))
                    for i, im in zip(batch, images, strict=True):
                        rows[i] = self._row(items[i], seeds[i], st, prov, im, type(state).honours)
            for batch, fut in pending:
                for i, data in zip(batch, fut.result(), strict=True):
                    row = rows[i]
                    assert row is not None
                    row["image"] = {"bytes": data, "path": f"{row['image_id']}.png"}
                    row["sha256"] = sha256_bytes(data)
        raise_if_all_failed(failed, len(items))
        table = pa.Table.from_pylist([r for r in rows if r is not None], schema=IMAGES.arrow)
        # run.json keeps one record per generator; the schedulers a varied entry used are listed in it.
        first = {**next(iter(provenance.values())), "schedulers": sorted(provenance)}
        write_shard(table, unit.output, IMAGES, unit.producer,
                    extra={"generator": self.gen.name, "provenance": first, "failed": failed})
        return {"items": table.num_rows, "failed_items": len(failed), "provenance": {self.gen.name: first},
                **stats}

    def _generate(self, state: Generator, items: list[dict[str, Any]], seeds: list[int], batch: list[int],
                  st: Settings, stats: dict[str, int], failed: list[dict[str, Any]]) -> tuple[list[int], list[Any]]:
        """(the batch's items that succeeded, their images); the others are added to `failed`."""
        def call(b: list[int]) -> list[Any]:
            return generate_with_retry(state, [items[i]["prompt"] for i in b], [items[i]["class_id"] for i in b],
                                       [seeds[i] for i in b], st, stats)

        return one_by_one(call, batch, failed, lambda i, e: failure(
            items[i]["index"], e, seed=seeds[i], prompt_id=items[i]["prompt_id"], k=items[i]["k"]))


    def _row(
        self, item: dict[str, Any], seed: int, st: Settings, prov: dict[str, Any], im: Any, honours: frozenset[str]
    ) -> dict[str, Any]:
        image_id = content_id("generated", self._fp, item["prompt_id"], seed)
        return {
            "image_id": image_id,
            "image": None,
            "label": 1,
            "source": self.gen.name,
            "sha256": None,
            "width": im.width,
            "height": im.height,
            "format": "PNG",
            "jpeg_quality": None,
            "prompt_id": item["prompt_id"],
            "prompt": item["prompt"],
            "class_id": item["class_id"],
            "class_name": item["class_name"],
            "model": prov["model"],
            "revision": prov["revision"],
            "pipeline": prov["pipeline"],
            "scheduler": prov["scheduler"],
            "scheduler_config": prov["scheduler_config"],
            "steps": st.steps if "steps" in honours else None,
            "guidance": st.guidance if "guidance" in honours else None,
            "seed": seed,
            "dtype": prov["dtype"],
            "negative_prompt": (st.negative_prompt or None) if "negative_prompt" in honours else None,
            "safety_checker": bool(prov["safety_checker"]),
            "origin": None,
            "conversion": None,
            "parent_id": None,
            "aligned_mode": None,
            "strength": None,
            "mask": None,
            "mask_area": None,
            "psnr": None,
            "ssim": None,
            "lpips": None,
        }


def plan_units(stage: GenerateStage, prompts_path: str, prompt_ids: list[str]) -> list[Unit]:
    """Units of `unit_size` consecutive (prompt, k) items; the payload is a row range."""
    gen, k = stage.gen, stage.gen.images_per_prompt
    run_seed = stage.ctx.config.run.seed
    n = len(prompt_ids) * k
    units = []
    for i, lo in enumerate(range(0, n, gen.unit_size)):
        hi = min(lo + gen.unit_size, n)
        # The unit's prompts (by id) name its output: an edited prompt list is new work.
        producer = fingerprint(["generate", stage._fp, run_seed, prompt_ids[lo // k : (hi - 1) // k + 1], lo % k, hi - lo, k])
        # The unit's fingerprint is in the name: changed weights, settings or prompts write new
        # shards (that work is redone) and never overwrite the old ones; prompts appended to the
        # table leave the earlier units' shards as they are.
        out = stage.ctx.run.image_dir(gen.name) / f"{shard_index(i)}-{producer[:8]}.parquet"
        payload = {"prompts": prompts_path, "lo": lo, "hi": hi, "per_prompt": k}
        unit = Unit(stage.label, f"{gen.name}/{shard_index(i)}", str(out), producer, hi - lo, payload)
        units += [unit, *retry_units(unit)]
    return units


def read_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The unit's (prompt row, k) items, reading only the row groups that hold them."""
    k, lo, hi = payload["per_prompt"], payload["lo"], payload["hi"]
    first, last = lo // k, (hi - 1) // k
    pf = parquet_file(payload["prompts"])
    groups, start, offset = [], 0, None
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if start + n > first and start <= last:
            groups.append(g)
            offset = start if offset is None else offset
        start += n
    rows = read_row_groups(payload["prompts"], groups, PROMPT_COLUMNS).to_pylist() if groups else []
    out = []
    for j in range(lo, hi):
        row = rows[j // k - (offset or 0)]
        out.append({**row, "k": j % k, "index": j})
    return out


def generate_with_retry(
    state: Generator, prompts: list[str], class_ids: list[int | None], seeds: list[int],
    settings: Settings, stats: dict[str, int],
) -> list[Any]:
    """Generate; on CUDA out-of-memory, free the cache and retry the two halves (down to one)."""
    return halving_on_oom(lambda p, c, s: state.generate(p, c, s, settings), [prompts, class_ids, seeds], stats)


def halving_on_oom(call: Any, columns: list[list[Any]], stats: dict[str, int]) -> list[Any]:
    """`call(*columns)`; on CUDA out-of-memory, free the cache and call again on the two halves of
    every column (down to one item), counting the retries in `stats["oom_retries"]`."""
    import torch

    try:
        return call(*columns)
    except torch.cuda.OutOfMemoryError:
        if len(columns[0]) == 1:
            raise
        torch.cuda.empty_cache()
        stats["oom_retries"] += 1
        h = len(columns[0]) // 2
        return (halving_on_oom(call, [c[:h] for c in columns], stats)
                + halving_on_oom(call, [c[h:] for c in columns], stats))
