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

Aligned modes (`aigi.generators._aligned`, run by `aigi.generators._pipeline`): vae_roundtrip,
inpaint and img2img with any checkpoint; regenerate (an all-zero mask at strength 1, as DRCT and
B-Free) only with an *inpainting* checkpoint (`stable-diffusion-v1-5/stable-diffusion-inpainting`,
`stabilityai/stable-diffusion-2-inpainting`), whose 9-channel UNet also sees the mask and the
masked image. `StableDiffusionPipeline.from_pretrained` loads such a checkpoint (only a
text-to-image call would fail, so mode "text" with it is refused at load). With a 4-channel UNet
diffusers' inpainting pipeline blends the encoded original back wherever the mask is 0: an
all-zero mask returns exactly the sampled VAE round trip, so regenerate is refused at load,
naming `mode`. Prompts of aligned modes are passed as text (no embedding cache).

    [[generators]]
    name = "sd15-regenerate"
    family = "stable_diffusion"
    model = "stable-diffusion-v1-5/stable-diffusion-inpainting"
    mode = "regenerate"
    steps = 50
    guidance = 7.5
    size = [512, 512]
    dtype = "float16"
    aligned = {prompt = "caption"}
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigi.core.lru import LRU
from aigi.generators._pipeline import PipelineGenerator, generators
from aigi.generators.base import GeneratorConfig
from aigi.generators.settings import Settings

if TYPE_CHECKING:
    import torch

# Distinct prompt strings whose embeddings stay on the device. SD 2's are 77x1024 values, so
# 1024 entries are ~160 MB in fp16: enough for class-name corpora, bounded for caption corpora.
EMBED_CACHE_SIZE = 1024
TINY_BUILDER_KEYS = ("seed", "block_out_channels", "scheduler", "extra_scheduler_config")


class StableDiffusion(PipelineGenerator):
    family = "stable_diffusion"
    conditioning = "text"
    # regenerate only with an inpainting checkpoint (9-channel UNet): checked at load.
    aligned_modes = frozenset({"vae_roundtrip", "regenerate", "inpaint", "img2img"})

    def _reset(self) -> None:
        self._embeds: LRU[str, torch.Tensor] = LRU(EMBED_CACHE_SIZE)

    def _from_pretrained(self) -> Any:
        import diffusers
        import torch

        cfg = self.config
        return diffusers.StableDiffusionPipeline.from_pretrained(
            cfg.model,
            revision=cfg.revision or None,
            dtype=getattr(torch, cfg.dtype),
            safety_checker=None,
            requires_safety_checker=False,
        )

    def _batch(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Any]:
        # The negative embedding of "" is the pipeline's own unconditional embedding; passing it
        # always is harmless when guidance <= 1 (the pipeline then ignores it).
        out = self.pipe(
            prompt_embeds=self._embed(prompts),
            negative_prompt_embeds=self._embed([settings.negative_prompt] * len(prompts)),
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            width=settings.width,
            height=settings.height,
            generator=generators(seeds),
            output_type="np",
        )
        return list(out.images)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        """Stacked text embeddings of `texts`, encoding each distinct uncached string once."""
        import torch

        found = {t: e for t in dict.fromkeys(texts) if (e := self._embeds.get(t)) is not None}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        for t in missing:  # one at a time: see _pipeline.cached_pair
            found[t] = self.pipe.encode_prompt([t], self._device, 1, False)[0][0]
        for t, e in found.items():
            self._embeds.put(t, e)
        return torch.stack([found[t] for t in texts])

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

