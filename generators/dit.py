"""DiT: class-conditional ImageNet latent diffusion transformers through diffusers' `DiTPipeline`.

Covers `facebook/DiT-XL-2-256` and `facebook/DiT-XL-2-512` (and any checkpoint in that layout),
the DiT source of GenImage's protocol: one image per ImageNet-1k class id. Class-conditioned: the
image depends on the item's `class_id` (0..999) and seed, never on its prompt text; an item
without a class id is an error that names its prompt.

Honours `steps`, `guidance` (classifier-free guidance against DiT's null class when > 1; at <= 1
the pipeline samples without it) and `scheduler` (any diffusers scheduler built from the model's
own DDIM config). Not `size`: the resolution is the model's (latent `sample_size` × 8: 256 or
512), and not `negative_prompt`: there is no text. The denoiser is a transformer, so no
channels_last; `compile` compiles the transformer.

    [[generators]]
    name = "dit-xl-2-256"
    family = "dit"
    model = "facebook/DiT-XL-2-256"
    steps = 50
    guidance = 4.0
    dtype = "float16"
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigi.generators.base import (
    Generator,
    GeneratorConfig,
    Schedulers,
    check_device,
    scheduler_hash,
)
from aigi.generators.settings import Settings, choices
from aigi.manifests.revision import resolve_revision

if TYPE_CHECKING:
    from PIL import Image

TINY_BUILDER_KEYS = ("seed", "sample_size", "num_layers")


class DiT(Generator):
    family = "dit"
    conditioning = "class"
    honours = frozenset({"steps", "guidance", "scheduler"})

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.pipe: Any = None
        self._revision = ""
        self._num_classes = 0
        self._schedulers: Schedulers | None = None

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
        pipe = diffusers.DiTPipeline.from_pretrained(
            cfg.model, revision=cfg.revision or None, dtype=getattr(torch, cfg.dtype)
        )
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()
        # Classes 0..n-1; index n is the null class that guidance contrasts against.
        self._num_classes = int(pipe.transformer.config.num_embeds_ada_norm)
        if cfg.compile:
            pipe.transformer = torch.compile(pipe.transformer)
        self.pipe = pipe
        self._schedulers = Schedulers(pipe.scheduler, cfg.name)
        for name in choices(cfg.scheduler, "scheduler"):  # an unknown one fails at load
            if name:
                self._schedulers.get(name)
        self._revision = resolve_revision(cfg.model, cfg.revision)

    def generate(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Image.Image]:
        import torch

        cfg = self.config
        if self.pipe is None or self._schedulers is None:
            raise RuntimeError(f"generator {cfg.name!r}: call load(device) before generate()")
        if not len(prompts) == len(class_ids) == len(seeds):
            raise ValueError(
                f"got {len(prompts)} prompts, {len(class_ids)} class ids and {len(seeds)} seeds"
            )
        labels = [self._label(p, c) for p, c in zip(prompts, class_ids, strict=True)]
        self.pipe.scheduler = self._schedulers.get(settings.scheduler)
        bs = cfg.batch_size
        images: list[Image.Image] = []
        with torch.inference_mode():
            for start in range(0, len(labels), bs):
                out = self.pipe(
                    class_labels=labels[start : start + bs],
                    guidance_scale=settings.guidance,
                    num_inference_steps=settings.steps,
                    # CPU generators: the initial noise is the same whichever device runs the model.
                    generator=[
                        torch.Generator("cpu").manual_seed(s) for s in seeds[start : start + bs]
                    ],
                    output_type="pil",
                )
                images += [im.convert("RGB") for im in out.images]
        return images

    def _label(self, prompt: str, class_id: int | None) -> int:
        if class_id is None:
            raise ValueError(
                f"generator {self.config.name!r} (dit) is conditioned on ImageNet classes, but prompt "
                f"{prompt!r} has no class_id; use class prompts (classes / class_ids) for this generator"
            )
        if not 0 <= class_id < self._num_classes:
            raise ValueError(
                f"generator {self.config.name!r}: prompt {prompt!r} has class_id {class_id}, "
                f"outside the model's classes 0..{self._num_classes - 1}"
            )
        return int(class_id)

    def provenance(self, settings: Settings) -> dict[str, Any]:
        if self.pipe is None or self._schedulers is None:
            raise RuntimeError(
                f"generator {self.config.name!r}: call load(device) before provenance()"
            )
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
        """A tiny random-weight DiT saved to `folder` (64×64 images). `seed`, `sample_size` and
        `num_layers` go to the builder; any other override is a `GeneratorConfig` field."""
        from aigi.generators._tiny_dit import tiny_dit

        builder = {k: overrides.pop(k) for k in TINY_BUILDER_KEYS if k in overrides}
        tiny_dit(folder, **builder)
        fields: dict[str, Any] = dict(
            steps=3, guidance=4.0, dtype="float32", batch_size=4, unit_size=16
        )
        fields.update(overrides)
        return GeneratorConfig(name=name, family=cls.family, model=str(folder), **fields)
