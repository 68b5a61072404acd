"""Anomaly Score: complexity and vulnerability of DINOv2 features (Hwang et al., CVPR 2024, arXiv 2312.10634).

Per image (methods.md §4), with f = DINOv2 ViT-S/14's layer-normed CLS token (transformers'
`Dinov2Model.pooler_output`, the HF port of the released `torch.hub` `dinov2_vits14`) of the image
in [0, 1], ImageNet-normalized INSIDE f (perturbed images are clamped to [0, 1] before it):
- complexity C (§4.2): one gaussian direction d, unit L2 norm over C×H×W; the 11 points
  x_k = clamp(x + eps·k·d, 0, 1), k = 0..10 (eps 0.01), through f in one batched forward; the 10
  displacements f_{k+1} − f_k normalized to unit length; C = the mean of the 9 turning angles
  arccos(cos) between consecutive displacements (radians).
- vulnerability V (§4.3): 10 L∞ PGD steps (eps 8/255, step 2/255) from x + U(−1e-6, 1e-6)
  (clamped to [0, 1]) on the feature MSE to f0 = f(x), each step projected onto the eps-ball and
  [0, 1]; V = ‖f0 − f(x_adv)‖₂.
- AS-i = V / C (§4.4), the image-level score. The model-level AS (2-D KS statistic between the
  (C, V) of real and of generated images) is `model_level_as` below, computed from stored columns.
Defaults are the released code's (`mcml-official/Anomaly_Score`).

Choices and deviations, and why:
- `vulnerability = "ascent"` (default) steps along sign(∇L) and so maximizes the feature MSE: the
  paper's intent, an adversarial attack measuring how far features can be pushed. The released
  code steps along sign(∇(−L)), i.e. descends the MSE and only measures drift under sign noise
  near x; `vulnerability = "descent"` reproduces it (methods.md §4.3 sign caveat).
- The MSE is computed per image (the sum over images of each image's mean over features) instead
  of one mean over the batch: each image's gradient is then its own, so images in a batch do not
  interact; sign() makes the scale (1 vs 1/B) irrelevant, so the step is the released one.
- The cosine is clamped to [−1, 1] before arccos (the original can return NaN from rounding). A
  zero displacement (features that do not move, e.g. in float16) still gives NaN, as the original.
- `directions` > 1 averages C over several directions (methods.md §4.5.6); 1 is the released code.
- Preprocessing: the authors do not specify it (their model takes B×3×224×224 in [0, 1]); ours is
  the shorter side resized to `img_size` (PIL bicubic) and a center crop of `img_size`.
- Randomness: the original is unseeded. Here each image has its own CPU `torch.Generator` seeded
  with its seed, drawn in this order: the complexity direction(s) `randn((directions, C, H, W))`,
  then the start noise `empty(C, H, W).uniform_(-1e-6, 1e-6)`.
- Scalars are stored as float32 by default (float16 would quantize C and V and create ties in the
  rank-based KS test).
- In float16/bfloat16 the 0.01-L2 perturbations are mostly below the input's resolution; use
  float32 (the default) for meaningful values.

Cost per image: 11 forwards (C) + 1 + 10 (forward + backward) + 1 forwards (V) of ViT-S/14 at 224².
Stored bytes per image: 3 × 4 = 12 B (complexity, vulnerability, as_i) in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.features._imaging import IMAGENET_MEAN, IMAGENET_STD, center_crop, resize_shorter
from aigi.features._ks2d import ks2d_pvalue, ks2d_statistic
from aigi.features.base import (
    FeatureExtractor,
    check_batch,
    check_common,
    resolve_torch_device,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

COLUMNS = ("complexity", "vulnerability", "as_i")


@dataclass(frozen=True)
class AnomalyConfig:
    """`[features.anomaly]`."""

    model: str = "facebook/dinov2-small"
    revision: str = ""
    img_size: int = 224
    complexity_steps: int = 10  # 11 points, 10 displacements, 9 angles
    complexity_eps: float = 0.01
    directions: int = 1
    vulnerability: Literal["ascent", "descent"] = "ascent"
    vulnerability_eps: float = 8 / 255
    vulnerability_alpha: float = 2 / 255
    vulnerability_steps: int = 10
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    storage_dtype: Literal["float32", "float16"] = "float32"
    batch_size: int = 8  # the released code's
    device: str = "auto"

    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("batch_size", "device")

    def __post_init__(self) -> None:
        check_common(self)
        check(self.img_size > 0, "img_size", f"must be > 0, got {self.img_size}")
        check(self.complexity_steps >= 2, "complexity_steps", f"must be >= 2 (one turning angle needs 3 points), got {self.complexity_steps}")
        check(self.complexity_eps > 0, "complexity_eps", f"must be > 0, got {self.complexity_eps}")
        check(self.directions >= 1, "directions", f"must be >= 1, got {self.directions}")
        check(self.vulnerability in ("ascent", "descent"), "vulnerability", f"must be ascent or descent, got {self.vulnerability!r}")
        check(0 < self.vulnerability_eps <= 1, "vulnerability_eps", f"must be in (0, 1], got {self.vulnerability_eps}")
        check(self.vulnerability_alpha > 0, "vulnerability_alpha", f"must be > 0, got {self.vulnerability_alpha}")
        check(self.vulnerability_steps >= 1, "vulnerability_steps", f"must be >= 1, got {self.vulnerability_steps}")


class Anomaly(FeatureExtractor):
    name = "anomaly"
    version = 1
    Config = AnomalyConfig

    def __init__(self, config: AnomalyConfig) -> None:
        super().__init__(config)
        self._model: Any = None
        self._device: Any = None
        self._norm: tuple[Any, Any] | None = None
        self._revision = ""

    def columns(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {c: ((), self.config.storage_dtype) for c in COLUMNS}

    def preprocessing(self) -> dict[str, Any]:
        s = self.config.img_size
        return {
            "resize_shorter": s,
            "filter": "PIL bicubic",
            "center_crop": s,
            "range": [0, 1],
            "normalize": "ImageNet mean/std inside the model, after clamping perturbed images",
            "note": "the authors do not specify the preprocessing; this is our choice",
        }

    def preprocess(self, image: Image.Image, row: dict[str, Any]) -> np.ndarray:
        s = self.config.img_size
        u8 = center_crop(np.asarray(resize_shorter(image.convert("RGB"), s)), s)
        x = u8.astype(np.float32) / np.float32(255)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def load(self, device: str) -> None:
        import torch
        from transformers import Dinov2Model

        from aigi.manifests.revision import resolve_revision

        cfg = self.config
        dev = resolve_torch_device(device)
        model = Dinov2Model.from_pretrained(
            cfg.model, revision=cfg.revision or None, dtype=getattr(torch, cfg.dtype)
        )
        patch = model.config.patch_size
        patch = patch if isinstance(patch, int) else patch[0]
        check(cfg.img_size % patch == 0, "img_size", f"must be a multiple of the model's patch size ({patch}), got {cfg.img_size}")
        self._model = model.to(dev).eval().requires_grad_(False)
        self._device = dev
        self._norm = (
            torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1),
        )
        self._revision = resolve_revision(cfg.model, cfg.revision)

    def model_revision(self) -> str:
        return self._revision

    def compute(self, batch: np.ndarray, rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, np.ndarray]:
        if self._model is None:
            raise RuntimeError("Anomaly.compute called before load(device)")
        check_batch(self.name, batch, rows, seeds)
        bs = self.config.batch_size
        cs, vs = [], []
        for i in range(0, len(batch), bs):
            c, v = self._chunk(batch[i : i + bs], seeds[i : i + bs])
            cs.append(c)
            vs.append(v)
        out_dtype = np.dtype(self.config.storage_dtype)
        if not cs:
            return {c: np.zeros((0,), dtype=out_dtype) for c in COLUMNS}
        c = np.concatenate(cs).astype(np.float32)
        v = np.concatenate(vs).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            as_i = v / c
        return {
            "complexity": c.astype(out_dtype, copy=False),
            "vulnerability": v.astype(out_dtype, copy=False),
            "as_i": as_i.astype(out_dtype, copy=False),
        }

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) for x in [0, 1]: normalization inside the model, as the released wrapper."""
        assert self._norm is not None
        mean, std = self._norm
        out = self._model(pixel_values=((x - mean) / std).to(self._model.dtype))
        return out.pooler_output.float()

    def _chunk(self, pixels: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        cfg = self.config
        dev = self._device
        shape = tuple(pixels.shape[1:])
        dirs, starts = [], []
        for seed in seeds:
            # One generator per image: the complexity direction(s), then the PGD start noise.
            g = torch.Generator("cpu").manual_seed(int(seed))
            d = torch.randn((cfg.directions, *shape), generator=g)
            dirs.append(d / torch.linalg.vector_norm(d, dim=(1, 2, 3), keepdim=True))
            starts.append(torch.empty(shape).uniform_(-1e-6, 1e-6, generator=g))
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(dev, torch.float32)
        c = self._complexity(x, torch.stack(dirs).to(dev))
        v = self._vulnerability(x, torch.stack(starts).to(dev))
        return c, v

    def _complexity(self, x: torch.Tensor, dirs: torch.Tensor) -> np.ndarray:
        import torch

        cfg = self.config
        b, n_dir = dirs.shape[:2]
        k = torch.arange(cfg.complexity_steps + 1, device=x.device, dtype=torch.float32)
        # (B, directions, K, C, H, W), as the original: x + eps * (k * d), then clamp.
        steps = k.view(1, 1, -1, 1, 1, 1) * dirs[:, :, None]
        with torch.inference_mode():
            points = (x[:, None, None] + cfg.complexity_eps * steps).clamp(0, 1)
            f = self._features(points.flatten(0, 2)).double()
            f = f.view(b, n_dir, cfg.complexity_steps + 1, -1)
            v = f[:, :, 1:] - f[:, :, :-1]
            v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
            cos = (v[:, :, 1:] * v[:, :, :-1]).sum(dim=-1).clamp(-1, 1)
            return torch.arccos(cos).mean(dim=2).mean(dim=1).cpu().numpy()

    def _vulnerability(self, x: torch.Tensor, start: torch.Tensor) -> np.ndarray:
        import torch

        cfg = self.config
        eps, alpha = cfg.vulnerability_eps, cfg.vulnerability_alpha
        sign = 1.0 if cfg.vulnerability == "ascent" else -1.0
        # Gradients w.r.t. the input even if a caller runs compute under inference_mode:
        # clones made outside it are ordinary tensors that autograd accepts.
        with torch.inference_mode(False):
            x, start = x.clone(), start.clone()
            with torch.no_grad():
                f0 = self._features(x)
                adv = (x + start).clamp(0, 1)
            for _ in range(cfg.vulnerability_steps):
                adv.requires_grad_(True)
                with torch.enable_grad():
                    # Per-image MSE, summed: each image's gradient is its own (see the docstring).
                    loss = (self._features(adv) - f0).square().mean(dim=1).sum()
                    (grad,) = torch.autograd.grad(sign * loss, adv)
                with torch.no_grad():
                    adv = adv + alpha * grad.sign()
                    adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)
            with torch.no_grad():
                v = torch.linalg.vector_norm(f0 - self._features(adv), dim=1)
        return v.double().cpu().numpy()

    @classmethod
    def tiny(cls, folder: Path) -> AnomalyConfig:
        import torch
        from transformers import Dinov2Config, Dinov2Model

        torch.manual_seed(0)
        config = Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            mlp_ratio=2,
            patch_size=8,
            image_size=32,
        )
        Dinov2Model(config).save_pretrained(folder)
        return AnomalyConfig(model=str(folder), img_size=32, batch_size=4)


def model_level_as(
    real: np.ndarray, generated: np.ndarray, equal_n: bool = True, seed: int = 0
) -> dict[str, Any]:
    """The model-level Anomaly Score: the 2-D KS statistic between (C, V) of real and generated.

    `real` (n, 2) and `generated` (m, 2) hold (complexity, vulnerability) rows; the real set is
    sample 1, as in the released `anomaly_score.py`. The original asserts n == m; with `equal_n`
    the larger set is subsampled (without replacement, numpy `default_rng(seed)`) to the smaller
    one's size; without it the two sizes are used as they are (the statistic allows it).
    Returns {"as": D, "p_value": analytic p (approximate, see `ks2d_pvalue`), "n_real",
    "n_generated"} (the sizes actually used).
    """
    real = np.asarray(real, dtype=np.float64)
    generated = np.asarray(generated, dtype=np.float64)
    for name, a in (("real", real), ("generated", generated)):
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"model_level_as: {name} must have shape (n, 2), got {a.shape}")
        if len(a) == 0:
            raise ValueError(f"model_level_as: {name} is empty")
    if equal_n and len(real) != len(generated):
        rng = np.random.default_rng(seed)
        n = min(len(real), len(generated))
        if len(real) > n:
            real = real[np.sort(rng.choice(len(real), n, replace=False))]
        else:
            generated = generated[np.sort(rng.choice(len(generated), n, replace=False))]
    args = (real[:, 0], real[:, 1], generated[:, 0], generated[:, 1])
    d = ks2d_statistic(*args)
    return {
        "as": d,
        "p_value": ks2d_pvalue(d, *args),
        "n_real": len(real),
        "n_generated": len(generated),
    }
