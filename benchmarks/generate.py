"""Generation throughput: aigi's generate stage vs a bare diffusers loop doing the same work.

Both sides load the same Stable Diffusion pipeline, generate the same prompts with per-image CPU
generators and encode PNGs; aigi also hashes, builds provenance rows and writes Parquet shards.
The ratio is aigi's orchestration overhead. Model load time is reported apart.

    python benchmarks/generate.py                                   # tiny random-weight SD, CPU
    python benchmarks/generate.py --model sd15-sized --size 512 --steps 30 --guidance 7.5 \
        --batch 16 --n 128 --dtype float16                           # SD 1.5-sized random weights, GPU
    python benchmarks/generate.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 ...   # a real model

The last line printed is one JSON object with both figures, their ratio and peak GPU memory.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
from _real_models import cuda_sync, peak_gpu_gib  # noqa: E402 - benchmarks/_real_models.py, a helper


def bare_loop(args: argparse.Namespace, model: str, prompts: list[str], device: str) -> tuple[float, float]:
    import diffusers
    import torch

    t0 = time.perf_counter()
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        model, dtype=getattr(torch, args.dtype), safety_checker=None, requires_safety_checker=False
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - t0
    with torch.inference_mode():  # warm-up, so the baseline is not charged first-call costs
        pipe(prompts[:1], num_inference_steps=args.steps, width=args.size, height=args.size)
    cuda_sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(prompts), args.batch):
            batch = prompts[lo : lo + args.batch]
            images = pipe(
                batch, num_inference_steps=args.steps, guidance_scale=args.guidance,
                width=args.size, height=args.size,
                generator=[torch.Generator("cpu").manual_seed(lo + i) for i in range(len(batch))],
            ).images
            for im in images:
                im.save(io.BytesIO(), format="PNG")
    cuda_sync(device)
    return load, time.perf_counter() - t0


def aigi_stage(args: argparse.Namespace, model: str, classes: list[str], device: str, out: Path) -> tuple[float, float]:
    from aigi.manifests.rundir import RunDir
    from aigi.pipeline.cluster import SerialExecutor
    from aigi.pipeline.config import parse_config
    from aigi.pipeline.runner import run_stages
    from aigi.pipeline.stage import RunContext
    from aigi.pipeline.stages.generate import GenerateStage
    from aigi.pipeline.stages.prompts import PromptsStage

    cfg = parse_config({
        # the plain loop's thread count: aigi pins each unit's ([run] torch_threads, default 1)
        "run": {"out": str(out), "seed": 0, "torch_threads": _threads()},
        "prompts": {"source": "classes", "classes": classes},
        "generators": [{
            "name": "bench", "family": "stable_diffusion", "model": model, "steps": args.steps,
            "guidance": args.guidance, "size": [args.size, args.size], "dtype": args.dtype,
            "images_per_prompt": args.n // len(classes), "batch_size": args.batch,
            "unit_size": args.unit, "device": device, "compile": args.compile,
        }],
    })
    ctx = RunContext(cfg, RunDir(out).make())
    sink = io.StringIO()
    run_stages([PromptsStage(ctx)], SerialExecutor(), ctx.run.logs, sink)
    [res] = run_stages([GenerateStage(ctx, cfg.generators[0])], SerialExecutor(), ctx.run.logs, sink)
    load = sum(s["setup_s"] for s in res.summaries)
    return load, res.seconds - load


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="", help="model id or folder (default: a tiny random-weight SD)")
    p.add_argument("--n", type=int, default=64, help="images (a multiple of 8)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--unit", type=int, default=32, help="images per aigi work unit")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="aigi side: torch.compile the UNet once (default "
                   "mode); the plain loop stays eager")
    args = p.parse_args()

    from aigi.core.devices import resolve_device
    from aigi.pipeline.worker_state import quiet_libraries

    quiet_libraries()
    device = resolve_device(args.device)
    classes = ["tench", "goldfish", "tree frog", "goldfinch", "volcano", "daisy", "lemon", "espresso"]
    prompts = [f"a photo of a {c}" for c in classes for _ in range(args.n // len(classes))]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if not model:
            from aigi.generators.tiny import tiny_stable_diffusion

            model = str(tiny_stable_diffusion(Path(tmp) / "tiny-sd"))
        elif model == "sd15-sized":
            sys.path.insert(0, str(Path(__file__).parent))
            from _real_models import sd15_pipeline  # benchmarks/_real_models.py (a helper)

            model = str(sd15_pipeline(Path(tmp) / "sd15-sized"))
        bare_load, bare_s = bare_loop(args, model, prompts, device)
        aigi_load, aigi_s = aigi_stage(args, model, classes, device, Path(tmp) / "run")
    n = len(prompts)
    print(f"device={device} model={args.model or 'tiny random-weight SD'} n={n} size={args.size} "
          f"steps={args.steps} batch={args.batch} dtype={args.dtype}")
    print(f"{'':<22}{'load s':>8}{'gen s':>9}{'images/s':>10}")
    print(f"{'bare diffusers loop':<22}{bare_load:>8.2f}{bare_s:>9.2f}{n / bare_s:>10.2f}")
    print(f"{'aigi generate stage':<22}{aigi_load:>8.2f}{aigi_s:>9.2f}{n / aigi_s:>10.2f}")
    print(f"aigi / bare throughput: {bare_s / aigi_s:.2f}")
    peak = peak_gpu_gib(device)
    print(json.dumps({
        "benchmark": "generate", "device": device, "model": args.model or "tiny", "n": n, "size": args.size,
        "steps": args.steps, "guidance": args.guidance, "batch": args.batch, "dtype": args.dtype,
        "plain_images_per_s": round(n / bare_s, 3), "aigi_images_per_s": round(n / aigi_s, 3),
        "ratio": round(bare_s / aigi_s, 3), "peak_gpu_memory_gib": peak, "compile": args.compile,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
