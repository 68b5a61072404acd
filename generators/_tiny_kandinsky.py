"""A tiny random-weight Kandinsky 2.2 (prior + decoder) saved offline as one
`KandinskyV22CombinedPipeline` folder.

Built from config like diffusers' own Kandinsky 2.2 tests (`get_dummy_components`), with the real
models' structure where it matters to the family: the prior's UnCLIP schedule (sample prediction,
fixed_small_log variance, clip range 10), the decoder's DDPM schedule (linear β 0.00085..0.012,
ε-prediction, `steps_offset` 1), a UNet predicting mean and variance (8 output channels)
conditioned on the image embedding, and a MoVQ with 4 blocks, so the latent factor is the real ×8
and sizes are multiples of 64 as for the real decoder. The tokenizer is the hand-written CLIP BPE
of `aigi.generators.tiny` (no download).
"""

from __future__ import annotations

from pathlib import Path

EMBED_DIM = 32


def tiny_kandinsky(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny `KandinskyV22CombinedPipeline` to `folder` (weights seeded by `seed`)."""
    import torch
    from diffusers import (
        DDPMScheduler,
        KandinskyV22CombinedPipeline,
        PriorTransformer,
        UnCLIPScheduler,
        UNet2DConditionModel,
        VQModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from aigi.generators.tiny import TOKENIZER_MAX_LENGTH, build_clip_tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # weights only; generation uses per-image generators
    tokenizer = CLIPTokenizer.from_pretrained(build_clip_tokenizer(folder / "prior_tokenizer"))
    text_encoder = CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=EMBED_DIM,
            projection_dim=EMBED_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TOKENIZER_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=EMBED_DIM,
            projection_dim=EMBED_DIM,
            image_size=32,
            patch_size=8,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_channels=3,
        )
    ).eval()
    image_processor = CLIPImageProcessor(
        crop_size=32,
        size=32,
        do_center_crop=True,
        do_normalize=True,
        do_resize=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=3,
    )
    prior = PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=12,
        embedding_dim=EMBED_DIM,
        num_layers=1,
        num_embeddings=TOKENIZER_MAX_LENGTH,
    )
    # clip_mean/clip_std start at 0, which would make every image embedding 0: use N(0, 1).
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))
    prior.eval()
    prior_scheduler = UnCLIPScheduler(
        variance_type="fixed_small_log",
        prediction_type="sample",
        num_train_timesteps=1000,
        clip_sample=True,
        clip_sample_range=10.0,
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=8,  # mean and variance, as the real decoder
        addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64),
        layers_per_block=1,
        encoder_hid_dim=EMBED_DIM,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=32,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    ).eval()
    movq = VQModel(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
        up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        vq_embed_dim=4,
    ).eval()
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        steps_offset=1,
        prediction_type="epsilon",
        thresholding=False,
    )
    pipe = KandinskyV22CombinedPipeline(
        unet=unet,
        scheduler=scheduler,
        movq=movq,
        prior_prior=prior,
        prior_image_encoder=image_encoder,
        prior_text_encoder=text_encoder,
        prior_tokenizer=tokenizer,
        prior_scheduler=prior_scheduler,
        prior_image_processor=image_processor,
    )
    pipe.save_pretrained(folder)
    return folder
