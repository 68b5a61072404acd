"""Stable Diffusion 1.x / 2.x through diffusers' `StableDiffusionPipeline`.

Any checkpoint in the diffusers layout of this family (SD 1.4/1.5, 2.0/2.1, their fine-tunes) is
one config entry. Text embeddings are cached per prompt string, because class-name corpora
generate many images from few prompts and the text encoder would otherwise run for each one.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigi.generators.base import Generator, GeneratorConfig
from aigi.manifests.revision import resolve_revision

if TYPE_CHECKING:
    import torch
    from PIL import Image

# Distinct prompt strings whose embeddings stay on the device. SD 2's are 77x1024 values, so
# 1024 entries are ~160 MB in fp16: enough for class-name corpora, bounded for caption corpora.
EMBED_CACHE_SIZE = 1024
TINY_BUILDER_KEYS = ("seed", "block_out_channels", "scheduler")


class StableDiffusion(Generator):
    family = "stable_diffusion"

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.pipe: Any = None
        self._device = ""
        self._revision = ""
        self._embeds: OrderedDict[str, torch.Tensor] = OrderedDict()

    # Only the config travels: a loaded pipeline must never be shipped through a Dask graph.
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])

    def load(self, device: str) -> None:
        import diffusers
        import torch

        cfg = self.config
        if device == "auto":
            raise ValueError("load() needs an explicit device such as 'cpu' or 'cuda:0', got 'auto'")
        if torch.device(device).type == "cpu" and cfg.dtype != "float32":
            raise ValueError(
                f"generator {cfg.name!r}: dtype {cfg.dtype!r} on a CPU device is unsupported or very "
                'slow for convolutions; use dtype = "float32" on CPU'
            )
        sched_cls = None
        if cfg.scheduler:
            sched_cls = getattr(diffusers, cfg.scheduler, None)
            if not (isinstance(sched_cls, type) and issubclass(sched_cls, diffusers.SchedulerMixin)):
                raise ValueError(
                    f"generator {cfg.name!r}: scheduler: unknown diffusers scheduler {cfg.scheduler!r}"
                )
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(
            cfg.model,
            revision=cfg.revision or None,
            dtype=getattr(torch, cfg.dtype),
            safety_checker=None,
            requires_safety_checker=False,
        )
        if sched_cls is not None:
            pipe.scheduler = sched_cls.from_config(pipe.scheduler.config)
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()
        if torch.device(device).type == "cuda":
            # diffusers already uses SDPA attention; channels_last speeds up the UNet's convolutions.
            pipe.unet.to(memory_format=torch.channels_last)
        self.pipe = pipe
        self._device = device
        self._embeds.clear()
        self._revision = resolve_revision(cfg.model, cfg.revision)

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        import torch

        if self.pipe is None:
            raise RuntimeError(f"generator {self.config.name!r}: call load(device) before generate()")
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        bs = self.config.batch_size
        images: list[Image.Image] = []
        with torch.inference_mode():
            for start in range(0, len(prompts), bs):
                images += self._generate_batch(prompts[start : start + bs], seeds[start : start + bs])
        return images

    def _generate_batch(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        import torch

        cfg = self.config
        width, height = cfg.size
        # The negative embedding of "" is the pipeline's own unconditional embedding; passing it
        # always is harmless when guidance <= 1 (the pipeline then ignores it).
        out = self.pipe(
            prompt_embeds=self._embed(prompts),
            negative_prompt_embeds=self._embed([cfg.negative_prompt] * len(prompts)),
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            width=width,
            height=height,
            # CPU generators: the initial noise is the same whichever device runs the model.
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            output_type="pil",
        )
        return list(out.images)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        """Stacked text embeddings of `texts`, encoding each distinct uncached string once."""
        import torch

        found = {t: self._embeds[t] for t in dict.fromkeys(texts) if t in self._embeds}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            encoded, _ = self.pipe.encode_prompt(missing, self._device, 1, False)
            found.update(zip(missing, encoded, strict=True))
        for t, e in found.items():  # insert or refresh, then evict the least recently used
            self._embeds[t] = e
            self._embeds.move_to_end(t)
        while len(self._embeds) > EMBED_CACHE_SIZE:
            self._embeds.popitem(last=False)
        return torch.stack([found[t] for t in texts])

    def provenance(self) -> dict[str, Any]:
        if self.pipe is None:
            raise RuntimeError(f"generator {self.config.name!r}: call load(device) before provenance()")
        return {
            "model": self.config.model,
            "revision": self._revision,
            "pipeline": type(self.pipe).__name__,
            "scheduler": type(self.pipe.scheduler).__name__,
            "dtype": self.config.dtype,
        }

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """A tiny random-weight SD pipeline saved to `folder`. `seed`, `block_out_channels` and
        `scheduler` go to the builder (`scheduler` is the one saved with the model); any other
        override is a `GeneratorConfig` field."""
        from aigi.generators.tiny import tiny_stable_diffusion

        builder = {k: overrides.pop(k) for k in TINY_BUILDER_KEYS if k in overrides}
        tiny_stable_diffusion(folder, **builder)
        fields: dict[str, Any] = dict(
            steps=4, guidance=3.0, size=(64, 64), dtype="float32", batch_size=8, unit_size=16
        )
        fields.update(overrides)
        return GeneratorConfig(name=name, family=cls.family, model=str(folder), **fields)
