"""Stable Diffusion 3 / 3.5 through diffusers' `StableDiffusion3Pipeline` (text-conditioned).

Covers the MMDiT rectified-flow models in the diffusers layout:
`stabilityai/stable-diffusion-3-medium-diffusers`, `stabilityai/stable-diffusion-3.5-medium`,
`stabilityai/stable-diffusion-3.5-large` and the few-step `stabilityai/stable-diffusion-3.5-large-turbo`
(guidance 0, 4 steps), each one config entry. These repositories are gated: accept the license on
the hub and download them once before a run (runs are offline from the cache).

Honours all five settings: steps, guidance (classifier-free guidance runs when > 1, as in
diffusers), scheduler ("" = the model's own FlowMatchEulerDiscreteScheduler; otherwise a
flow-matching diffusers scheduler, e.g. FlowMatchHeunDiscreteScheduler, built from the model's
scheduler config: a noise-prediction scheduler would produce garbage, so names that do not start
with "FlowMatch" are config errors), size ([width, height], multiples of 16: the VAE's ×8 times
the transformer's patch 2) and negative_prompt ("" is encoded as "", which is what diffusers'
`negative_prompt=None` does for SD3).

All three text encoders (CLIP-L, CLIP-G, T5-XXL) are loaded; the T5 sequence is diffusers'
default `max_sequence_length` of 256, no skip-layer guidance. Text embeddings (the joint
[77 + 256, 4096] sequence and the pooled [2048]) are cached per distinct prompt string in an LRU
of 1024: ~2.8 GB in bf16 when full, small beside the models; caption corpora that never repeat
a prompt gain nothing from it, class-name corpora skip T5 for every repeat.

Example config entries:

    [[generators]]
    name = "sd3.5-large"
    family = "sd3"
    model = "stabilityai/stable-diffusion-3.5-large"
    steps = {min = 28, max = 40}
    guidance = {min = 3.5, max = 5.0}
    size = [[1024, 1024], [1152, 896], [896, 1152]]
    dtype = "bfloat16"
    batch_size = 4

    [[generators]]
    name = "sd3.5-large-turbo"
    family = "sd3"
    model = "stabilityai/stable-diffusion-3.5-large-turbo"
    steps = 4
    guidance = 0.0
    size = [1024, 1024]
    dtype = "bfloat16"
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigi.core.configtools import Invalid
from aigi.core.lru import LRU
from aigi.generators._pipeline import PipelineGenerator, cached_pair, generators
from aigi.generators.base import GeneratorConfig
from aigi.generators.settings import SETTING_KEYS, Settings, choices

if TYPE_CHECKING:
    import torch

EMBED_CACHE_SIZE = 1024
#: The latent factor (VAE ×8) times the transformer's patch size: sizes must be multiples of it.
SIZE_MULTIPLE = 16
TINY_BUILDER_KEYS = ("seed", "num_layers")


class StableDiffusion3(PipelineGenerator):
    family = "sd3"
    conditioning = "text"
    honours = frozenset(SETTING_KEYS)
    denoiser = "transformer"
    # No regenerate: SD3's inpainting pipeline blends the original back where the mask is 0 (no
    # mask-conditioned checkpoint), so an all-zero mask would only be a VAE round trip.
    aligned_modes = frozenset({"vae_roundtrip", "inpaint", "img2img"})

    def _reset(self) -> None:
        # prompt -> (joint sequence [333, 4096], pooled [2048]) on the device.
        self._embeds: LRU[str, tuple[torch.Tensor, torch.Tensor]] = LRU(EMBED_CACHE_SIZE)

    @classmethod
    def check_config(cls, config: GeneratorConfig) -> None:
        super().check_config(config)
        for name in choices(config.scheduler, "scheduler"):
            if name and not name.startswith("FlowMatch"):
                raise Invalid("scheduler", f"SD3 is a flow-matching model; {name} is not a FlowMatch* scheduler")
        for w, h in choices(config.size, "size"):
            if w % SIZE_MULTIPLE or h % SIZE_MULTIPLE:
                raise Invalid("size", f"SD3 needs multiples of {SIZE_MULTIPLE}, got {[w, h]}")

    def _from_pretrained(self) -> Any:
        import diffusers
        import torch

        cfg = self.config
        return diffusers.StableDiffusion3Pipeline.from_pretrained(
            cfg.model, revision=cfg.revision or None, dtype=getattr(torch, cfg.dtype)
        )

    def _batch(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Any]:
        embeds, pooled = self._embed(prompts)
        negative: dict[str, Any] = {}
        if settings.guidance > 1:  # the pipeline ignores negative embeddings without guidance
            neg, neg_pooled = self._embed([settings.negative_prompt] * len(prompts))
            negative = dict(negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled)
        out = self.pipe(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            **negative,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            width=settings.width,
            height=settings.height,
            # CPU generators: the initial noise is the same whichever device runs the model.
            generator=generators(seeds),
            output_type="np",
        )
        return list(out.images)

    def _embed(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked (joint sequence, pooled) of `texts`, encoding each uncached string once."""

        def encode(missing: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                prompt=missing, prompt_2=None, prompt_3=None, device=self._device,
                num_images_per_prompt=1, do_classifier_free_guidance=False,
            )
            return embeds, pooled

        return cached_pair(self._embeds, texts, encode)

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """A tiny random-weight SD3 pipeline (with a tiny T5) saved to `folder`. `seed` and
        `num_layers` go to the builder; any other override is a `GeneratorConfig` field."""
        from aigi.generators._tiny_sdxl_sd3 import tiny_sd3

        builder = {k: overrides.pop(k) for k in TINY_BUILDER_KEYS if k in overrides}
        tiny_sd3(folder, **builder)
        fields: dict[str, Any] = dict(
            steps=3, guidance=3.0, size=(64, 64), dtype="float32", batch_size=4, unit_size=16
        )
        fields.update(overrides)
        return GeneratorConfig(name=name, family=cls.family, model=str(folder), **fields)

