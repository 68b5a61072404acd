"""Kandinsky 2.2 text-to-image through diffusers' `KandinskyV22CombinedPipeline` (text-conditioned).

A cascade of two models: the prior (`kandinsky-community/kandinsky-2-2-prior`, a
`PriorTransformer` with CLIP text and image encoders and an `UnCLIPScheduler`) maps the prompt to a
CLIP image embedding; the decoder (`kandinsky-community/kandinsky-2-2-decoder`, an
image-embedding-conditioned UNet, a `DDPMScheduler` and a MoVQ image decoder) turns it into
pixels. `model` is the decoder's repo id: the combined pipeline loads it and the prior that its
model card names (`prior: kandinsky-community/kandinsky-2-2-prior`); `revision` pins the decoder
only, the prior is loaded at the revision diffusers picks for it (its default branch). A local
folder saved by `KandinskyV22CombinedPipeline.save_pretrained` (both stages' components in one
folder, as `tiny` writes) loads the same way.

Honours:
- steps: the decoder's `num_inference_steps`. The prior always runs diffusers' defaults for the
  combined pipeline (`prior_num_inference_steps` = 25, `prior_guidance_scale` = 4.0): the
  settings have one steps and one guidance value, and they go to the stage that makes the pixels.
- guidance: the decoder's `guidance_scale` (classifier-free guidance between the prompt's image
  embedding and the negative one when > 1).
- scheduler: the decoder's scheduler ("" = the model's `DDPMScheduler`; otherwise a diffusers
  class built from its config). A swap is meaningful: the decoder is an ordinary ε-prediction
  latent UNet, and diffusers' decoder pipeline drops the learned-variance channels for a
  scheduler without `variance_type = "learned_range"`. Flow-matching schedulers are refused. The
  prior's `UnCLIPScheduler` is never swapped.
- size: [width, height], multiples of 64 (the decoder rounds other sizes *up* to a multiple of
  64 — MoVQ factor 8, squared — so the image would not have the asked size).
- negative_prompt: passed to the prior, which makes the negative image embedding from it ("" =
  diffusers' `negative_prompt=None`: the CLIP image embedding of a black image).

Randomness: one CPU `torch.Generator` per image, shared by the two stages as in the combined
pipeline (the prior draws first, then the decoder continues from the same generator). With no
negative prompt a batch is one call with a list of generators. With a negative prompt the prior
doubles its batch (prompts + negative prompts) and a list of generators no longer fits
(diffusers raises), so each image is then its own call with its own generator: exactly the plain
`pipe(prompt, negative_prompt=..., generator=Generator("cpu").manual_seed(seed))`, slower.
Prompt embeddings are not cached: the prior takes no precomputed text embeddings, and its output
(the image embedding) is drawn from the image's seed, so there is nothing per prompt to reuse.
Kandinsky 2.2 has no safety checker.

Example config entry:

    [[generators]]
    name = "kandinsky-2.2"
    family = "kandinsky"
    model = "kandinsky-community/kandinsky-2-2-decoder"
    steps = {min = 30, max = 100}
    guidance = {min = 3.0, max = 6.0}
    scheduler = ["", "DDIMScheduler"]
    size = [[768, 768], [1024, 1024]]
    dtype = "float16"
    batch_size = 8
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aigi.core.configtools import Invalid
from aigi.generators._pipeline import PipelineGenerator, generators
from aigi.generators.base import (
    GeneratorConfig,
)
from aigi.generators.settings import SETTING_KEYS, Settings, choices

#: The decoder rounds width and height up to a multiple of this (MoVQ factor 8, squared).
SIZE_MULTIPLE = 64
TINY_BUILDER_KEYS = ("seed",)


class Kandinsky(PipelineGenerator):
    family = "kandinsky"
    conditioning = "text"
    honours = frozenset(SETTING_KEYS)
    # vae_roundtrip through the MoVQ (unquantized, as the decoder decodes); no inpaint or
    # regenerate: diffusers' Kandinsky 2.2 inpainting needs the separate 9-channel inpainting
    # decoder and takes no strength.
    aligned_modes = frozenset({"vae_roundtrip", "img2img"})

    @classmethod
    def check_config(cls, config: GeneratorConfig) -> None:
        super().check_config(config)
        for width, height in choices(config.size, "size"):
            if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
                raise Invalid(
                    "size",
                    f"Kandinsky 2.2 needs width and height in multiples of {SIZE_MULTIPLE} "
                    f"(the decoder rounds others up), got [{width}, {height}]",
                )
        for name in choices(config.scheduler, "scheduler"):
            if name.startswith("FlowMatch"):
                raise Invalid(
                    "scheduler", f"{name} is a flow-matching scheduler; the decoder predicts noise"
                )

    def _from_pretrained(self) -> Any:
        import diffusers
        import torch

        cfg = self.config
        return diffusers.KandinskyV22CombinedPipeline.from_pretrained(
            cfg.model, revision=cfg.revision or None, dtype=getattr(torch, cfg.dtype)
        )

    def load(self, device: str) -> None:
        super().load(device)
        self.pipe.decoder_pipe.unet = self.pipe.unet  # the compiled one, when compiled

    def _batch(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Any]:
        self.pipe.decoder_pipe.scheduler = self.pipe.scheduler  # the stage that samples with it
        if settings.negative_prompt:
            # A negative prompt doubles the prior's batch, which a list of generators cannot
            # follow: one image per call then (see the module docstring).
            return [im for p, s in zip(prompts, seeds, strict=True) for im in self._call([p], [s], settings)]
        return self._call(prompts, seeds, settings)

    def _call(self, prompts: list[str], seeds: list[int], settings: Settings) -> list[Any]:

        gens = generators(seeds)
        if settings.negative_prompt:
            (prompt,), (generator,) = prompts, gens
            call: dict[str, Any] = dict(
                prompt=prompt, negative_prompt=settings.negative_prompt, generator=generator
            )
        else:
            call = dict(prompt=list(prompts), negative_prompt=None, generator=gens)
        out = self.pipe(
            **call,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            width=settings.width,
            height=settings.height,
            output_type="np",
        )
        if len(out.images) != len(prompts):
            raise RuntimeError(
                f"generator {self.config.name!r}: got {len(out.images)} images for "
                f"{len(prompts)} prompts"
            )
        return list(out.images)

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """A tiny random-weight Kandinsky 2.2 (prior + decoder) saved to `folder` as one
        `KandinskyV22CombinedPipeline`. `seed` goes to the builder; any other override is a
        `GeneratorConfig` field."""
        from aigi.generators._tiny_kandinsky import tiny_kandinsky

        builder = {k: overrides.pop(k) for k in TINY_BUILDER_KEYS if k in overrides}
        tiny_kandinsky(Path(folder), **builder)
        fields: dict[str, Any] = dict(
            steps=3, guidance=3.0, size=(64, 64), dtype="float32", batch_size=4, unit_size=16
        )
        fields.update(overrides)
        return GeneratorConfig(name=name, family=cls.family, model=str(folder), **fields)
