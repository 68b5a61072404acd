"""LaRE: the latent reconstruction error of Stable Diffusion at one timestep (LaRE², CVPR 2024).

Per image (methods.md §1.1): encode to SD latents, noise them to step `t` with K independent
noises, let the UNet predict the noise conditioned on "a photo of a <class>", and keep the
per-element error between predicted and true noise, averaged over the K members. Defaults are
the authors' released settings (SD 1.5, t=200, K=4, 256×256 squash, squared error, fp32).

The original is unseeded; here every draw comes from one `torch.Generator` per image seeded with
that image's seed, in a fixed order (posterior sample, then the K noises), so a feature is a
function of (image, row, seed, config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.core.lru import LRU
from aigi.features.base import (
    FeatureExtractor,
    check_batch,
    check_common,
    image_batch,
    resolve_torch_device,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

#: Distinct prompts whose text embedding stays cached; caption corpora have millions of prompts.
EMBED_CACHE_SIZE = 1024
SD_LATENT_CHANNELS = 4  # what columns() reports before load; load() reads the real value
LATENT_FACTOR = 8


@dataclass(frozen=True)
class LareConfig:
    """`[features.lare]`. `img_size` is [width, height] of the squash-resize before encoding."""

    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    revision: str = ""
    t: int = 200
    ensemble: int = 4
    img_size: tuple[int, int] = (256, 256)
    prompt_mode: Literal["class_template", "fixed"] = "class_template"
    prompt_template: str = "a photo of a {class}"
    # Rows without a class name (e.g. non-ImageNet real photos) get this prompt; the original
    # has no such case, so the choice is recorded in the config (methods.md §1.3, pitfall 4).
    fallback_prompt: str = "a photo"
    fixed_prompt: str = "a photo"
    posterior: Literal["sample", "mode"] = "sample"
    error: Literal["squared", "abs"] = "squared"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    storage_dtype: Literal["float32", "float16"] = "float16"
    batch_size: int = 8
    device: str = "auto"

    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("batch_size", "device")

    def __post_init__(self) -> None:
        check_common(self)
        check(0 <= self.t < 1000, "t", f"must be in [0, 1000), got {self.t}")
        check(self.ensemble > 0, "ensemble", f"must be > 0, got {self.ensemble}")
        check(
            len(self.img_size) == 2 and all(s > 0 and s % LATENT_FACTOR == 0 for s in self.img_size),
            "img_size",
            f"width and height must be positive multiples of 8, got {list(self.img_size)}",
        )
        check(self.prompt_mode in ("class_template", "fixed"), "prompt_mode", f"must be class_template or fixed, got {self.prompt_mode!r}")
        check("{class}" in self.prompt_template, "prompt_template", f"must contain {{class}}, got {self.prompt_template!r}")
        check(self.posterior in ("sample", "mode"), "posterior", f"must be sample or mode, got {self.posterior!r}")
        check(self.error in ("squared", "abs"), "error", f"must be squared or abs, got {self.error!r}")


class Lare(FeatureExtractor):
    name = "lare"
    version = 1
    Config = LareConfig

    def __init__(self, config: LareConfig) -> None:
        super().__init__(config)
        self._models: dict[str, Any] | None = None
        self._revision = ""
        self._latent_channels = SD_LATENT_CHANNELS
        self._emb_cache: LRU[str, torch.Tensor] = LRU(EMBED_CACHE_SIZE)

    def columns(self) -> dict[str, tuple[tuple[int, ...], str]]:
        w, h = self.config.img_size
        shape = (self._latent_channels, h // LATENT_FACTOR, w // LATENT_FACTOR)
        return {"lare": (shape, self.config.storage_dtype)}

    def load(self, device: str) -> None:
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        from aigi.manifests.revision import resolve_revision

        cfg = self.config
        device = resolve_torch_device(device)
        dtype = getattr(torch, cfg.dtype)
        common = dict(revision=cfg.revision or None)
        vae = AutoencoderKL.from_pretrained(cfg.model, subfolder="vae", torch_dtype=dtype, **common)
        unet = UNet2DConditionModel.from_pretrained(cfg.model, subfolder="unet", torch_dtype=dtype, **common)
        text_encoder = CLIPTextModel.from_pretrained(cfg.model, subfolder="text_encoder", dtype=dtype, **common)
        tokenizer = CLIPTokenizer.from_pretrained(cfg.model, subfolder="tokenizer", **common)
        # As the authors: the scheduler config read into DDPMScheduler, only for its ᾱ table.
        scheduler = DDPMScheduler.from_pretrained(cfg.model, subfolder="scheduler", **common)
        n_train = scheduler.config.num_train_timesteps
        check(cfg.t < n_train, "t", f"must be < the model's num_train_timesteps ({n_train}), got {cfg.t}")
        for m in (vae, unet, text_encoder):
            m.to(device).eval().requires_grad_(False)
        for m in (vae, unet):
            m.to(memory_format=torch.channels_last)
        abar = float(scheduler.alphas_cumprod[cfg.t].double())
        self._models = {
            "vae": vae,
            "unet": unet,
            "text_encoder": text_encoder,
            "tokenizer": tokenizer,
            "device": device,
            "dtype": dtype,
            "sqrt_abar": math.sqrt(abar),
            "sqrt_1m_abar": math.sqrt(1.0 - abar),
        }
        self._latent_channels = int(vae.config.latent_channels)
        self._emb_cache.clear()
        self._revision = resolve_revision(cfg.model, cfg.revision)

    def model_revision(self) -> str:
        return self._revision

    def prompt_for(self, row: dict[str, Any]) -> str:
        cfg = self.config
        if cfg.prompt_mode == "fixed":
            return cfg.fixed_prompt
        cls = row.get("class_name")
        if cls:
            return cfg.prompt_template.replace("{class}", str(cls))
        return cfg.fallback_prompt

    def preprocessing(self) -> dict[str, Any]:
        w, h = self.config.img_size
        return {"resize": [w, h], "filter": "PIL bicubic", "aspect": "squash", "range": [-1, 1]}

    def preprocess(self, image: Image.Image, row: dict[str, Any]) -> np.ndarray:
        from PIL import Image

        # Squash to img_size (aspect not kept), as the authors do.
        im = image.convert("RGB").resize(tuple(self.config.img_size), Image.Resampling.BICUBIC)
        u = np.asarray(im, dtype=np.float32) / 255.0
        return ((u - 0.5) * 2.0).transpose(2, 0, 1)

    def compute(self, batch: np.ndarray, rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, np.ndarray]:
        import torch

        if self._models is None:
            raise RuntimeError("Lare.compute called before load(device)")
        check_batch(self.name, batch, rows, seeds)
        out_dtype = np.dtype(self.config.storage_dtype)
        bs = self.config.batch_size
        with torch.inference_mode():
            parts = [
                self._chunk(batch[i : i + bs], rows[i : i + bs], seeds[i : i + bs])
                for i in range(0, len(batch), bs)
            ]
        if not parts:
            return {"lare": np.zeros((0, *self.columns()["lare"][0]), dtype=out_dtype)}
        return {"lare": np.concatenate(parts).astype(out_dtype, copy=False)}

    def _chunk(self, pixels: np.ndarray, rows: list[dict[str, Any]], seeds: list[int]) -> np.ndarray:
        import torch

        m = self._models
        assert m is not None
        cfg = self.config
        device, dtype, k = m["device"], m["dtype"], cfg.ensemble
        x = image_batch(pixels, device, dtype)
        dist = m["vae"].encode(x).latent_dist
        mean, std = dist.mean.float(), dist.std.float()
        z0s, noises = [], []
        for i, seed in enumerate(seeds):
            # One generator per image, drawn in a fixed order: posterior sample, then K noises.
            g = torch.Generator("cpu").manual_seed(int(seed))
            z0 = mean[i]
            if cfg.posterior == "sample":
                z0 = z0 + std[i] * torch.randn(mean[i].shape, generator=g).to(device)
            z0s.append(z0 * m["vae"].config.scaling_factor)
            noises.append(torch.randn((k, *mean[i].shape), generator=g))
        z0 = torch.stack(z0s).repeat_interleave(k, dim=0)  # (B*K, C, h, w), image-major
        eps = torch.cat(noises).to(device)
        zt = m["sqrt_abar"] * z0 + m["sqrt_1m_abar"] * eps
        emb = torch.cat([self._embedding(self.prompt_for(r)) for r in rows])
        eps_hat = m["unet"](
            zt.to(dtype).contiguous(memory_format=torch.channels_last), cfg.t, encoder_hidden_states=emb.repeat_interleave(k, dim=0)
        ).sample.float()
        diff = eps_hat - eps
        err = diff.square() if cfg.error == "squared" else diff.abs()
        err = err.view(len(rows), k, *err.shape[1:]).mean(dim=1)
        return err.cpu().numpy()

    def _embedding(self, prompt: str) -> torch.Tensor:
        m = self._models
        assert m is not None
        emb = self._emb_cache.get(prompt)
        if emb is None:
            tok = m["tokenizer"]
            ids = tok(
                [prompt],
                padding="max_length",
                max_length=tok.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(m["device"])
            emb = m["text_encoder"](ids)[0]
            self._emb_cache.put(prompt, emb)
        return emb

    @classmethod
    def tiny(cls, folder: Path) -> LareConfig:
        from aigi.generators.tiny import tiny_stable_diffusion

        tiny_stable_diffusion(folder, seed=123)
        return LareConfig(model=str(folder), img_size=(64, 64), ensemble=2, batch_size=4)
