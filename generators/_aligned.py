"""Aligned fakes: images generated from real images, so real and fake share content, framing and
size and differ only in the generation trace (Aligned Datasets, DRCT, B-Free, DDA).

A `[[generators]]` entry with `mode` other than "text" makes one fake per real image of its
parent source:
- `vae_roundtrip`: decode(encode(real)) through the family's autoencoder ("Aligned Datasets",
  ICLR 2025), with the posterior mean or a seeded sample;
- `regenerate`: inpainting with an empty (all-zero) mask (DRCT, B-Free's self-conditioning): with
  an inpainting checkpoint (9-channel UNet) the whole image is regenerated, conditioned on itself;
- `inpaint`: a seeded mask — a random box, random strokes, or the mask the real source supplies
  (e.g. a COCO object) — optionally with the original pixels pasted back outside it;
- `img2img`: SDEdit at a strength (one value or a `{min, max}` range drawn per image).

This module holds the entry's `aligned` table and the pure steps around the model: the size
policy, the masks, paste-back and the change metrics. Every random choice comes from the image's
seed, in a fixed order, so a fake is reproducible from its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from aigi.core.configtools import Invalid, check
from aigi.generators.settings import FloatRange

if TYPE_CHECKING:
    from PIL import Image

AlignedMode = Literal["text", "vae_roundtrip", "regenerate", "inpaint", "img2img"]
ALIGNED_MODES = ("vae_roundtrip", "regenerate", "inpaint", "img2img")
Strength = Union[float, tuple[float, ...], FloatRange]  # noqa: UP007 - the config builder reads typing.Union
STRENGTH_DECIMALS = 3
DEFAULT_TEMPLATE = "a photo of a {class}"


@dataclass(frozen=True)
class AlignedConfig:
    """The `aligned` table of a generator entry whose `mode` is not "text".

    parent: the real source the fakes are made from ("" = the first [real] source).
    fit: how a real becomes the entry's `size`: "centre_crop" (the largest centre crop of the
    target's aspect, then resized: B-Free's 512² crops) or "resize" (stretched).
    min_side: reals whose shorter side is below this are skipped with a reason (0 = none).
    strength: img2img / inpaint denoising strength; one value, a list, or {min, max} per image.
    mask: inpaint only: "box", "strokes" (seeded), or "source" (the real row's `mask`).
    mask_area: the [min, max] share of the image a box or strokes mask covers (drawn per image).
    prompt: "caption" (the real's caption, else its class), "class" (`template` over the real's
    class), "other_class" (another class of the source, drawn per image: B-Free's box
    inpainting), "empty", or "text" (`text` for every image).
    paste_back: inpaint only: the original pixels outside the mask are put back.
    vae_sample: vae_roundtrip only: the posterior "mean" or a seeded "sample".
    """

    parent: str = ""
    fit: Literal["centre_crop", "resize"] = "centre_crop"
    min_side: int = 0
    strength: Strength = 1.0
    mask: Literal["none", "box", "strokes", "source"] = "none"
    mask_area: tuple[float, float] = (0.1, 0.4)
    prompt: Literal["caption", "class", "other_class", "empty", "text"] = "caption"
    template: str = DEFAULT_TEMPLATE
    text: str = ""
    paste_back: bool = False
    vae_sample: Literal["mean", "sample"] = "mean"

    def __post_init__(self) -> None:
        check(self.min_side >= 0, "min_side", "must be >= 0 (0 = no limit)")
        low, high = strength_bounds(self.strength)
        check(0.0 < low and high <= 1.0, "strength", f"must be in (0, 1], got {self.strength}")
        lo, hi = self.mask_area
        check(0.0 < lo <= hi < 1.0, "mask_area", f"must be 0 < min <= max < 1, got {list(self.mask_area)}")
        check("{class}" in self.template, "template", f"{self.template!r} has no {{class}} placeholder")
        check(self.prompt != "text" or bool(self.text), "text", 'required when prompt = "text"')


def strength_bounds(value: Strength) -> tuple[float, float]:
    if isinstance(value, FloatRange):
        return value.min, value.max
    vals = list(value) if isinstance(value, tuple) else [value]
    check(bool(vals), "strength", "needs at least one value")
    return min(vals), max(vals)


def check_mode(mode: str, aligned: AlignedConfig) -> None:
    """The `aligned` keys a mode uses; one it ignores must stay at its default."""
    default = AlignedConfig()
    uses = {
        "text": set(),
        "vae_roundtrip": {"parent", "fit", "min_side", "vae_sample"},
        "regenerate": {"parent", "fit", "min_side", "prompt", "template", "text"},
        "inpaint": {"parent", "fit", "min_side", "strength", "mask", "mask_area", "prompt", "template", "text", "paste_back"},
        "img2img": {"parent", "fit", "min_side", "strength", "prompt", "template", "text"},
    }[mode]
    for key in AlignedConfig.__dataclass_fields__:
        if key not in uses and getattr(aligned, key) != getattr(default, key):
            raise Invalid(f"aligned.{key}", f'mode = "{mode}" does not use it; remove it')
    if mode == "inpaint":
        check(aligned.mask != "none", "aligned.mask", 'inpaint needs a mask: "box", "strokes" or "source"')


def draw_aligned(aligned: AlignedConfig, seed: int) -> dict[str, float]:
    """The per-image numbers of an aligned fake: strength, mask area and two layout numbers, from
    a stream of the image's seed of its own (the sampling settings draw from another)."""
    u = np.random.default_rng([int(seed), 0xA11]).random(4)
    if isinstance(aligned.strength, FloatRange):
        strength = round(aligned.strength.min + u[0] * (aligned.strength.max - aligned.strength.min), STRENGTH_DECIMALS)
    else:
        options = list(aligned.strength) if isinstance(aligned.strength, tuple) else [aligned.strength]
        strength = options[min(int(u[0] * len(options)), len(options) - 1)]
    lo, hi = aligned.mask_area
    return {"strength": float(strength), "area": float(lo + u[1] * (hi - lo)), "u2": float(u[2]), "u3": float(u[3])}


# ---------------------------------------------------------------- the size policy


def fit(image: Image.Image, size: tuple[int, int], how: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The real image as the fake's parent at `size` (width, height), and the box of the original
    it came from. "centre_crop": the largest centred box of the target's aspect, resized
    (Lanczos down, bicubic up); "resize": the whole image stretched."""
    from PIL import Image

    w, h = image.size
    tw, th = size
    if how == "resize":
        box = (0, 0, w, h)
    else:
        scale = min(w / tw, h / th)
        cw, ch = min(w, round(tw * scale)), min(h, round(th * scale))
        left, top = (w - cw) // 2, (h - ch) // 2
        box = (left, top, left + cw, top + ch)
    crop = image.crop(box)
    if crop.size == (tw, th):
        return crop, box
    shrink = crop.width > tw
    return crop.resize((tw, th), Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC), box


# ---------------------------------------------------------------- masks


def box_mask(size: tuple[int, int], area: float, u_aspect: float, u_place: float) -> Image.Image:
    """A white (= repaint) axis-aligned box covering about `area` of the image, aspect ratio in
    [1/2, 2] from `u_aspect`, placed from `u_place`."""
    from PIL import Image, ImageDraw

    w, h = size
    aspect = 2.0 ** (2 * u_aspect - 1)
    bw = max(1, min(w, round((area * w * h * aspect) ** 0.5)))
    bh = max(1, min(h, round(area * w * h / bw)))
    rng = np.random.default_rng(int(u_place * 2**32))
    x = int(rng.integers(0, w - bw + 1))
    y = int(rng.integers(0, h - bh + 1))
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle([x, y, x + bw - 1, y + bh - 1], fill=255)
    return mask


def stroke_mask(size: tuple[int, int], area: float, seed_u: float) -> Image.Image:
    """Free-form strokes (thick random polylines, as in LaMa / CoModGAN masks) added until they
    cover about `area` of the image."""
    from PIL import Image, ImageDraw

    w, h = size
    rng = np.random.default_rng(int(seed_u * 2**32))
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    width = max(2, round(min(w, h) * 0.08))
    for _ in range(200):  # bounded: stops once the area is reached
        if np.count_nonzero(np.asarray(mask)) >= area * w * h:
            break
        x, y = (float(v) for v in rng.uniform(0, 1, 2) * (w, h))
        points = [(x, y)]
        for _ in range(int(rng.integers(2, 6))):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(0.1, 0.3) * min(w, h)
            x = float(np.clip(x + length * np.cos(angle), 0, w - 1))
            y = float(np.clip(y + length * np.sin(angle), 0, h - 1))
            points.append((x, y))
        draw.line(points, fill=255, width=width, joint="curve")
    return mask


def mask_area(mask: Image.Image | None) -> float:
    """The share of pixels to repaint (mask > 127); 0 for no mask."""
    if mask is None:
        return 0.0
    return float(np.count_nonzero(np.asarray(mask.convert("L")) > 127)) / (mask.width * mask.height)


def paste_back(fake: Image.Image, parent: Image.Image, mask: Image.Image) -> Image.Image:
    """The parent's pixels outside the mask, the fake's inside (a hard composite, as B-Free's
    "background restored" variant)."""
    from PIL import Image

    return Image.composite(fake, parent, mask.convert("L").point(lambda v: 255 if v > 127 else 0))


# ---------------------------------------------------------------- change metrics


def change_metrics(parents: list[Image.Image], fakes: list[Image.Image], device: str = "cpu") -> list[dict[str, float]]:
    """PSNR (dB over the RGB values, 8-bit peak; inf for identical images) and SSIM (Wang et al.
    2004, on the luminance Y = 0.299 R + 0.587 G + 0.114 B, 7×7 uniform windows, sample
    covariance, K1 = 0.01, K2 = 0.03, data range 255: scikit-image's defaults) of each fake
    against its parent at the same size. Computed with torch on `device`, in one batch, because
    at 512² scikit-image's SSIM costs ~0.1 s of CPU per image, more than the GPU spends making it.
    """
    import torch
    import torch.nn.functional as F

    if not parents:
        return []
    if any(p.size != f.size for p, f in zip(parents, fakes, strict=True)):
        raise ValueError("change metrics need equal sizes for each parent and fake")
    sizes = {p.size for p in parents}
    if len(sizes) > 1:  # a batch has one size; mixed sizes are measured one by one
        return [m for p, f in zip(parents, fakes, strict=True) for m in change_metrics([p], [f], device)]

    def stack(images: list[Image.Image]) -> torch.Tensor:
        arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
        return torch.from_numpy(arr).to(device=device, dtype=torch.float64).permute(0, 3, 1, 2)

    a, b = stack(parents), stack(fakes)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    psnr = torch.where(mse == 0, torch.full_like(mse, float("inf")), 10 * torch.log10(255.0**2 / mse))
    weights = torch.tensor([0.299, 0.587, 0.114], device=device, dtype=torch.float64).view(1, 3, 1, 1)
    ya, yb = (a * weights).sum(1, keepdim=True), (b * weights).sum(1, keepdim=True)
    win = min(7, ya.shape[-1], ya.shape[-2])
    win -= 1 - win % 2  # odd, no larger than the image
    n = win * win
    pool = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731 - valid windows only, as skimage crops
    ux, uy = pool(ya), pool(yb)
    cov = n / (n - 1)
    vx, vy = cov * (pool(ya * ya) - ux * ux), cov * (pool(yb * yb) - uy * uy)
    vxy = cov * (pool(ya * yb) - ux * uy)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    ssim = s.mean(dim=(1, 2, 3))
    return [{"psnr": float(p), "ssim": float(q)} for p, q in zip(psnr.cpu(), ssim.cpu(), strict=True)]


def prompt_for(aligned: AlignedConfig, caption: str | None, class_name: str | None, other: str | None) -> str:
    """The prompt of one fake: see `AlignedConfig.prompt`."""
    if aligned.prompt == "empty":
        return ""
    if aligned.prompt == "text":
        return aligned.text
    if aligned.prompt == "other_class":
        return aligned.template.replace("{class}", other) if other else ""
    if aligned.prompt == "caption" and caption:
        return caption
    return aligned.template.replace("{class}", class_name) if class_name else ""


def pick_other(classes: list[str], own: str | None, u: float) -> str | None:
    """A class of the source other than `own`, drawn from `u` (None when there is none)."""
    others = [c for c in classes if c != own]
    return others[min(int(u * len(others)), len(others) - 1)] if others else None
