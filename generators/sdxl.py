"""Stable Diffusion XL through diffusers' `StableDiffusionXLPipeline` (text-conditioned).

Covers every checkpoint in the diffusers layout whose pipeline is `StableDiffusionXLPipeline`:
the base model `stabilityai/stable-diffusion-xl-base-1.0`, its fine-tunes, and the few-step
distilled variants, which are config entries of this family, not families of their own:
`stabilityai/sdxl-turbo` (1-4 steps, guidance 0, 512²). The refiner
(`stabilityai/stable-diffusion-xl-refiner-1.0`) is an img2img stage over the base's latents
(`StableDiffusionXLImg2ImgPipeline`), not a text-to-image model: it is not supported here, and
images are the base model's own output.

Honours all five settings: steps, guidance (classifier-free guidance runs when > 1, as in
diffusers), scheduler ("" = the model's own; otherwise a diffusers scheduler class built from the
model's scheduler config), size ([width, height], multiples of 8; SDXL's size micro-conditioning
`original_size` = `target_size` = the image size, crop (0, 0), diffusers' defaults) and
negative_prompt. An empty negative prompt means "none", as diffusers' `negative_prompt=None`:
with the model's `force_zeros_for_empty_prompt` (true for SDXL base and turbo) the
unconditional embedding is zeros, not the encoding of "".

Text embeddings (both encoders' hidden states and the pooled projection) are cached per distinct
prompt string in an LRU of 1024 (77×2048 values each: ~320 MB in fp16 at most), so class-name
corpora encode each prompt once. Deviation from a bare `pipe(...)` call: the invisible watermark
(`add_watermarker`) is always off, so pixels do not depend on whether the `invisible-watermark`
package happens to be installed. In float16 the pipeline upcasts the VAE to float32 for decoding
(`force_upcast` in SDXL's VAE config), exactly as diffusers does.

Example config entries:

    [[generators]]
    name = "sdxl-base-1.0"
    family = "sdxl"
    model = "stabilityai/stable-diffusion-xl-base-1.0"
    steps = {min = 25, max = 50}
    guidance = {min = 4.0, max = 9.0}
    scheduler = ["", "DPMSolverMultistepScheduler"]
    size = [[1024, 1024], [1152, 896], [896, 1152]]
    dtype = "float16"
    batch_size = 8

    [[generators]]
    name = "sdxl-turbo"
    family = "sdxl"
    model = "stabilityai/sdxl-turbo"
    steps = [1, 2, 4]
    guidance = 0.0
    size = [512, 512]
    dtype = "float16"
    batch_size = 16
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
TINY_BUILDER_KEYS = ("seed", "block_out_channels")


class StableDiffusionXL(PipelineGenerator):
    family = "sdxl"
    conditioning = "text"
    honours = frozenset(SETTING_KEYS)
    # regenerate only with an inpainting checkpoint (9-channel UNet, e.g.
    # diffusers/stable-diffusion-xl-1.0-inpainting-0.1): checked at load.
    aligned_modes = frozenset({"vae_roundtrip", "regenerate", "inpaint", "img2img"})

    def _reset(self) -> None:
        # prompt -> (hidden states [77, 2048], pooled projection [1280]) on the device.
        self._embeds: LRU[str, tuple[torch.Tensor, torch.Tensor]] = LRU(EMBED_CACHE_SIZE)

    @classmethod
    def check_config(cls, config: GeneratorConfig) -> None:
        super().check_config(config)
        for name in choices(config.scheduler, "scheduler"):
            if name.startswith("FlowMatch"):
                raise Invalid("scheduler", f"{name} is a flow-matching scheduler; SDXL predicts noise")

    def _from_pretrained(self) -> Any:
        import diffusers
        import torch

        cfg = self.config
        return diffusers.StableDiffusionXLPipeline.from_pretrained(
            cfg.model, revision=cfg.revision or None, dtype=getattr(torch, cfg.dtype), add_watermarker=False
        )

    def _batch(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Any]:
        import torch

        embeds, pooled = self._embed(prompts)
        negative: dict[str, Any] = {}
        if settings.guidance > 1:  # the pipeline ignores negative embeddings without guidance
            if settings.negative_prompt or not self.pipe.config.force_zeros_for_empty_prompt:
                neg, neg_pooled = self._embed([settings.negative_prompt] * len(prompts))
            else:  # diffusers' negative_prompt=None under force_zeros_for_empty_prompt
                neg, neg_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
            negative = dict(negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled)
        out = self.pipe(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            **negative,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            width=settings.width,
            height=settings.height,
            generator=generators(seeds),
            output_type="np",
        )
        return list(out.images)

    def _embed(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked (hidden states, pooled) of `texts`, encoding each uncached string once."""

        def encode(missing: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                missing, device=self._device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            return embeds, pooled

        return cached_pair(self._embeds, texts, encode)

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """A tiny random-weight SDXL pipeline saved to `folder`. `seed` and `block_out_channels`
        go to the builder; any other override is a `GeneratorConfig` field."""
        from aigi.generators._tiny_sdxl_sd3 import tiny_sdxl

        builder = {k: overrides.pop(k) for k in TINY_BUILDER_KEYS if k in overrides}
        tiny_sdxl(folder, **builder)
        fields: dict[str, Any] = dict(
            steps=3, guidance=3.0, size=(64, 64), dtype="float32", batch_size=4, unit_size=16
        )
        fields.update(overrides)
        return GeneratorConfig(name=name, family=cls.family, model=str(folder), **fields)

