"""Stable Diffusion 1.x / 2.x through diffusers' `StableDiffusionPipeline`.

Any checkpoint in the diffusers layout of this family is one config entry: SD 1.4/1.5
(`stable-diffusion-v1-5/stable-diffusion-v1-5`), SD 2.0/2.1 base (ε-prediction, 512²) and 2.1
(v-prediction, 768²: the prediction type comes with the checkpoint's scheduler config), their
fine-tunes, and few-step variants (SD-Turbo: `steps = 1`, `guidance = 0.0`; an LCM-distilled
model: `scheduler = "LCMScheduler"`, `steps = 4`). Text-conditioned; honours every sampling
setting. Text embeddings are cached per prompt string (an LRU), because class-name corpora make
many images from few prompts and the text encoder would otherwise run for each one.

    [[generators]]
    name = "sd15"
    family = "stable_diffusion"
    model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    steps = 30
    guidance = 7.5
    size = [512, 512]
    dtype = "float16"
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigi.core.lru import LRU
from aigi.generators.base import (
    Generator,
    GeneratorConfig,
    Schedulers,
    check_device,
    scheduler_hash,
)
from aigi.generators.settings import Settings
from aigi.manifests.revision import resolve_revision

if TYPE_CHECKING:
    import torch
    from PIL import Image

# Distinct prompt strings whose embeddings stay on the device. SD 2's are 77x1024 values, so
# 1024 entries are ~160 MB in fp16: enough for class-name corpora, bounded for caption corpora.
EMBED_CACHE_SIZE = 1024
TINY_BUILDER_KEYS = ("seed", "block_out_channels", "scheduler", "extra_scheduler_config")


class StableDiffusion(Generator):
    family = "stable_diffusion"
    conditioning = "text"

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.pipe: Any = None
        self._device = ""
        self._revision = ""
        self._schedulers: Schedulers | None = None
        self._embeds: LRU[str, torch.Tensor] = LRU(EMBED_CACHE_SIZE)

    # Only the config travels: a loaded pipeline must never be shipped through a Dask graph.
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])

    def load(self, device: str) -> None:
        import diffusers
        import torch

        cfg = self.config
        check_device(cfg, device)
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            cfg.model,
            revision=cfg.revision or None,
            dtype=getattr(torch, cfg.dtype),
            safety_checker=None,
            requires_safety_checker=False,
        )
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()
        if torch.device(device).type == "cuda":
            # diffusers already uses SDPA attention; channels_last speeds up the UNet's convolutions.
            pipe.unet.to(memory_format=torch.channels_last)
        if cfg.compile:
            pipe.unet = torch.compile(pipe.unet)
        self.pipe = pipe
        self._device = device
        self._schedulers = Schedulers(pipe.scheduler, cfg.name)
        for name in _scheduler_names(cfg):  # an unknown scheduler fails at load, not mid-run
            self._schedulers.get(name)
        self._embeds.clear()
        self._revision = resolve_revision(cfg.model, cfg.revision)

    def generate(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Image.Image]:
        import torch

        if self.pipe is None:
            raise RuntimeError(f"generator {self.config.name!r}: call load(device) before generate()")
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        assert self._schedulers is not None
        self.pipe.scheduler = self._schedulers.get(settings.scheduler)
        bs = self.config.batch_size
        images: list[Image.Image] = []
        with torch.inference_mode():
            for start in range(0, len(prompts), bs):
                images += self._generate_batch(prompts[start : start + bs], seeds[start : start + bs], settings)
        return images

    def _generate_batch(self, prompts: list[str], seeds: list[int], settings: Settings) -> list[Image.Image]:
        import torch

        # The negative embedding of "" is the pipeline's own unconditional embedding; passing it
        # always is harmless when guidance <= 1 (the pipeline then ignores it).
        out = self.pipe(
            prompt_embeds=self._embed(prompts),
            negative_prompt_embeds=self._embed([settings.negative_prompt] * len(prompts)),
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            width=settings.width,
            height=settings.height,
            # CPU generators: the initial noise is the same whichever device runs the model.
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            output_type="pil",
        )
        return list(out.images)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        """Stacked text embeddings of `texts`, encoding each distinct uncached string once."""
        import torch

        found = {t: e for t in dict.fromkeys(texts) if (e := self._embeds.get(t)) is not None}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            encoded, _ = self.pipe.encode_prompt(missing, self._device, 1, False)
            found.update(zip(missing, encoded, strict=True))
        for t, e in found.items():
            self._embeds.put(t, e)
        return torch.stack([found[t] for t in texts])

    def provenance(self, settings: Settings) -> dict[str, Any]:
        if self.pipe is None or self._schedulers is None:
            raise RuntimeError(f"generator {self.config.name!r}: call load(device) before provenance()")
        scheduler = self._schedulers.get(settings.scheduler)
        return {
            "model": self.config.model,
            "revision": self._revision,
            "pipeline": type(self.pipe).__name__,
            "scheduler": type(scheduler).__name__,
            "scheduler_config": scheduler_hash(scheduler),
            "dtype": self.config.dtype,
            "safety_checker": False,
        }

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """A tiny random-weight SD pipeline saved to `folder`. `seed`, `block_out_channels`,
        `scheduler` (the one saved with the model) and `extra_scheduler_config` (e.g.
        `{"prediction_type": "v_prediction"}` for an SD 2.x-style double) go to the builder; any
        other override is a `GeneratorConfig` field."""
        from aigi.generators.tiny import tiny_stable_diffusion

        builder = {k: overrides.pop(k) for k in TINY_BUILDER_KEYS if k in overrides}
        tiny_stable_diffusion(folder, **builder)
        fields: dict[str, Any] = dict(
            steps=4, guidance=3.0, size=(64, 64), dtype="float32", batch_size=8, unit_size=16
        )
        fields.update(overrides)
        return GeneratorConfig(name=name, family=cls.family, model=str(folder), **fields)


def _scheduler_names(cfg: GeneratorConfig) -> list[str]:
    from aigi.generators.settings import choices

    return [s for s in choices(cfg.scheduler, "scheduler") if s]
