"""Feature extraction throughput: aigi's extraction path vs the plain library computation.

For each feature, in the same process, on the same encoded images:
- aigi: the feature stage's batch pipeline (decode and preprocess on CPU threads, prefetching the
  next batch while the model runs) plus the Parquet feature-shard write;
- plain: a straightforward script with the libraries (PIL decode, the method's preprocessing,
  batched forward passes, a pyarrow write), written here independently of aigi's extractors.
Both use the same weights, settings and batch size; the figure is the ratio of images/s. The two
outputs are compared too (`max_rel_diff`: the largest difference over each column's scale). The LaRE/DIRE speed ratio is measured in the same run.

    python benchmarks/features.py                         # tiny random-weight models, CPU
    python benchmarks/features.py --size real --n 512     # SD 1.5-, ADM- and released-sized
                                                          # random-weight models (use a GPU)

`--size real` builds the released architectures with random weights (same FLOPs as the real
weights): SD 1.5 (VAE, UNet, CLIP ViT-L text tower) for LaRE, the ADM 256² unconditional UNet for
DIRE, the DDPM LSUN-bedroom UNet for DNF, ViT-Tiny/16 for CoDE, DINOv2 ViT-S/14 for the Anomaly
Score and CLIP RN50 for EGRE's inputs. The last line printed is one JSON object.
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

import numpy as np  # noqa: E402

FEATURES = ("lare", "dnf", "dire", "code", "anomaly", "clip_rn50")
IMAGENET = (np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32))


# ---------------------------------------------------------------------------------------------
# Plain computations: what a researcher's script does, with the libraries directly.


def plain_lare(folder, cfg, device):
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    dt = getattr(torch, cfg.dtype)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dt).to(device).eval()
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dt).to(device).eval()
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", dtype=dt).to(device).eval()
    tok = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    abar = DDPMScheduler.from_pretrained(folder, subfolder="scheduler").alphas_cumprod[cfg.t].item()
    k, cache = cfg.ensemble, {}

    def run(images, rows, seeds):
        x = np.stack([np.asarray(im.resize(tuple(cfg.img_size), Image.BICUBIC), np.float32) / 127.5 - 1 for im in images])
        x = torch.from_numpy(x).permute(0, 3, 1, 2).to(device, dt)
        with torch.inference_mode():
            post = vae.encode(x).latent_dist
            z, noise = [], []
            for i, s in enumerate(seeds):
                g = torch.Generator().manual_seed(s)
                z.append(post.mean[i].float() + post.std[i].float() * torch.randn(post.mean.shape[1:], generator=g).to(device))
                noise.append(torch.randn((k, *post.mean.shape[1:]), generator=g))
            z = torch.stack(z).repeat_interleave(k, 0) * vae.config.scaling_factor
            noise = torch.cat(noise).to(device)
            prompts = [f"a photo of a {r['class_name']}" if r.get("class_name") else "a photo" for r in rows]
            for p in set(prompts) - set(cache):
                ids = tok(p, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
                cache[p] = text(ids.to(device))[0]
            emb = torch.cat([cache[p] for p in prompts]).repeat_interleave(k, 0)
            zt = abar**0.5 * z + (1 - abar) ** 0.5 * noise
            err = (unet(zt.to(dt), cfg.t, encoder_hidden_states=emb).sample.float() - noise) ** 2
            return {"lare": err.view(len(images), k, *err.shape[1:]).mean(1).cpu().numpy()}

    return run


def _pixel_unet(folder, dtype, device):
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(folder, torch_dtype=getattr(torch, dtype)).to(device).eval()
    return unet, DDPMScheduler.from_pretrained(folder).alphas_cumprod.double()


def plain_dnf(folder, cfg, device):
    import torch
    import torchvision.transforms.functional as F

    unet, _ = _pixel_unet(folder, cfg.dtype, device)

    def run(images, rows, seeds):
        x = torch.stack([F.resize(F.pil_to_tensor(im).float(), [cfg.img_size] * 2, F.InterpolationMode.BICUBIC, antialias=True) for im in images])
        with torch.inference_mode():
            eps = unet((x / 127.5 - 1).to(device, unet.dtype), 0).sample[:, :3].float()
        return {"dnf": (eps * 255 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()}

    return run


def plain_dire(folder, cfg, device):
    import torch
    from PIL import Image

    unet, ac = _pixel_unet(folder, cfg.dtype, device)
    ts = list(range(0, len(ac), len(ac) // cfg.steps))
    a = [ac[t].item() for t in ts]

    def crop(im):
        s = cfg.img_size
        while min(im.size) >= 2 * s:
            im = im.resize(tuple(v // 2 for v in im.size), Image.BOX)
        f = s / min(im.size)
        arr = np.asarray(im.resize(tuple(round(v * f) for v in im.size), Image.BICUBIC))
        y, x = (arr.shape[0] - s) // 2, (arr.shape[1] - s) // 2
        return arr[y : y + s, x : x + s]

    def move(x, t, ab, ab_to):
        e = unet(x.to(unet.dtype), t).sample[:, :3].float()
        x0 = ((x - (1 - ab) ** 0.5 * e) / ab**0.5).clamp(-1, 1)
        e = (x / ab**0.5 - x0) / (1 / ab - 1) ** 0.5
        return ab_to**0.5 * x0 + (1 - ab_to) ** 0.5 * e

    def run(images, rows, seeds):
        x0 = torch.from_numpy(np.stack([crop(im) for im in images]).astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2).to(device)
        x = x0
        with torch.inference_mode():
            for i in range(len(ts)):
                x = move(x, ts[i], a[i], a[i + 1] if i + 1 < len(ts) else 0.0)
            for i in reversed(range(len(ts))):
                x = move(x, ts[i], a[i], a[i - 1] if i else 1.0)
        return {"dire": ((x0 - x).abs() * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()}

    return run


def plain_code(folder, cfg, device):
    import torch
    import torchvision.transforms as T
    from transformers import ViTModel

    vit = ViTModel.from_pretrained(folder, add_pooling_layer=False, dtype=getattr(torch, cfg.dtype)).to(device).eval()
    tf = T.Compose([T.CenterCrop(cfg.crop_size), T.ToTensor(), T.Normalize(*IMAGENET)])

    def run(images, rows, seeds):
        with torch.inference_mode():
            x = torch.stack([tf(im) for im in images]).to(device, vit.dtype)
            return {"code": vit(pixel_values=x).last_hidden_state[:, 0].float().cpu().numpy()}

    return run


def plain_anomaly(folder, cfg, device):
    import torch
    import torchvision.transforms as T
    from transformers import Dinov2Model

    net = Dinov2Model.from_pretrained(folder).to(device).eval().requires_grad_(False)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in IMAGENET)
    tf = T.Compose([T.Resize(cfg.img_size, T.InterpolationMode.BICUBIC), T.CenterCrop(cfg.img_size), T.ToTensor()])

    def f(x):
        return net(pixel_values=(x - mean) / std).pooler_output

    def run(images, rows, seeds):
        x = torch.stack([tf(im) for im in images]).to(device)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        d = torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens]).to(device)
        d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        start = torch.stack([torch.empty(x.shape[1:]).uniform_(-1e-6, 1e-6, generator=g) for g in gens]).to(device)
        n = cfg.complexity_steps + 1
        with torch.no_grad():
            pts = (x[:, None] + cfg.complexity_eps * torch.arange(n, device=device).view(1, n, 1, 1, 1) * d[:, None]).clamp(0, 1)
            feats = f(pts.flatten(0, 1)).view(len(x), n, -1).double()
            v = torch.nn.functional.normalize(feats.diff(dim=1), dim=-1)
            c = torch.arccos((v[:, 1:] * v[:, :-1]).sum(-1).clamp(-1, 1)).mean(1)
            f0 = f(x)
        adv = (x + start).clamp(0, 1)
        for _ in range(cfg.vulnerability_steps):
            adv.requires_grad_(True)
            loss = ((f(adv) - f0) ** 2).mean(1).sum()
            (g,) = torch.autograd.grad(loss, adv)
            adv = (x + (adv.detach() + cfg.vulnerability_alpha * g.sign() - x).clamp(-cfg.vulnerability_eps, cfg.vulnerability_eps)).clamp(0, 1)
        with torch.no_grad():
            vul = (f0 - f(adv)).norm(dim=1).double()
        return {"complexity": c.cpu().numpy(), "vulnerability": vul.cpu().numpy(), "as_i": (vul / c).cpu().numpy()}

    return run


def plain_clip_rn50(folder, cfg, device):
    import open_clip
    import torch

    visual = open_clip.create_model(f"local-dir:{folder}", precision="fp32").visual.to(device).eval()
    s = cfg.image_size

    def prep(im):
        a = np.asarray(im)
        ph, pw = max(s - a.shape[0], 0), max(s - a.shape[1], 0)
        a = np.pad(a, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="reflect")
        y, x = (a.shape[0] - s) // 2, (a.shape[1] - s) // 2
        return (a[y : y + s, x : x + s] / np.float32(255) - IMAGENET[0]) / IMAGENET[1]

    def run(images, rows, seeds):
        x = torch.from_numpy(np.stack([prep(im) for im in images]).astype(np.float32)).permute(0, 3, 1, 2).to(device)
        with torch.inference_mode():
            f3 = visual.layer3(visual.layer2(visual.layer1(visual.stem(x))))
            return {"layer3": f3.cpu().numpy(), "pooled": visual.attnpool(visual.layer4(f3)).cpu().numpy()}

    return run


PLAIN = {
    "lare": plain_lare, "dnf": plain_dnf, "dire": plain_dire, "code": plain_code,
    "anomaly": plain_anomaly, "clip_rn50": plain_clip_rn50,
}


# ---------------------------------------------------------------------------------------------
# Models: the tiny doubles, or released-sized random-weight architectures.


def build(name: str, folder: Path, size: str):
    import dataclasses

    from aigi.features.registry import get

    cls = get(name)
    if size == "tiny":
        return cls.tiny(folder)
    from _real_models import REAL  # benchmarks/_real_models.py (a helper, not a benchmark)

    return dataclasses.replace(cls.Config(), model=str(REAL[name](folder)))


# ---------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encoded_images(n: int, side: int) -> list[bytes]:
    """Smooth random images (noise would make PNG decoding unusually slow), PNG-encoded."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((side, side), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def best_of(repeat: int, fn, device: str):
    """The fastest of `repeat` timed runs (seconds) and the last run's result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_one(name: str, cfg, device: str, data: list[bytes], batch: int, tmp: Path, repeat: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from aigi.features.registry import get
    from aigi.features.store import write_features
    from aigi.pipeline.stages.features import run_batches

    n = len(data)
    rows = [{"class_name": "tench"}] * n
    seeds = list(range(n))
    arr = pa.array(data, type=pa.binary())
    ex = get(name)(cfg)
    ex.load(device)
    # Warm-up on one batch each side, so neither is charged first-call costs.
    run_batches({name: ex}, arr.slice(0, min(batch, n)), rows[:batch], {name: seeds[:batch]}, batch=batch)

    def aigi_run():
        parts = run_batches({name: ex}, arr, rows, {name: seeds}, batch=batch)
        got = {c: np.concatenate(v) for c, v in parts[name].items()}
        write_features(tmp / f"{name}-aigi.parquet", [str(i) for i in seeds], seeds, got, ex, "bench")
        return got

    aigi_s, got = best_of(repeat, aigi_run, device)

    run = PLAIN[name](cfg.model, cfg, device)

    def decode(b):
        with Image.open(io.BytesIO(b)) as im:
            return im.convert("RGB")

    run([decode(b) for b in data[:batch]], rows[:batch], seeds[:batch])

    def plain_run():
        outs = []
        for lo in range(0, n, batch):
            outs.append(run([decode(b) for b in data[lo : lo + batch]], rows[lo : lo + batch], seeds[lo : lo + batch]))
        plain = {c: np.concatenate([o[c] for o in outs]) for c in outs[0]}
        table = {"id": pa.array([str(i) for i in seeds])}
        for c, a in plain.items():
            flat = pa.array(a.reshape(n, -1).reshape(-1))
            table[c] = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(a.shape[1:]))) if a.ndim > 1 else flat
        pq.write_table(pa.table(table), tmp / f"{name}-plain.parquet", compression="zstd")
        return plain

    plain_s, plain = best_of(repeat, plain_run, device)
    # Relative to each column's scale: AS-i = V/C divides by small numbers on tiny models.
    diff = max(
        float(np.abs(got[c].astype(np.float64) - plain[c].astype(np.float64)).max())
        / max(1.0, float(np.abs(plain[c].astype(np.float64)).max()))
        for c in got
    )
    return {
        "aigi_images_per_s": round(n / aigi_s, 2),
        "plain_images_per_s": round(n / plain_s, 2),
        "ratio": round(plain_s / aigi_s, 3),
        "max_rel_diff": diff,
        "bytes_per_image": round((tmp / f"{name}-aigi.parquet").stat().st_size / n),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "real"), default="tiny")
    p.add_argument("--n", type=int, default=0, help="images per feature (default 256)")
    p.add_argument("--image-side", type=int, default=256, help="side of the synthetic input images")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per side; the fastest counts")
    p.add_argument("--device", default="auto")
    p.add_argument("--features", default=",".join(FEATURES))
    p.add_argument("--dtype", default="", help="model dtype for LaRE/DNF/DIRE/CoDE (default float32; "
                   "float16 is the fast GPU setting)")
    args = p.parse_args()
    import dataclasses

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    n = args.n or 256
    data = encoded_images(n, args.image_side)
    results = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.features.split(","):
            cfg = build(name, tmp / f"model-{name}", args.size)
            changes = {"batch_size": args.batch}
            if args.dtype and name in ("lare", "dnf", "dire", "code"):
                changes["dtype"] = args.dtype
            cfg = dataclasses.replace(cfg, **changes)
            r = bench_one(name, cfg, device, data, args.batch, tmp, args.repeat)
            results[name] = r
            print(f"{name:<10} aigi {r['aigi_images_per_s']:>9.2f} img/s   plain {r['plain_images_per_s']:>9.2f} img/s"
                  f"   ratio {r['ratio']:.3f}   max rel diff {r['max_rel_diff']:.2g}   {r['bytes_per_image']} B/image", flush=True)
    out = {
        "benchmark": "features",
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "size": args.size,
        "n": n,
        "batch": args.batch,
        "repeat": args.repeat,
        "features": results,
    }
    if "lare" in results and "dire" in results:
        out["lare_dire_speed_ratio"] = round(results["lare"]["aigi_images_per_s"] / results["dire"]["aigi_images_per_s"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
