"""DIRE: the DIffusion Reconstruction Error |x₀ − DDIM(DDIM⁻¹(x₀))| (ICCV 2023, arXiv 2303.09295).

The computation is the released code's (`compute_dire.py`, guided-diffusion's DDIM, methods.md
§5.3): timesteps respaced as guided-diffusion's "ddim<steps>" (20 → t_i = 50·i, i = 0..19; the UNet
sees these original t values); DDIM (η = 0) inversion for i = 0..S−1 from the clean image, with x̂₀
clamped to [-1, 1] (`clip_denoised`), ε re-derived from the clipped x̂₀ and ᾱ_next = 0 after the
last step; then DDIM sampling for i = S−1..0 with ᾱ_prev = 1 after the last; DIRE = |x₀ − recon|
in [-1, 1] units (range [0, 2]). 2·`steps` UNet evaluations per image. ᾱ is the model scheduler's
`alphas_cumprod` (diffusers computes it in float32; guided-diffusion in float64, a ~1e-6 relative
difference); the DDIM coefficients are then computed in float64 and the update in float32.

Preprocessing (§5.2, guided-diffusion's `center_crop_arr`): RGB PIL; while the shorter side is
≥ 2·img_size halve both sides (integer division) with BOX; resize so the shorter side is img_size
(BICUBIC, sizes round(side·img_size/min side)); center-crop img_size²; /127.5 − 1.

Encodings: `encoding="faithful"` (default) is what the code writes, uint8 = trunc(clamp(DIRE·255/2,
0, 255)); stored losslessly, never re-encoded with the source image's codec. The released maps
followed the source extension (JPEG for real images, PNG for fakes), and the released classifiers
largely learned that codec difference (DIRE issues #11, #30, #41; methods.md §5.5).
`encoding="clean"` keeps DIRE as a float in `storage_dtype`.

Model. The paper uses OpenAI's ADM (guided-diffusion) unconditional 256×256 models,
`256x256_diffusion_uncond.pt` (ImageNet) or `lsun_bedroom.pt` (LSUN-Bedroom), learn_sigma=True,
run in fp16. diffusers hosts no ADM checkpoint, so the runnable default is the pixel-space
`google/ddpm-bedroom-256` UNet2DModel (Ho et al.'s DDPM, same linear β schedule; a DEVIATION: a
different, smaller network than the paper's). To use ADM weights, convert them once (offline):
1. Build `UNet2DModel(sample_size=256, in_channels=3, out_channels=6, layers_per_block=2,
   block_out_channels=(256, 256, 512, 512, 1024, 1024), attention_head_dim=64,
   down_block_types=3×"ResnetDownsampleBlock2D" + 3×"AttnDownBlock2D", up_block_types=
   3×"AttnUpBlock2D" + 3×"ResnetUpsampleBlock2D", downsample_type="resnet",
   upsample_type="resnet", resnet_time_scale_shift="scale_shift")` (552.8 M parameters):
   ADM's flags (num_channels 256, channel_mult 1,1,2,2,4,4, attention at 32,16,8, num_head_channels
   64, resblock_updown, use_scale_shift_norm, learn_sigma → 6 outputs). Defaults
   `flip_sin_to_cos=True, freq_shift=0` match ADM's [cos, sin] timestep embedding.
2. Map the state dict as diffusers' `scripts/convert_consistency_to_diffusers.py`
   (`con_pt_to_diffuser`) does for its LSUN-256 ADM-style UNet (num_class_embeds=None). One
   change: guided-diffusion's attention is `QKVAttentionLegacy`, whose fused qkv rows are grouped
   per head ([q,k,v] of head 0, then head 1, …), so split `qkv.weight` as
   `w.reshape(heads, 3, 64, C)` → q, k, v = `w[:, j].reshape(C, C)` (and the bias alike), not
   `chunk(3)` (the script's split, which we take to fit the consistency models' flash-attention
   order). Untested here: check ε on one image against guided-diffusion before use.
3. `save_pretrained(folder)` the UNet and save `DDPMScheduler(num_train_timesteps=1000,
   beta_start=1e-4, beta_end=0.02, beta_schedule="linear")` to the same folder (layout "root"),
   then set `model = "<folder>"` and, on a GPU, `dtype = "float16"` as the original.
The extractor uses the first 3 output channels as ε, so 6-channel (learned-σ) UNets work as is.

`dtype` defaults to float32 (safe on CPU); the original runs the UNet in fp16 on GPU: set
`dtype = "float16"` there. Deterministic (no random draws; `seeds` are unused). Stored bytes per
image at the defaults: 3×256×256 uint8 = 196,608 B faithful; 393,216 B clean in float16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from aigi.core.configtools import Invalid, check
from aigi.features._ddim import check_map_config, map_columns
from aigi.features.base import (
    FeatureExtractor,
    check_batch,
    check_common,
    image_batch,
    resolve_torch_device,
)

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class DireConfig:
    """`[features.dire]`. `layout`: "root" (google/ddpm-* repos) or "pipeline" (unet/, scheduler/)."""

    model: str = "google/ddpm-bedroom-256"
    revision: str = ""
    layout: Literal["root", "pipeline"] = "root"
    steps: int = 20
    clip_denoised: bool = True
    encoding: Literal["faithful", "clean"] = "faithful"
    img_size: int = 256
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    storage_dtype: Literal["float32", "float16"] = "float16"
    batch_size: int = 8
    device: str = "auto"

    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("batch_size", "device")

    def __post_init__(self) -> None:
        check_common(self)
        check_map_config(self)
        check(self.steps > 0, "steps", f"must be > 0, got {self.steps}")
        check(isinstance(self.clip_denoised, bool), "clip_denoised", f"must be true or false, got {self.clip_denoised!r}")


class Dire(FeatureExtractor):
    name = "dire"
    version = 1
    Config = DireConfig

    def __init__(self, config: DireConfig) -> None:
        super().__init__(config)
        self._models: dict[str, Any] | None = None
        self._revision = ""

    def columns(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return map_columns("dire", self.config)

    def preprocessing(self) -> dict[str, Any]:
        s = self.config.img_size
        return {
            "halve": f"PIL BOX while min side >= {2 * s}",
            "resize_short_side": s,
            "filter": "PIL bicubic",
            "crop": [s, s],
            "aspect": "center crop",
            "range": [-1, 1],
        }

    def preprocess(self, image: Image.Image, row: dict[str, Any]) -> np.ndarray:
        from PIL import Image

        s = self.config.img_size
        im = image.convert("RGB")
        # BOX halving first, as guided-diffusion, for a better downsample than bicubic alone.
        while min(im.size) >= 2 * s:
            im = im.resize(tuple(v // 2 for v in im.size), resample=Image.Resampling.BOX)
        scale = s / min(im.size)
        im = im.resize(tuple(round(v * scale) for v in im.size), resample=Image.Resampling.BICUBIC)
        arr = np.asarray(im)
        top, left = (arr.shape[0] - s) // 2, (arr.shape[1] - s) // 2
        arr = arr[top : top + s, left : left + s]
        return (arr.astype(np.float32) / 127.5 - 1).transpose(2, 0, 1).copy()

    def load(self, device: str) -> None:
        from aigi.features._ddim import load_pixel_unet, respaced_timesteps
        from aigi.manifests.revision import resolve_revision

        cfg = self.config
        dev = resolve_torch_device(device)
        unet, abar = load_pixel_unet(
            cfg.model, cfg.revision, cfg.layout, cfg.dtype, dev, cfg.img_size, scheduler=True
        )
        assert abar is not None
        try:
            ts = respaced_timesteps(len(abar), cfg.steps)
        except ValueError as e:
            raise Invalid("steps", f"{e} (the model's num_train_timesteps)") from None
        self._models = {"unet": unet, "device": dev, "timesteps": ts, "abar": [abar[t] for t in ts]}
        self._revision = resolve_revision(cfg.model, cfg.revision)

    def model_revision(self) -> str:
        return self._revision

    def compute(self, batch: np.ndarray, rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, np.ndarray]:
        import torch

        if self._models is None:
            raise RuntimeError("Dire.compute called before load(device)")
        check_batch(self.name, batch, rows, seeds)
        (shape, dtype), = self.columns().values()
        bs = self.config.batch_size
        with torch.inference_mode():
            parts = [self._chunk(batch[i : i + bs]) for i in range(0, len(batch), bs)]
        if not parts:
            return {"dire": np.zeros((0, *shape), dtype=dtype)}
        return {"dire": np.concatenate(parts).astype(dtype, copy=False)}

    def _chunk(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        from aigi.features._ddim import ddim_step

        m = self._models
        assert m is not None
        unet, ts, abar = m["unet"], m["timesteps"], m["abar"]
        clip = self.config.clip_denoised
        x0 = image_batch(pixels, m["device"], torch.float32)

        def eps(x: torch.Tensor, t: int) -> torch.Tensor:
            # Model in its dtype, DDIM arithmetic in float32 as guided-diffusion; ε = first 3 channels.
            return unet(x.to(unet.dtype), t).sample[:, :3].float()

        n = len(ts)
        x = x0
        for i in range(n):
            x = ddim_step(x, eps(x, ts[i]), abar[i], abar[i + 1] if i + 1 < n else 0.0, clip)
        for i in reversed(range(n)):
            x = ddim_step(x, eps(x, ts[i]), abar[i], abar[i - 1] if i > 0 else 1.0, clip)
        dire = (x0 - x).abs()
        if self.config.encoding == "faithful":
            dire = (dire * 255.0 / 2.0).clamp(0, 255).to(torch.uint8)
        return dire.cpu().numpy()

    @classmethod
    def tiny(cls, folder: Path) -> DireConfig:
        from aigi.generators.tiny import tiny_pixel_unet

        tiny_pixel_unet(folder, seed=654, sample_size=16, learn_sigma=True)
        return DireConfig(model=str(folder), img_size=16, steps=5, batch_size=4)
