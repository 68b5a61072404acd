"""Released-size architectures with random weights, for throughput at the real cost.

A helper of `features.py --size real`, `generate.py --model sd15-sized` and `aligned.py --model
sd15-sized`, not a benchmark.

Each builder writes a folder in the layout of the released model's hub repository and returns it;
the cost per image equals the real weights'. Nothing is downloaded; the tokenizer is the offline
byte-level BPE of the tiny builders (the text tower's size, not its vocabulary, sets the cost).
"""

from __future__ import annotations

import json
from pathlib import Path


def cuda_sync(device: str) -> None:
    """Wait for queued CUDA work, so a timer reads the GPU's time too (a no-op elsewhere)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def peak_gpu_gib(device: str) -> float | None:
    """Peak GPU memory allocated by this process, in GiB (None off CUDA)."""
    if not device.startswith("cuda"):
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def sd15(folder: Path) -> Path:
    """Stable Diffusion 1.5: VAE (128-256-512-512), UNet (320-640-1280-1280), CLIP ViT-L text."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from aigi.generators.tiny import TOKENIZER_MAX_LENGTH, build_clip_tokenizer

    torch.manual_seed(0)
    UNet2DConditionModel(cross_attention_dim=768, sample_size=64).save_pretrained(folder / "unet")
    AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
        sample_size=512, scaling_factor=0.18215,
    ).save_pretrained(folder / "vae")
    tok = CLIPTokenizer.from_pretrained(build_clip_tokenizer(folder / "tokenizer"))
    CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=TOKENIZER_MAX_LENGTH,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )).save_pretrained(folder / "text_encoder")
    DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").save_pretrained(folder / "scheduler")
    return folder


def sd15_pipeline(folder: Path, in_channels: int = 4) -> Path:
    """A Stable Diffusion 1.5-sized pipeline (the parts of `sd15`) saved as one diffusers folder;
    `in_channels = 9` is the inpainting UNet (stable-diffusion-inpainting's shape)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTokenizer

    parts = sd15(folder / "parts")
    unet = UNet2DConditionModel.from_pretrained(parts / "unet")
    if in_channels != unet.config.in_channels:
        torch.manual_seed(1)
        unet = UNet2DConditionModel.from_config({**unet.config, "in_channels": in_channels})
    cls = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    cls(
        vae=AutoencoderKL.from_pretrained(parts / "vae"),
        unet=unet,
        text_encoder=CLIPTextModel.from_pretrained(parts / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(parts / "tokenizer"),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


def _pixel_unet(folder: Path, channels: tuple[int, ...], attn: tuple[bool, ...], out: int,
                resnet_updown: bool = False, **kw) -> Path:
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    # ADM's resblock_updown: resnet blocks that down/upsample (diffusers' "resnet" sampling).
    plain = "Resnet{}sampleBlock2D" if resnet_updown else "{}Block2D"
    down = tuple("AttnDownBlock2D" if a else plain.format("Down") for a in attn)
    up = tuple("AttnUpBlock2D" if a else plain.format("Up") for a in reversed(attn))
    if resnet_updown:
        kw.update(downsample_type="resnet", upsample_type="resnet")
    UNet2DModel(
        sample_size=256, in_channels=3, out_channels=out, layers_per_block=2, block_out_channels=channels,
        down_block_types=down, up_block_types=up, **kw,
    ).save_pretrained(folder)
    DDPMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear").save_pretrained(folder)
    return folder


def ddpm_bedroom(folder: Path) -> Path:
    """google/ddpm-bedroom-256: 128-128-256-256-512-512, attention at 16², ~114 M parameters."""
    return _pixel_unet(folder, (128, 128, 256, 256, 512, 512), (False,) * 4 + (True, False), 3,
                       flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6)


def adm256(folder: Path) -> Path:
    """ADM 256² unconditional (guided-diffusion): 256 channels × (1,1,2,2,4,4), attention at 32,
    16, 8, heads of 64 channels, scale-shift norm, learned σ (6 output channels), ~550 M."""
    return _pixel_unet(folder, (256, 256, 512, 512, 1024, 1024), (False,) * 3 + (True,) * 3, 6,
                       resnet_updown=True, attention_head_dim=64, resnet_time_scale_shift="scale_shift")


def vit_tiny(folder: Path) -> Path:
    """CoDE's ViT-Tiny/16 at 224²: width 192, 12 blocks, 3 heads."""
    from transformers import ViTConfig, ViTModel

    ViTModel(ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                       image_size=224, patch_size=16, layer_norm_eps=1e-6), add_pooling_layer=False).save_pretrained(folder)
    return folder


def dinov2_small(folder: Path) -> Path:
    """DINOv2 ViT-S/14: width 384, 12 blocks, 6 heads."""
    from transformers import Dinov2Config, Dinov2Model

    Dinov2Model(Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                             patch_size=14, image_size=518)).save_pretrained(folder)
    return folder


def clip_rn50(folder: Path) -> Path:
    """OpenAI CLIP RN50 in open_clip's local-dir layout."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = open_clip.get_model_config("RN50")
    model = open_clip.model.CLIP(**cfg)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    save_file({k: t.contiguous() for k, t in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


REAL = {
    "lare": sd15, "dnf": ddpm_bedroom, "dire": adm256, "code": vit_tiny,
    "anomaly": dinov2_small, "clip_rn50": clip_rn50,
}
