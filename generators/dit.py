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
from typing import Any

from aigi.generators._pipeline import PipelineGenerator, generators
from aigi.generators.base import GeneratorConfig
from aigi.generators.settings import Settings

TINY_BUILDER_KEYS = ("seed", "sample_size", "num_layers")


class DiT(PipelineGenerator):
    family = "dit"
    conditioning = "class"
    honours = frozenset({"steps", "guidance", "scheduler"})
    denoiser = "transformer"
    # diffusers has no class-conditioned img2img or inpainting pipeline: the autoencoder only.
    aligned_modes = frozenset({"vae_roundtrip"})

    def _from_pretrained(self) -> Any:
        import diffusers
        import torch

        cfg = self.config
        pipe = diffusers.DiTPipeline.from_pretrained(cfg.model, revision=cfg.revision or None, dtype=getattr(torch, cfg.dtype))
        # Classes 0..n-1; index n is the null class that guidance contrasts against.
        self._num_classes = int(pipe.transformer.config.num_embeds_ada_norm)
        return pipe

    def _batch(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Any]:
        labels = [self._label(p, c) for p, c in zip(prompts, class_ids, strict=True)]
        out = self.pipe(class_labels=labels, guidance_scale=settings.guidance, num_inference_steps=settings.steps,
                        generator=generators(seeds), output_type="np")
        return list(out.images)

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
