"""Tiny random-weight SDXL and SD3 pipelines built offline from config (the families' `tiny()`).

Shapes follow the real models at a tiny width, so every code path of the real pipelines runs:
SDXL has two CLIP text encoders (the second with a projection, whose pooled output feeds the
UNet's "text_time" added embedding) and a 4-down-block VAE (×8 latents, 4 channels); SD3 has
two projected CLIP encoders, a T5 encoder, an MMDiT transformer with patch size 2 and
a 16-channel VAE with a shift factor, as SD 3 / 3.5 do. Tokenizers are built offline: CLIP's as
a hand-written byte-level BPE (`aigi.generators.tiny.build_clip_tokenizer`), T5's from `aigi.generators._t5`
(a Unigram model trained with `tokenizers`, design.md §6). Smoke-test data, not science.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from aigi.generators._t5 import build_t5_tokenizer, tiny_t5_encoder
from aigi.generators.tiny import TOKENIZER_MAX_LENGTH, build_clip_tokenizer


def _clip_text_config(tokenizer: Any, hidden: int, projection: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
        projection_dim=projection,
    )


def _tiny_vae(latent_channels: int, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    # 4 down blocks: the real ×8 latent factor.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(16, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        **extra,
    ).eval()


def tiny_sdxl(
    folder: str | Path,
    *,
    seed: int = 0,
    block_out_channels: tuple[int, ...] = (16, 32),
    scheduler: str = "EulerDiscreteScheduler",
) -> Path:
    """Save a tiny, random-weight StableDiffusionXLPipeline to `folder`.

    Text encoders: a CLIPTextModel (hidden 16) and a CLIPTextModelWithProjection (hidden 32,
    projection 32); the UNet's cross-attention width is their concatenation (48) and its
    "text_time" embedding takes 6 time ids × 8 + the pooled 32. The scheduler is SDXL base's
    (scaled-linear β, "leading" spacing, steps_offset 1) under the class `scheduler`.
    """
    import diffusers
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)  # weights only; generation uses per-image generators
    tokenizer = CLIPTokenizer.from_pretrained(build_clip_tokenizer(folder / "tokenizer"))
    tokenizer_2 = CLIPTokenizer.from_pretrained(build_clip_tokenizer(folder / "tokenizer_2"))
    text_encoder = CLIPTextModel(_clip_text_config(tokenizer, 16, 16)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(tokenizer_2, 32, 32)).eval()
    time_dim = 8
    n = len(block_out_channels)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=block_out_channels,
        # SDXL's layout: no attention in the first (highest-resolution) block.
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        attention_head_dim=8,
        use_linear_projection=True,
        cross_attention_dim=16 + 32,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + 32,
        norm_num_groups=8,
    ).eval()
    sched_cls = getattr(diffusers, scheduler)
    sched_kwargs: dict[str, Any] = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
    )
    accepted = inspect.signature(sched_cls.__init__).parameters
    for key, value in (("steps_offset", 1), ("timestep_spacing", "leading"), ("clip_sample", False)):
        if key in accepted:
            sched_kwargs[key] = value
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(4, scaling_factor=0.13025),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=sched_cls(**sched_kwargs),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def tiny_sd3(
    folder: str | Path,
    *,
    seed: int = 0,
    num_layers: int = 2,
    scheduler_shift: float = 3.0,
) -> Path:
    """Save a tiny, random-weight StableDiffusion3Pipeline to `folder`.

    CLIP-L-like (hidden 16) and CLIP-G-like (hidden 32) projected text encoders: pooled width
    16 + 32 = 48; their concatenated hidden states (48) are zero-padded to the joint attention
    width (64), the tiny T5's width. T5 is kept: a pipeline saved without text_encoder_3 /
    tokenizer_3 does not load back through a plain `from_pretrained(folder)` in diffusers 0.42
    (they are not optional components), and keeping it runs the real T5 path. The scheduler
    is SD3's FlowMatchEulerDiscreteScheduler (shift 3.0).
    """
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import (
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        T5TokenizerFast,
    )

    folder = Path(folder)
    torch.manual_seed(seed)
    joint_dim = 64
    tokenizer = CLIPTokenizer.from_pretrained(build_clip_tokenizer(folder / "tokenizer"))
    tokenizer_2 = CLIPTokenizer.from_pretrained(build_clip_tokenizer(folder / "tokenizer_2"))
    text_encoder = CLIPTextModelWithProjection(_clip_text_config(tokenizer, 16, 16)).eval()
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(tokenizer_2, 32, 32)).eval()
    tokenizer_3 = T5TokenizerFast.from_pretrained(build_t5_tokenizer(folder / "tokenizer_3"))
    text_encoder_3 = tiny_t5_encoder(len(tokenizer_3), d_model=joint_dim, num_layers=1, seed=seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=num_layers,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=joint_dim,
        caption_projection_dim=32,
        pooled_projection_dim=16 + 32,
        pos_embed_max_size=32,
    ).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=scheduler_shift),
        vae=_tiny_vae(16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                      use_post_quant_conv=False),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(folder)
    return folder
