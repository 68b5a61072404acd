"""PixArt-α and PixArt-Σ through diffusers' `PixArtAlphaPipeline` / `PixArtSigmaPipeline`.

Covers `PixArt-alpha/PixArt-XL-2-1024-MS`, `PixArt-alpha/PixArt-XL-2-512x512` (α) and
`PixArt-alpha/PixArt-Sigma-XL-2-1024-MS`, `PixArt-alpha/PixArt-Sigma-XL-2-512-MS` (Σ), and their
fine-tunes in the diffusers layout. The pipeline class is the one the model folder's
`model_index.json` names (`_class_name`), so one family covers both; any other class is an
error naming `model`.

Text-conditioned (a T5-XXL encoder, 120 tokens for α, 300 for Σ: the pipelines' defaults).
Honours all settings: steps, guidance (classifier-free, off at <= 1), scheduler, size and
negative_prompt. Deviations from a plain `pipe(prompt)` call, both so that the configured values
are what is used:
- `use_resolution_binning=False`: the pipelines otherwise snap the size to the nearest of their
  trained aspect-ratio bins and resize the result, so the image would not have the row's size.
- prompts are encoded as given (`clean_caption=False`: lowercased and stripped only). The
  pipelines' default caption cleaning silently switches itself off unless `beautifulsoup4` and
  `ftfy` are installed, which would make the images depend on the worker's packages.
Size must be a multiple of 16 (the VAE's ×8 times the transformer's 2×2 patches). Prompt and
negative-prompt embeddings are cached per distinct string (LRU of 1024).

Example entry:

    [[generators]]
    name = "pixart-sigma-1024"
    family = "pixart"
    model = "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"
    steps = 20
    guidance = 4.5
    size = [1024, 1024]
    dtype = "float16"
    batch_size = 8
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aigi.core.configtools import Invalid
from aigi.core.lru import LRU
from aigi.generators._pipeline import PipelineGenerator, cached_pair, generators
from aigi.generators.base import GeneratorConfig
from aigi.generators.settings import Settings, choices

if TYPE_CHECKING:
    import torch

EMBED_CACHE_SIZE = 1024
PIPELINES = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
#: The VAE's ×8 times the transformer's patch size 2 (both real PixArt models).
SIZE_MULTIPLE = 16
TINY_BUILDER_KEYS = ("seed", "variant")


def pipeline_class_name(model: str, revision: str = "") -> str:
    """`_class_name` of the model's `model_index.json`, read from the folder or the hub cache."""
    path = Path(model)
    if path.is_dir():
        index = path / "model_index.json"
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:  # the cache first: no network round trip for a model already downloaded
            index = hf_hub_download(model, "model_index.json", revision=revision or None,
                                    local_files_only=True)
        except LocalEntryNotFoundError:  # the same fetch from_pretrained would do next
            index = hf_hub_download(model, "model_index.json", revision=revision or None)
    return str(json.loads(Path(index).read_text())["_class_name"])


class PixArt(PipelineGenerator):
    family = "pixart"
    conditioning = "text"
    honours = frozenset({"steps", "guidance", "scheduler", "size", "negative_prompt"})
    denoiser = "transformer"
    # diffusers has no PixArt img2img or inpainting pipeline: the autoencoder only.
    aligned_modes = frozenset({"vae_roundtrip"})

    def _reset(self) -> None:
        self._embeds: LRU[str, tuple[torch.Tensor, torch.Tensor]] = LRU(EMBED_CACHE_SIZE)

    @classmethod
    def check_config(cls, config: GeneratorConfig) -> None:
        super().check_config(config)
        for w, h in choices(config.size, "size"):
            if w % SIZE_MULTIPLE or h % SIZE_MULTIPLE:
                raise Invalid("size", f"PixArt needs width and height that are multiples of "
                              f"{SIZE_MULTIPLE}, got {[w, h]}")

    def _from_pretrained(self) -> Any:
        import diffusers
        import torch

        cfg = self.config
        name = pipeline_class_name(cfg.model, cfg.revision)
        if name not in PIPELINES:
            raise ValueError(f"generator {cfg.name!r}: model: {cfg.model!r} is a {name}, not one "
                             f"of {', '.join(PIPELINES)}")
        return getattr(diffusers, name).from_pretrained(
            cfg.model, revision=cfg.revision or None, dtype=getattr(torch, cfg.dtype)
        )

    def _batch(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], s: Settings
    ) -> list[Any]:

        embeds, mask = self._embed(prompts)
        negative: dict[str, Any] = {}
        if s.guidance > 1:  # the pipeline uses the negative embeddings only with guidance
            neg, neg_mask = self._embed([s.negative_prompt] * len(prompts))
            negative = {"negative_prompt_embeds": neg, "negative_prompt_attention_mask": neg_mask}
        out = self.pipe(
            prompt_embeds=embeds,
            prompt_attention_mask=mask,
            negative_prompt=None,
            **negative,
            num_inference_steps=s.steps,
            guidance_scale=s.guidance,
            width=s.width,
            height=s.height,
            # CPU generators: the initial noise is the same whichever device runs the model.
            generator=generators(seeds),
            use_resolution_binning=False,
            output_type="np",
        )
        return list(out.images)

    def _embed(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked T5 embeddings and attention masks of `texts`; each distinct uncached string
        is encoded once."""

        def encode(missing: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            emb, mask, _, _ = self.pipe.encode_prompt(
                missing, do_classifier_free_guidance=False, device=self._device, clean_caption=False
            )
            return emb, mask

        return cached_pair(self._embeds, texts, encode)

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """A tiny random-weight PixArt pipeline saved to `folder`. `variant` ("sigma", the
        default, or "alpha": the pipeline class) and `seed` go to the builder; any other
        override is a `GeneratorConfig` field."""
        builder = {k: overrides.pop(k) for k in TINY_BUILDER_KEYS if k in overrides}
        tiny_pixart(folder, **builder)
        fields: dict[str, Any] = dict(
            steps=3, guidance=4.5, size=(64, 64), dtype="float32", batch_size=4, unit_size=16
        )
        fields.update(overrides)
        return GeneratorConfig(name=name, family=cls.family, model=str(folder), **fields)


def tiny_pixart(folder: str | Path, *, variant: str = "sigma", seed: int = 0) -> Path:
    """Save a tiny random-weight PixArt-α or -Σ pipeline to `folder` (offline).

    The transformer follows diffusers' own PixArt test components (2 layers, 2×2 patches,
    learned σ: 8 output channels); the VAE has 4 down blocks (the real ×8, 4 latent channels);
    the T5 is `aigi.generators._t5`'s; the scheduler is the real models' DPM-Solver++ on the
    linear β schedule 1e-4..0.02.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        PixArtAlphaPipeline,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )
    from transformers import T5TokenizerFast

    from aigi.generators._t5 import build_t5_tokenizer, tiny_t5_encoder

    if variant not in ("alpha", "sigma"):
        raise ValueError(f"variant must be 'alpha' or 'sigma', got {variant!r}")
    folder = Path(folder)
    tokenizer = T5TokenizerFast.from_pretrained(build_t5_tokenizer(folder / "tokenizer"))
    text_encoder = tiny_t5_encoder(len(tokenizer), d_model=32, seed=seed)
    torch.manual_seed(seed)  # weights only; generation uses per-image generators
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=24,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        # α uses sd-vae-ft-ema's scaling, Σ the SDXL VAE's.
        scaling_factor=0.18215 if variant == "alpha" else 0.13025,
    )
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
    )
    pipe_cls = PixArtAlphaPipeline if variant == "alpha" else PixArtSigmaPipeline
    pipe = pipe_cls(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae.eval(),
        transformer=transformer.eval(),
        scheduler=scheduler,
    )
    pipe.save_pretrained(folder)
    return folder
