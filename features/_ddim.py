"""Deterministic DDIM (η = 0) arithmetic shared by DIRE and DNF's inversion mode (methods.md §5.3).

Only the arithmetic lives here; the extractors call their UNet themselves. The form follows
guided-diffusion's `gaussian_diffusion.py` (ᾱ coefficients computed in float64, the update done in
the tensor's dtype):

    x̂₀  = √(1/ᾱ_t)·x − √(1/ᾱ_t − 1)·ε             (then clamp to [-1, 1] when clip_denoised)
    ε'  = (√(1/ᾱ_t)·x − x̂₀) / √(1/ᾱ_t − 1)          (re-derived from the clipped x̂₀)
    x'  = √ᾱ_to·x̂₀ + √(1 − ᾱ_to)·ε'

`ᾱ_to` is ᾱ of the next timestep when inverting and of the previous one when sampling; the
endpoints are ᾱ_next = 0 after the last inversion step and ᾱ_prev = 1 after the last sampling step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def respaced_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """guided-diffusion's "ddim<steps>" respacing: range(0, N, stride), smallest fitting stride.

    For steps dividing N this is t_i = i·N/steps (ddim20 over 1000 → 0, 50, …, 950). Raises
    ValueError when no stride gives exactly `steps` timesteps (e.g. steps > N).
    """
    for stride in range(1, num_train_timesteps + 1):
        if len(range(0, num_train_timesteps, stride)) == steps:
            return list(range(0, num_train_timesteps, stride))
    raise ValueError(f"cannot take exactly {steps} evenly strided steps of {num_train_timesteps}")


def linspace_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """DNF's sequence: int(linspace(0, N, steps + 1)) without its last value (20 → 0, 50, …, 950)."""
    import numpy as np

    seq = np.linspace(0, num_train_timesteps, steps + 1)
    return [int(t) for t in seq[:-1]]


def ddim_step(
    x: torch.Tensor, eps: torch.Tensor, abar: float, abar_to: float, clip_denoised: bool
) -> torch.Tensor:
    """One η = 0 DDIM move of `x` at ᾱ = `abar` to ᾱ = `abar_to`, given the noise prediction `eps`."""
    recip = math.sqrt(1.0 / abar)
    recipm1 = math.sqrt(1.0 / abar - 1.0)
    x0 = recip * x - recipm1 * eps
    if clip_denoised:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (recip * x - x0) / recipm1
    return math.sqrt(abar_to) * x0 + math.sqrt(1.0 - abar_to) * eps


def abar_table(alphas_cumprod: torch.Tensor) -> Sequence[float]:
    """The scheduler's ᾱ as Python floats (float64), so the coefficients above are float64."""
    return [float(a) for a in alphas_cumprod.double().tolist()]


def load_pixel_unet(
    model: str,
    revision: str,
    layout: str,
    dtype: str,
    device: torch.device,
    img_size: int,
    *,
    scheduler: bool,
) -> tuple[torch.nn.Module, list[float] | None]:
    """A pixel-space UNet2DModel (eval, frozen, on `device`) and, if asked, its scheduler's ᾱ.

    `layout` "root" is google/ddpm-*'s (UNet config, weights and scheduler_config.json at the
    root); "pipeline" is DDPMPipeline.save_pretrained's (`unet/` and `scheduler/`).
    """
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from aigi.core.configtools import check

    sub = {"unet": None, "scheduler": None} if layout == "root" else {"unet": "unet", "scheduler": "scheduler"}
    common = dict(revision=revision or None)
    unet = UNet2DModel.from_pretrained(model, subfolder=sub["unet"], torch_dtype=getattr(torch, dtype), **common)
    cfg = unet.config
    check(cfg.in_channels == 3 and cfg.out_channels in (3, 6), "model",
          f"must be an RGB ε-prediction UNet (3 in, 3 or 6 out channels), got {cfg.in_channels} in "
          f"and {cfg.out_channels} out")
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    check(img_size % factor == 0, "img_size", f"must be a multiple of {factor} for this UNet, got {img_size}")
    unet.to(device).eval().requires_grad_(False)
    unet.to(memory_format=torch.channels_last)
    abar = None
    if scheduler:
        sched = DDPMScheduler.from_pretrained(model, subfolder=sub["scheduler"], **common)
        check(sched.config.prediction_type == "epsilon", "model",
              f"the scheduler must predict epsilon, got {sched.config.prediction_type!r}")
        abar = list(abar_table(sched.alphas_cumprod))
    return unet, abar


def check_map_config(cfg: Any) -> None:
    """The keys DNF and DIRE share: the UNet folder layout, the map's encoding and size."""
    from aigi.core.configtools import check

    check(cfg.layout in ("root", "pipeline"), "layout", f"must be root or pipeline, got {cfg.layout!r}")
    check(cfg.encoding in ("faithful", "clean"), "encoding", f"must be faithful or clean, got {cfg.encoding!r}")
    check(cfg.img_size > 0, "img_size", f"must be > 0, got {cfg.img_size}")


def map_columns(column: str, cfg: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """A (3, img_size, img_size) map: uint8 as released ("faithful"), else the storage dtype."""
    dtype = "uint8" if cfg.encoding == "faithful" else cfg.storage_dtype
    return {column: ((3, cfg.img_size, cfg.img_size), dtype)}
