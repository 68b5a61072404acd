"""Tiny random-weight diffusion components built offline from config, for tests and the demo.

Everything here is saved with `save_pretrained` and meant to be loaded back through the same
`from_pretrained` path a real model uses. Nothing is downloaded: the tokenizer is a byte-level
BPE vocabulary written by hand (design.md §6). These models are random-weight stand-ins; their
images and features are smoke-test data, not science.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

TOKENIZER_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def build_clip_tokenizer(folder: str | Path, merges: list[tuple[str, str]] | None = None) -> Path:
    """Write a CLIP byte-level BPE tokenizer (vocab.json, merges.txt) to `folder` and save it.

    Vocabulary layout as in CLIP: the 256 byte symbols, the same with `</w>`, each merge result,
    then the two special tokens. Returns the folder; the vocabulary size is 514 + len(merges).
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges = list(merges or [("p", "h"), ("t", "h"), ("th", "e</w>"), ("o", "f</w>")])
    for a, b in merges:
        vocab_list.append(a + b)
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    tok = CLIPTokenizer(
        vocab=str(folder / "vocab.json"),
        merges=str(folder / "merges.txt"),
        model_max_length=TOKENIZER_MAX_LENGTH,
    )
    tok.save_pretrained(folder)
    return folder


def tiny_stable_diffusion(
    folder: str | Path,
    *,
    seed: int = 0,
    block_out_channels: tuple[int, ...] = (32, 64),
    scheduler: str = "DDIMScheduler",
    sample_size: int = 8,
    cross_attention_dim: int = 32,
    extra_scheduler_config: dict[str, Any] | None = None,
    in_channels: int = 4,
) -> Path:
    """Save a tiny, random-weight StableDiffusionPipeline to `folder`.

    The VAE has 4 down blocks, so the latent factor is the real ×8 and latents have 4 channels;
    the scheduler uses SD's scaled-linear β schedule. `sample_size` is the UNet's latent size.
    `in_channels = 9` makes an inpainting checkpoint, as `stable-diffusion-v1-5/
    stable-diffusion-inpainting`: the UNet also takes the mask (1) and the masked image's latents
    (4), and the folder is saved as a `StableDiffusionInpaintPipeline`.
    """
    import diffusers
    import torch
    from diffusers import (
        AutoencoderKL,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)  # weights only; generation uses per-image generators
    if in_channels not in (4, 9):
        raise ValueError(f"in_channels must be 4 (text-to-image) or 9 (inpainting), got {in_channels}")
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=block_out_channels,
        down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (len(block_out_channels) - 1),
        up_block_types=("UpBlock2D",) * (len(block_out_channels) - 1) + ("CrossAttnUpBlock2D",),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=16,
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
        sample_size=sample_size * 8,
        scaling_factor=0.18215,
    )
    tok_dir = build_clip_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cross_attention_dim,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TOKENIZER_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=cross_attention_dim,
        )
    )
    sched_cls = getattr(diffusers, scheduler)
    sched_kwargs: dict[str, Any] = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
    )
    accepted = inspect.signature(sched_cls.__init__).parameters
    # SD's own scheduler configs set these; without them diffusers warns on every load.
    sched_kwargs.update({k: v for k, v in (("steps_offset", 1), ("clip_sample", False)) if k in accepted})
    sched_kwargs.update(extra_scheduler_config or {})
    sched = sched_cls(**sched_kwargs)
    pipe_cls = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    pipe = pipe_cls(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def tiny_pixel_unet(
    folder: str | Path,
    *,
    seed: int = 0,
    sample_size: int = 32,
    block_out_channels: tuple[int, ...] = (16, 32),
    learn_sigma: bool = False,
) -> Path:
    """Save a tiny, random-weight pixel-space UNet2DModel and its DDPMScheduler to `folder`.

    The layout is that of `google/ddpm-bedroom-256`: the UNet's config.json and weights and the
    scheduler's scheduler_config.json side by side at the root. The UNet copies that model's
    time embedding (`flip_sin_to_cos=False`, `freq_shift=1`) but has no attention blocks; the
    scheduler is the DDPM linear β schedule 1e-4..0.02 over 1000 steps (ADM's too). With
    `learn_sigma` the UNet has 6 output channels, ε first, like guided-diffusion's ADM.
    """
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    folder = Path(folder)
    torch.manual_seed(seed)
    n = len(block_out_channels)
    unet = UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=6 if learn_sigma else 3,
        layers_per_block=1,
        block_out_channels=block_out_channels,
        # No attention blocks: on CPU they cost ~10× the rest of this tiny net.
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        norm_num_groups=8,
        norm_eps=1e-6,
        flip_sin_to_cos=False,
        freq_shift=1,
    )
    # diffusers initialises conv_out to random values, so ε already depends on the input.
    sched = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        variance_type="learned_range" if learn_sigma else "fixed_small",
        clip_sample=True,
    )
    unet.eval().save_pretrained(folder)
    sched.save_pretrained(folder)
    return folder
