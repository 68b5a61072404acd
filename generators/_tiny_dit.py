"""A tiny, random-weight DiTPipeline in the layout of `facebook/DiT-XL-2-256`, built offline.

Like the real repository: the transformer is saved as a `Transformer2DModel` with
`norm_type = "ada_norm_zero"` (diffusers loads it as `DiTTransformer2DModel`), it has 1000
classes plus the null class used for guidance and a learned σ (out_channels = 2 × in_channels),
the scheduler is a DDIM one over DiT's linear β schedule 1e-4..0.02, and `model_index.json`
carries the ImageNet `id2label` table that `DiTPipeline.labels` is built from. The transformer
follows diffusers' own DiT fast test; the VAE has 4 down blocks, so the latent factor is the real
×8 (a latent `sample_size` of 8 gives 64×64 images).
"""

from __future__ import annotations

import json
from pathlib import Path

NUM_CLASSES = 1000


def tiny_dit(
    folder: str | Path, *, seed: int = 0, sample_size: int = 8, num_layers: int = 2
) -> Path:
    """Save a tiny DiTPipeline to `folder`; its images are (8·sample_size)² pixels."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, Transformer2DModel

    from aigi.prompts.classes import imagenet_classes

    folder = Path(folder)
    torch.manual_seed(seed)  # weights only; generation uses per-image generators
    transformer = Transformer2DModel(
        sample_size=sample_size,
        num_layers=num_layers,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=NUM_CLASSES,
        norm_type="ada_norm_zero",
        norm_elementwise_affine=False,
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
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        prediction_type="epsilon",
    )
    pipe = DiTPipeline(transformer=transformer.eval(), vae=vae.eval(), scheduler=scheduler)
    pipe.save_pretrained(folder)
    # `save_pretrained` does not write id2label (it is not a registered component); the real
    # repository keeps it in model_index.json, from where `from_pretrained` passes it to __init__.
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["id2label"] = {str(i): name for i, name in enumerate(imagenet_classes())}
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder
