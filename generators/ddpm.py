"""DDPM: unconditional pixel-space diffusion through diffusers' `DDPMPipeline`.

Covers the `google/ddpm-*` checkpoints (`google/ddpm-cifar10-32`, `google/ddpm-cat-256`,
`google/ddpm-bedroom-256`, `google/ddpm-church-256`, `google/ddpm-celebahq-256`, their
`ddpm-ema-*` twins) and any repository in that layout: a `UNet2DModel` and a `DDPMScheduler`
whose files lie at the repository root beside `model_index.json` (diffusers' pipeline loader
falls back to the root when a component has no subfolder). Loaded with
`DDPMPipeline.from_pretrained`, the same path as the real models.

Unconditioned: the image depends on its seed alone; prompts and class ids only count the images.
Honours `steps` (`num_inference_steps`; the DDPM scheduler strides its 1000 training steps) and
`scheduler` (e.g. `"DDIMScheduler"` gives deterministic DDIM sampling, η = 0, on the same
weights). Not `guidance`, `size` (the resolution is the UNet's `sample_size`) or
`negative_prompt`.

Each image has its own CPU generator: `DDPMPipeline` passes the list to both the initial noise
and every scheduler step, so image i draws the same noise sequence alone or in a batch.

    [[generators]]
    name = "ddpm-bedroom-256"
    family = "ddpm"
    model = "google/ddpm-bedroom-256"
    steps = 1000
    dtype = "float16"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aigi.generators._pipeline import PipelineGenerator, generators
from aigi.generators.base import GeneratorConfig
from aigi.generators.settings import Settings

TINY_BUILDER_KEYS = ("seed", "sample_size", "block_out_channels")


class DDPM(PipelineGenerator):
    family = "ddpm"
    conditioning = "none"
    honours = frozenset({"steps", "scheduler"})

    def _from_pretrained(self) -> Any:
        import diffusers
        import torch

        cfg = self.config
        return diffusers.DDPMPipeline.from_pretrained(cfg.model, revision=cfg.revision or None, dtype=getattr(torch, cfg.dtype))

    def _batch(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Any]:
        # One CPU generator per image, for the initial noise and every step's noise.
        out = self.pipe(batch_size=len(seeds), generator=generators(seeds),
                        num_inference_steps=settings.steps, output_type="np")
        return list(out.images)

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """A tiny random-weight DDPM saved to `folder` in the `google/ddpm-*` root layout (32×32
        images). `seed`, `sample_size` and `block_out_channels` go to the builder; any other
        override is a `GeneratorConfig` field."""
        import json

        import diffusers

        from aigi.generators.tiny import tiny_pixel_unet

        builder = {k: overrides.pop(k) for k in TINY_BUILDER_KEYS if k in overrides}
        folder = tiny_pixel_unet(folder, **builder)
        # The google/ddpm-* repositories carry this index beside the root-level component files.
        index = {
            "_class_name": "DDPMPipeline",
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", "DDPMScheduler"],
            "unet": ["diffusers", "UNet2DModel"],
        }
        (Path(folder) / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        fields: dict[str, Any] = dict(steps=3, dtype="float32", batch_size=4, unit_size=16)
        fields.update(overrides)
        return GeneratorConfig(name=name, family=cls.family, model=str(folder), **fields)
