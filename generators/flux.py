"""FLUX.1 through diffusers' `FluxPipeline`.

Covers `black-forest-labs/FLUX.1-schnell` and `black-forest-labs/FLUX.1-dev` (both gated on the
hub: accept the licence and log in before downloading) and fine-tunes in the diffusers layout.

Text-conditioned: a CLIP text encoder (its pooled output) and a T5-XXL encoder (its token
embeddings), both fed the prompt. Honours steps, guidance, scheduler and size.
- `guidance` is FLUX.1-dev's *embedded* guidance: dev is guidance-distilled, so the value is an
  input of the transformer (dev's usual value is 3.5) and each step runs the model once; there
  is no classifier-free guidance. FLUX.1-schnell (timestep-distilled, ~4 steps) has no guidance
  embedding (`guidance_embeds = false` in its transformer config): it ignores `guidance`, and
  its rows record a value that had no effect. Use `guidance = 0.0` for schnell.
- `negative_prompt` is not honoured: FLUX.1 has no unconditional branch to steer away from
  (diffusers' optional "true CFG" doubles the cost and is not what these models were distilled
  for), so a negative prompt is a config error naming the key.
- `size` must be a multiple of 16 (the VAE's ×8 times the 2×2 packing of latents).
- `scheduler`: a flow-matching scheduler whose `set_timesteps` takes `sigmas` and `mu` (as the
  model's own `FlowMatchEulerDiscreteScheduler`); another is an error naming `scheduler` at load.
  FluxPipeline does not hand the seeded generators to `scheduler.step`, so a scheduler that adds
  noise while stepping (e.g. `FlowMatchLCMScheduler`) would not be reproducible: use ODE ones.
- The T5 sequence length follows the model: 512 tokens with a guidance embedding (dev), 256
  without (schnell, which was trained with 256; diffusers' default of 512 is beyond it).
Prompt embeddings (T5 sequence and pooled CLIP vector) are cached per distinct prompt (LRU 1024).

Example entry:

    [[generators]]
    name = "flux-schnell"
    family = "flux"
    model = "black-forest-labs/FLUX.1-schnell"
    steps = 4
    guidance = 0.0
    size = [1024, 1024]
    dtype = "bfloat16"
    batch_size = 4
"""

from __future__ import annotations

import inspect
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
SIZE_MULTIPLE = 16
#: T5 tokens: dev (guidance-embedded) uses 512, schnell 256.
MAX_SEQUENCE_LENGTH = {True: 512, False: 256}
TINY_BUILDER_KEYS = ("seed", "variant")


def _takes_sigmas_and_mu(scheduler_cls: type) -> bool:
    """FluxPipeline calls `set_timesteps(sigmas=..., mu=...)`: anything else fails mid-run."""
    set_timesteps = getattr(scheduler_cls, "set_timesteps", None)
    if set_timesteps is None:
        return False
    params = inspect.signature(set_timesteps).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return "sigmas" in params and ("mu" in params or var_kw)


class Flux(PipelineGenerator):
    family = "flux"
    conditioning = "text"
    honours = frozenset({"steps", "guidance", "scheduler", "size"})
    denoiser = "transformer"
    # No regenerate: FluxInpaintPipeline blends the original back where the mask is 0 (FLUX.1
    # Fill is another pipeline), so an all-zero mask would only be a VAE round trip.
    aligned_modes = frozenset({"vae_roundtrip", "inpaint", "img2img"})

    def _reset(self) -> None:
        self._embeds: LRU[str, tuple[torch.Tensor, torch.Tensor]] = LRU(EMBED_CACHE_SIZE)

    @classmethod
    def check_config(cls, config: GeneratorConfig) -> None:
        super().check_config(config)
        for w, h in choices(config.size, "size"):
            if w % SIZE_MULTIPLE or h % SIZE_MULTIPLE:
                raise Invalid("size", f"Flux needs width and height that are multiples of "
                              f"{SIZE_MULTIPLE}, got {[w, h]}")

    def _from_pretrained(self) -> Any:
        import diffusers
        import torch

        cfg = self.config
        pipe = diffusers.FluxPipeline.from_pretrained(
            cfg.model, revision=cfg.revision or None, dtype=getattr(torch, cfg.dtype)
        )
        self._max_sequence_length = MAX_SEQUENCE_LENGTH[bool(pipe.transformer.config.guidance_embeds)]
        return pipe

    def _check_scheduler(self, scheduler: Any) -> None:
        if not _takes_sigmas_and_mu(type(scheduler)):
            raise Invalid("scheduler", f"generator {self.config.name!r}: {type(scheduler).__name__} cannot "
                          "run Flux (its set_timesteps must take `sigmas` and `mu`); use a flow-matching scheduler")

    def _batch(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], s: Settings
    ) -> list[Any]:

        embeds, pooled = self._embed(prompts)
        out = self.pipe(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            num_inference_steps=s.steps,
            guidance_scale=s.guidance,  # used only by a transformer with a guidance embedding
            width=s.width,
            height=s.height,
            # CPU generators: the initial noise is the same whichever device runs the model.
            generator=generators(seeds),
            max_sequence_length=self._max_sequence_length,
            output_type="np",
        )
        return list(out.images)

    def _embed(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked T5 sequence embeddings and pooled CLIP embeddings of `texts`; each distinct
        uncached string is encoded once."""

        def encode(missing: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            emb, pooled, _ = self.pipe.encode_prompt(
                missing, device=self._device, max_sequence_length=self._max_sequence_length
            )
            return emb, pooled

        return cached_pair(self._embeds, texts, encode)

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """A tiny random-weight Flux pipeline saved to `folder`. `variant` ("dev", the default:
        guidance-embedded, or "schnell": no guidance embedding) and `seed` go to the builder; any
        other override is a `GeneratorConfig` field."""
        builder = {k: overrides.pop(k) for k in TINY_BUILDER_KEYS if k in overrides}
        tiny_flux(folder, **builder)
        fields: dict[str, Any] = dict(
            steps=3, guidance=3.5, size=(64, 64), dtype="float32", batch_size=4, unit_size=16
        )
        fields.update(overrides)
        return GeneratorConfig(name=name, family=cls.family, model=str(folder), **fields)


def tiny_flux(folder: str | Path, *, variant: str = "dev", seed: int = 0) -> Path:
    """Save a tiny random-weight FluxPipeline to `folder` (offline).

    The transformer follows diffusers' own Flux test components (one double- and one
    single-stream block, head dim 16 split 4/4/8 for the 3-axis RoPE); unlike those, the VAE
    has the real layout: 16 latent channels, 4 down blocks (×8), no quant convs, FLUX's scaling
    and shift, so the transformer takes 16 × 2×2 = 64 packed channels. The scheduler is the
    real one's: FlowMatchEuler with dev's dynamic (resolution-dependent) shift, or schnell's
    fixed shift 1. The CLIP tokenizer is `aigi.generators.tiny`'s offline BPE, the T5
    `aigi.generators._t5`'s.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5TokenizerFast

    from aigi.generators._t5 import build_t5_tokenizer, tiny_t5_encoder
    from aigi.generators.tiny import TOKENIZER_MAX_LENGTH, build_clip_tokenizer

    if variant not in ("dev", "schnell"):
        raise ValueError(f"variant must be 'dev' or 'schnell', got {variant!r}")
    dev = variant == "dev"
    folder = Path(folder)
    tokenizer = CLIPTokenizer.from_pretrained(build_clip_tokenizer(folder / "tokenizer"))
    tokenizer_2 = T5TokenizerFast.from_pretrained(build_t5_tokenizer(folder / "tokenizer_2"))
    text_encoder_2 = tiny_t5_encoder(len(tokenizer_2), d_model=32, seed=seed)
    torch.manual_seed(seed)  # weights only; generation uses per-image generators
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TOKENIZER_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=32,
        )
    )
    latent_channels = 16
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=latent_channels * 4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # the T5's d_model
        pooled_projection_dim=32,  # the CLIP's hidden size (its pooled output)
        guidance_embeds=dev,
        axes_dims_rope=(4, 4, 8),
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(16, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0 if dev else 1.0,
        use_dynamic_shifting=dev,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer.eval(),
    )
    pipe.save_pretrained(folder)
    return folder
