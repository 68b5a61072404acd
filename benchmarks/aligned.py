"""Aligned-fake throughput per mode: aigi's aligned stage vs a plain diffusers loop.

For each mode (vae_roundtrip, regenerate, inpaint, img2img) both sides make one fake per real
photo with the same Stable Diffusion weights, batch size, steps, guidance and strength, one CPU
generator per image, and encode PNGs. aigi's stage also reads the ingested real shards, decodes
and fits each real (centre crop + resize), draws its mask and prompt, measures PSNR / SSIM
against the parent and writes a Parquet shard; the plain loop decodes and fits the same JPEG
bytes (timed), generates and encodes PNGs, so the ratio charges aigi for the masks, prompts,
metrics and Parquet it adds. Model load time is reported apart; ingesting the
reals is done once, before either side is timed. regenerate runs on an inpainting checkpoint
(9-channel UNet), the other modes on the text-to-image one.

    python benchmarks/aligned.py                                     # tiny random-weight SD, CPU
    python benchmarks/aligned.py --model sd15-sized --size 512 --steps 30 --guidance 7.5 \
        --batch 16 --n 128 --dtype float16                           # SD 1.5-sized random weights, GPU
    python benchmarks/aligned.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 \
        --inpaint-model stable-diffusion-v1-5/stable-diffusion-inpainting ...   # real models

The last line printed is one JSON object: images/s of both sides and their ratio, per mode.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
from _real_models import cuda_sync, peak_gpu_gib  # noqa: E402 - benchmarks/_real_models.py, a helper

MODES = ("vae_roundtrip", "regenerate", "inpaint", "img2img")
CLASSES = ["tench", "goldfish", "tree frog", "goldfinch", "volcano", "daisy", "lemon", "espresso"]


def make_photos(path: Path, n: int, size: int) -> Path:
    """A Parquet source of `n` JPEG photos, 5:4 landscape (so fitting crops and resizes), each
    with a caption and a class."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    w, h = size * 5 // 4 + 8, size + 8
    rows = []
    for i in range(n):
        small = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        cls = CLASSES[i % len(CLASSES)]
        rows.append({"image": {"bytes": buf.getvalue(), "path": f"{i}.jpg"}, "caption": f"a photo of a {cls}",
                     "category": cls, "id": f"photo-{i}"})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def photo_bytes(photos: Path) -> list[bytes]:
    import pyarrow.parquet as pq

    return [row["bytes"] for row in pq.read_table(photos, columns=["image"]).column("image").to_pylist()]


def fit_one(data: bytes, size: int) -> Any:
    """A parent as the plain loop makes it: decoded, centre-cropped and resized."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def box(size: int, i: int) -> Any:
    """A box mask covering about a quarter of the image (aigi draws 10-40%), white = repaint."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (size, size), 0)
    q = size // 4 + (i % 3) * size // 16
    ImageDraw.Draw(mask).rectangle([q, q, q + size // 2 - 1, q + size // 2 - 1], fill=255)
    return mask


def plain_loop(args: argparse.Namespace, mode: str, model: str, blobs: list[bytes], prompts: list[str],
               device: str) -> tuple[float, float]:
    """The bare diffusers loop: decoding and fitting the parents, generation, PNG encoding."""
    import diffusers
    import torch
    from PIL import Image

    t0 = time.perf_counter()
    base = diffusers.StableDiffusionPipeline.from_pretrained(
        model, dtype=getattr(torch, args.dtype), safety_checker=None, requires_safety_checker=False
    ).to(device)
    auto = {"img2img": diffusers.AutoPipelineForImage2Image, "inpaint": diffusers.AutoPipelineForInpainting,
            "regenerate": diffusers.AutoPipelineForInpainting}.get(mode)
    pipe = auto.from_pipe(base) if auto else None
    for p in (base, pipe):
        if p is not None:
            p.set_progress_bar_config(disable=True)
    load = time.perf_counter() - t0
    size = args.size

    def batch(lo: int) -> list[Any]:
        ims = [fit_one(b, size) for b in blobs[lo : lo + args.batch]]
        texts = prompts[lo : lo + args.batch]
        gens = [torch.Generator("cpu").manual_seed(lo + i) for i in range(len(ims))]
        if mode == "vae_roundtrip":
            vae, proc = base.vae, base.image_processor
            upcast = vae.dtype == torch.float16 and vae.config.force_upcast
            if upcast:
                vae.to(torch.float32)
            x = proc.preprocess(ims, height=size, width=size).to(device=device, dtype=vae.dtype)
            out = proc.postprocess(vae.decode(vae.encode(x).latent_dist.mean).sample, output_type="pil")
            if upcast:
                vae.to(torch.float16)
            return out
        call: dict[str, Any] = dict(prompt=texts, image=ims, num_inference_steps=args.steps,
                                    guidance_scale=args.guidance, generator=gens, strength=args.strength)
        if mode == "regenerate":
            call.update(mask_image=[Image.new("L", (size, size), 0)] * len(ims), strength=1.0)
        elif mode == "inpaint":
            call["mask_image"] = [box(size, lo + i) for i in range(len(ims))]
        if mode != "img2img":
            call.update(height=size, width=size)
        return pipe(**call).images

    with torch.inference_mode():  # warm-up, so the baseline is not charged first-call costs
        batch(0)
    cuda_sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(blobs), args.batch):
            for im in batch(lo):
                im.save(io.BytesIO(), format="PNG")
    cuda_sync(device)
    return load, time.perf_counter() - t0


def aigi_config(args: argparse.Namespace, photos: Path, models: dict[str, str], device: str, out: Path) -> Any:
    from aigi.pipeline.config import parse_config

    common = {"family": "stable_diffusion", "size": [args.size, args.size], "dtype": args.dtype,
              "batch_size": args.batch, "unit_size": args.unit, "device": device}
    sampled = {"steps": args.steps, "guidance": args.guidance}
    entries = {
        "vae_roundtrip": {"model": models["text"], "aligned": {"vae_sample": "mean"}},
        "regenerate": {"model": models["inpaint"], **sampled, "aligned": {"prompt": "caption"}},
        "inpaint": {"model": models["text"], **sampled,
                    "aligned": {"mask": "box", "strength": args.strength, "prompt": "caption"}},
        "img2img": {"model": models["text"], **sampled, "aligned": {"strength": args.strength, "prompt": "caption"}},
    }
    return parse_config({
        # the plain loop's thread count: aigi pins each unit's ([run] torch_threads, default 1)
        "run": {"out": str(out), "seed": 0, "torch_threads": _threads()},
        "real": {"name": "photos", "source": "parquet", "path": str(photos), "caption_column": "caption",
                 "class_column": "category", "id_column": "id", "class_id_names": "none", "unit_size": args.unit},
        "generators": [{"name": m.replace("_", "-"), "mode": m, **common, **entries[m]} for m in args.modes],
    })


def aigi_stage(ctx: Any, gen: Any) -> tuple[float, float]:
    from aigi.pipeline.cluster import SerialExecutor
    from aigi.pipeline.runner import run_stages
    from aigi.pipeline.stages.aligned import AlignedStage

    [res] = run_stages([AlignedStage(ctx, gen)], SerialExecutor(), ctx.run.logs, io.StringIO())
    load = sum(s["setup_s"] for s in res.summaries)
    return load, res.seconds - load


def ingest(ctx: Any) -> None:
    from aigi.pipeline.cluster import SerialExecutor
    from aigi.pipeline.runner import run_stages
    from aigi.pipeline.stages.ingest import IngestStage

    run_stages([IngestStage(ctx, ctx.config.reals[0])], SerialExecutor(), ctx.run.logs, io.StringIO())


def build_models(args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    """The text-to-image checkpoint and an inpainting one (for regenerate)."""
    if not args.model:
        from aigi.generators.tiny import tiny_stable_diffusion

        return {"text": str(tiny_stable_diffusion(tmp / "tiny-sd")),
                "inpaint": str(tiny_stable_diffusion(tmp / "tiny-sd-inpaint", in_channels=9))}
    if args.model == "sd15-sized":
        sys.path.insert(0, str(Path(__file__).parent))
        from _real_models import sd15_pipeline  # benchmarks/_real_models.py (a helper)

        return {"text": str(sd15_pipeline(tmp / "sd15-sized", 4)),
                "inpaint": str(sd15_pipeline(tmp / "sd15-sized-inpaint", 9))}
    if "regenerate" in args.modes and not args.inpaint_model:
        raise SystemExit("--inpaint-model is needed for regenerate with a real --model")
    return {"text": args.model, "inpaint": args.inpaint_model}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model id or folder, or sd15-sized (default: a tiny random-weight SD)")
    p.add_argument("--inpaint-model", default="", help="an inpainting checkpoint for regenerate (with a real --model)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    p.add_argument("--n", type=int, default=256, help="real photos, one fake each per mode")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--unit", type=int, default=32, help="reals per shard (an aigi work unit)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--strength", type=float, default=0.75, help="img2img / inpaint strength")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if unknown := set(args.modes) - set(MODES):
        raise SystemExit(f"unknown modes: {', '.join(sorted(unknown))}")

    from aigi.core.devices import resolve_device
    from aigi.manifests.rundir import RunDir
    from aigi.pipeline.stage import RunContext
    from aigi.pipeline.worker_state import quiet_libraries

    quiet_libraries()
    device = resolve_device(args.device)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args, Path(tmp))
        photos = make_photos(Path(tmp) / "photos" / "photos.parquet", args.n, args.size)
        blobs = photo_bytes(photos)
        prompts = [f"a photo of a {CLASSES[i % len(CLASSES)]}" for i in range(args.n)]
        cfg = aigi_config(args, photos, models, device, Path(tmp) / "run")
        ctx = RunContext(cfg, RunDir(Path(tmp) / "run").make())
        ingest(ctx)
        for gen in cfg.generators:
            mode = gen.mode
            model = models["inpaint" if mode == "regenerate" else "text"]
            plain_load, plain_s = plain_loop(args, mode, model, blobs, prompts, device)
            aigi_load, aigi_s = aigi_stage(ctx, gen)
            results[mode] = {"plain_load_s": plain_load, "plain_s": plain_s, "aigi_load_s": aigi_load,
                             "aigi_s": aigi_s}
    n = args.n
    print(f"device={device} model={args.model or 'tiny random-weight SD'} n={n} size={args.size} "
          f"steps={args.steps} strength={args.strength} batch={args.batch} dtype={args.dtype}")
    print(f"{'mode':<15}{'plain load':>11}{'plain img/s':>12}{'aigi load':>10}{'aigi img/s':>11}{'ratio':>7}")
    for mode, r in results.items():
        print(f"{mode:<15}{r['plain_load_s']:>11.2f}{n / r['plain_s']:>12.2f}{r['aigi_load_s']:>10.2f}"
              f"{n / r['aigi_s']:>11.2f}{r['plain_s'] / r['aigi_s']:>7.2f}")
    peak = peak_gpu_gib(device)
    print(json.dumps({
        "benchmark": "aligned", "device": device, "model": args.model or "tiny", "n": n, "size": args.size,
        "steps": args.steps, "guidance": args.guidance, "strength": args.strength, "batch": args.batch,
        "dtype": args.dtype, "peak_gpu_memory_gib": peak,
        "modes": {m: {"plain_images_per_s": round(n / r["plain_s"], 3), "aigi_images_per_s": round(n / r["aigi_s"], 3),
                      "ratio": round(r["plain_s"] / r["aigi_s"], 3)} for m, r in results.items()},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
