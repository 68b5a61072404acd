"""Stage: aligned fakes — one fake per real image of a real source, a shard per real shard.

A unit reads one shard of the parent source and writes the fakes of its reals: each real is
decoded (by the shared decoder, in a thread pool that runs ahead of the model), fitted to the
entry's size, given its mask and prompt, generated in batches of equal settings, optionally
pasted back, measured against its fitted parent (PSNR, SSIM) and encoded as PNG. A real that
cannot be decoded, is smaller than `min_side`, or lacks the source mask an entry asks for is
written to `RUN/quarantine/aligned/<generator>/` with the reason; the unit goes on. A real whose
generation raises is left out and retried alone by the next run (`stages/retry.py`).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa

from aigi.core.devices import resolve_device
from aigi.generators.base import Generator, GeneratorConfig
from aigi.generators.settings import Settings, draw
from aigi.manifests.ids import content_id, derive_seed, fingerprint, sha256_bytes
from aigi.manifests.imagebytes import encode_png
from aigi.manifests.schema import IMAGES, QUARANTINE
from aigi.manifests.shards import read_shard, read_shards, write_shard
from aigi.pipeline.stage import RunContext, Unit
from aigi.pipeline.stages.common import num_rows, planned_outputs, producer_of, shard_index
from aigi.pipeline.stages.generate import GeneratorStage, halving_on_oom
from aigi.pipeline.stages.retry import failure, one_by_one, raise_if_all_failed, retry_units

ALIGNED_VERSION = 1
PARENT_COLUMNS = ["image_id", "image", "prompt", "class_id", "class_name", "mask"]
DECODE_THREADS = 8  # PNG encoding of a 512² fake takes ~30 ms of CPU: the GPU makes them faster
#: Modes that run a sampler: their rows record steps, guidance and the scheduler.
SAMPLED = ("regenerate", "inpaint", "img2img")


class AlignedStage(GeneratorStage):
    name = "aligned"

    def __init__(self, ctx: RunContext, gen: GeneratorConfig) -> None:
        super().__init__(ctx, gen)
        self.parent = gen.aligned.parent or ctx.config.reals[0].name

    @property
    def label(self) -> str:
        return f"aligned/{self.gen.name}"

    def plan(self) -> list[Unit]:
        shards = planned_outputs(self.ctx, f"ingest/{self.parent}")
        classes = self._classes(shards) if self.gen.aligned.prompt == "other_class" else []
        units = []
        for i, shard in enumerate(shards):
            producer = fingerprint(
                ["aligned", ALIGNED_VERSION, self._fp, self.ctx.config.run.seed, producer_of(shard), classes]
            )
            out = self.ctx.run.image_dir(self.gen.name) / f"{shard_index(i)}-{producer[:8]}.parquet"
            n = num_rows(shard)
            unit = Unit(self.label, f"{self.gen.name}/{shard_index(i)}", str(out), producer, n,
                        {"reals": str(shard), "classes": classes})
            units += [unit, *retry_units(unit)]
        return units

    @staticmethod
    def _classes(shards: list[Path]) -> list[str]:
        """The source's classes, for prompts of another class than the parent's (B-Free)."""
        names = read_shards(shards, IMAGES, columns=["class_name"]).column("class_name").drop_null()
        return sorted(set(names.to_pylist()))

    def process(self, unit: Unit, state: Generator) -> dict[str, Any]:
        from aigi.generators import _aligned as al

        gen, mode = self.gen, self.gen.mode
        reals = read_shard(unit.payload["reals"], IMAGES, columns=PARENT_COLUMNS).to_pylist()
        # each real's row number in its shard: what a failed item is recorded (and retried) by
        positions = list(range(len(reals)))
        if unit.payload.get("only") is not None:  # a retry unit: just the parents that failed before
            positions = sorted(set(unit.payload["only"]) & set(positions))
            reals = [reals[i] for i in positions]
        run_seed = self.ctx.config.run.seed
        seeds = [derive_seed(run_seed, gen.name, r["image_id"]) for r in reals]
        settings = [draw(gen, s) for s in seeds]
        numbers = [al.draw_aligned(gen.aligned, s) for s in seeds]
        on_gpu = not resolve_device(gen.device).startswith("cpu")
        rows: list[Any] = [None] * len(reals)  # futures of the rows
        bad: list[dict[str, str]] = []
        failed: list[dict[str, Any]] = []
        stats = {"oom_retries": 0}
        provenance: dict[str, Any] = {}
        # On a GPU a thread pool decodes ahead and encodes behind the model; on a CPU it would only
        # take cores from the model, so the same calls run inline.
        with (ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="aigi-aligned") if on_gpu else _Inline()) as pool:
            # Decoding, fitting and masks of every real start now and run ahead of the model.
            prepared = [pool.submit(self._prepare, r, st, nb, unit.payload["classes"])
                        for r, st, nb in zip(reals, settings, numbers, strict=True)]
            groups: dict[tuple[Settings, float], list[int]] = {}
            for i, (st, nb) in enumerate(zip(settings, numbers, strict=True)):
                strength = nb["strength"] if mode in ("inpaint", "img2img") else 1.0
                groups.setdefault((st, strength), []).append(i)
            for (st, strength), idx in groups.items():
                prov = state.provenance(st)
                provenance[prov["scheduler"]] = prov
                ready = []
                for i in idx:
                    got = prepared[i].result()
                    if isinstance(got, str):
                        bad.append({"stage": self.label, "unit": unit.key, "item": reals[i]["image_id"], "reason": got})
                    else:
                        ready.append((i, got))
                for lo in range(0, len(ready), gen.batch_size):
                    got = dict(ready[lo : lo + gen.batch_size])

                    def call(idx: list[int], got: dict[int, Any] = got, st: Settings = st,
                             strength: float = strength) -> list[Any]:
                        return halving_on_oom(
                            lambda parents, masks, prompts, s: state.generate_aligned(
                                mode, parents, masks, prompts, s, st, strength),
                            [[got[i]["parent"] for i in idx], [got[i]["mask"] for i in idx],
                             [got[i]["prompt"] for i in idx], [seeds[i] for i in idx]],
                            stats,
                        )

                    idx, fakes = one_by_one(call, list(got), failed, lambda i, e: failure(
                        positions[i], e, parent_id=reals[i]["image_id"], seed=seeds[i]))
                    if not idx:
                        continue
                    batch = [(i, got[i]) for i in idx]
                    if gen.aligned.paste_back:
                        fakes = [al.paste_back(f, b["parent"], b["mask"]) if b["mask"] is not None else f
                                 for (_, b), f in zip(batch, fakes, strict=True)]
                    # measured where the model runs (cheap there), encoded in the pool (overlapped)
                    metrics = al.change_metrics([b["parent"] for _, b in batch], fakes, getattr(state, "device", "cpu"))
                    for (i, b), fake, m in zip(batch, fakes, metrics, strict=True):
                        rows[i] = pool.submit(self._row, reals[i], b, fake, m, seeds[i], st, strength, prov)
        raise_if_all_failed(failed, len(reals) - len(bad))
        done = [r.result() for r in rows if r is not None]
        if bad:
            qpath = self.ctx.run.quarantine / "aligned" / gen.name / Path(unit.output).name
            write_shard(pa.Table.from_pylist(bad, schema=QUARANTINE.arrow), qpath, QUARANTINE, unit.producer)
        table = pa.Table.from_pylist(done, schema=IMAGES.arrow)
        first = {**next(iter(provenance.values()), {}), "schedulers": sorted(provenance), "mode": mode}
        write_shard(table, unit.output, IMAGES, unit.producer,
                    extra={"generator": gen.name, "parent_source": self.parent, "provenance": first,
                           "failed": failed})
        return {"items": len(done), "quarantined": len(bad), "failed_items": len(failed),
                "provenance": {gen.name: first}, **stats}

    def _prepare(self, real: dict[str, Any], st: Settings, nb: dict[str, float], classes: list[str]) -> Any:
        """The fitted parent, mask and prompt of one real; or the reason it cannot be used."""
        from aigi.generators import _aligned as al
        from aigi.manifests.imagebytes import BadImage, decode_rgb

        cfg = self.gen.aligned
        try:
            image = decode_rgb(real["image"]["bytes"])
        except BadImage as e:
            return e.reason
        if min(image.size) < cfg.min_side:
            return f"too small for the size policy: {image.width}x{image.height}, min_side {cfg.min_side}"
        size = (st.width, st.height)
        parent, box = al.fit(image, size, cfg.fit)
        mask = None
        if self.gen.mode == "inpaint":
            if cfg.mask == "box":
                mask = al.box_mask(size, nb["area"], nb["u2"], nb["u3"])
            elif cfg.mask == "strokes":
                mask = al.stroke_mask(size, nb["area"], nb["u2"])
            else:
                if real["mask"] is None:
                    return "no mask in its source (mask = \"source\")"
                mask = al.fit(decode_rgb(real["mask"]["bytes"]).convert("L"), size, cfg.fit)[0]
                mask = mask.point(lambda v: 255 if v > 127 else 0)
                if al.mask_area(mask) == 0:
                    return "its source mask is empty after the size policy"
        other = al.pick_other(classes, real["class_name"], nb["u3"]) if cfg.prompt == "other_class" else None
        prompt = al.prompt_for(cfg, real["prompt"], real["class_name"], other)
        return {"parent": parent, "mask": mask, "prompt": prompt, "box": box}

    def _row(self, real: dict[str, Any], b: dict[str, Any], fake: Any, metrics: dict[str, float], seed: int,
             st: Settings, strength: float, prov: dict[str, Any]) -> dict[str, Any]:
        from aigi.generators._aligned import mask_area
        from aigi.prompts.table import prompt_id

        gen, mode = self.gen, self.gen.mode
        data = encode_png(fake)
        image_id = content_id("aligned", self._fp, real["image_id"], seed)
        sampled = mode in SAMPLED
        return {
            **dict.fromkeys(IMAGES.arrow.names),
            "image_id": image_id,
            "image": {"bytes": data, "path": f"{image_id}.png"},
            "label": 1,
            "source": gen.name,
            "sha256": sha256_bytes(data),
            "width": fake.width,
            "height": fake.height,
            "format": "PNG",
            "prompt_id": prompt_id(b["prompt"]) if sampled and b["prompt"] else None,
            "prompt": b["prompt"] if sampled else None,
            "class_id": real["class_id"],
            "class_name": real["class_name"],
            "model": prov["model"],
            "revision": prov["revision"],
            "pipeline": prov["pipeline"],  # what made the fake (an inpainting pipeline, a VAE)
            "scheduler": prov["scheduler"] if sampled else None,
            "scheduler_config": prov["scheduler_config"] if sampled else None,
            "steps": st.steps if sampled else None,
            "guidance": st.guidance if sampled else None,
            "seed": seed,
            "dtype": prov["dtype"],
            "negative_prompt": (st.negative_prompt or None) if sampled else None,
            "safety_checker": bool(prov["safety_checker"]),
            "parent_id": real["image_id"],
            "aligned_mode": mode,
            "strength": strength if mode in ("inpaint", "img2img", "regenerate") else None,
            "mask": {"bytes": encode_png(b["mask"]), "path": None} if b["mask"] is not None else None,
            "mask_area": mask_area(b["mask"]) if mode in ("inpaint", "regenerate") else None,
            "psnr": metrics["psnr"],
            "ssim": metrics["ssim"],
            "lpips": None,
        }


class _Inline:
    """An executor that runs each call at once, in the caller's thread."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Any, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # delivered by .result(), as a pool would
            future.set_exception(e)
        return future
