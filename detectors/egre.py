"""LaRE²'s EGRE head (Error-Guided feature REfinement, CVPR 2024; methods.md §1.2), cached or end to end.

The released model (`CLipClassifierWMapV6`, CLIP RN50) fuses three inputs per image: CLIP's layer3
map F3 (C, H, W) = (1024, 14, 14), its attention-pooled vector g (1024,) — both from the
`clip_rn50` extractor — and the LaRE map (L, h, w) = (4, 32, 32) from `lare`, used raw:
1. Align: A = AdaptiveAvgPool2d(H×W)(LaRE); M = Conv2d(L → heads, 1×1, bias)(A), one map per head.
2. Error-guided spatial refinement (one-query multi-head attention, dropout 0.1):
   tokens X = [mean(F3 tokens); F3 tokens] + P (P learned, (1+HW, C), init randn/√C);
   bias G = [mean(M tokens); M tokens] (1+HW, heads); q = X[:, :1];
   Q, K, V = Linear(C → heads·d_k)(q), (X), Linear(C → heads·d_v)(X) (xavier weights, zero bias);
   S_h = Q_h K_hᵀ / √d_k + G[:, :, h] (added along the keys); A_h = Dropout(softmax(S_h));
   s = LayerNorm(q + Dropout(W_o · concat_h(A_h V_h))) (W_o: heads·d_v → C).
3. Error-guided channel refinement: w = σ(W2 ReLU(W1 GAP(LaRE))) (L → 128 → C, no biases);
   r = GAP(F3) ⊙ w.
4. logits = Linear(D + 2C → 2)([g, s, r]); P(generated) = softmax(logits)[1] = sigmoid(l₁ − l₀).
   The module returns l₁ − l₀, and BCE on it equals the released 2-way cross-entropy exactly.
The unused modules of the released file (`conv_align`, `PoolWithMap`) are not built. Dimensions
(C, H, W, D, L) are read from the data, so other backbones' shapes work.

Released training recipe as defaults: Adam, lr 1e-4, no weight decay, gradient-norm clip 5.0,
batch 48; ReduceLROnPlateau(max, factor 0.5, patience 4 — i.e. acting on the 5th epoch without
improvement, our `lr_patience = 5` —, min_lr 1e-7); cap 9999 epochs.

Modes:
- `mode = "cached"` (default): the CLIP backbone is FROZEN (features read from the store, inputs
  `layer3`, `pooled`, `lare`) and only EGRE is trained. A different, cheaper model than released.
- `mode = "end_to_end"` (the released model): inputs ["image", `lare`]. The CLIP RN50 visual tower
  is loaded as the `clip_rn50` extractor loads it (`clip_model` = hub id or local open_clip folder,
  `clip_revision`; open_clip `local-dir:`, fp32, pretrained weights required) and fine-tuned jointly
  with EGRE: layer3 and the attention-pooled vector are computed on the fly with gradients, in
  train mode (BatchNorm statistics update, as released). One Adam over all parameters at `lr`
  (released: 1e-4 for everything, no separate backbone lr). The text tower is dropped (it gets no
  gradient in the released model either). Pixels: `clip_rn50`'s preprocessing (reflect-101 pad to
  `image_size`, center crop, ImageNet normalization; `pad_mode`, `normalization`), with, in
  training, albumentations' `PadIfNeeded` + `RandomCrop` (`random_crop`: a seeded random
  `image_size` window along each side longer than it, then the same pad). The LaRE map is still
  read from the cache. Saved state: the backbone's fine-tuned weights ("visual.*", BN statistics
  included) and EGRE's ("egre.*") in the safetensors file, the backbone's architecture in the JSON,
  so loading needs neither the checkpoint nor open_clip's weights, only open_clip's code.

Deviations:
- The lr schedule steps on val (AUROC by default; `monitor = "acc"`: ACC at 0.5), not on the mean
  AUC over the test sets as released (test leakage, methods.md §1.3 pitfall 3), and the kept
  weights are the best val epoch's (released: best val "searched" ACC, an oracle threshold).
- The released run was stopped by hand; here `patience = 15` epochs without val improvement
  stop it (three lr halvings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.detectors._torch import Recipe, TorchHead, check_recipe_fields, column_shape
from aigi.detectors.data import IMAGE

if TYPE_CHECKING:
    from aigi.detectors.data import FeatureSet

#: ModifiedResNet's total stride at layer3 and at layer4 (the attention pool's grid).
LAYER3_STRIDE, RESNET_STRIDE = 16, 32


@dataclass(frozen=True)
class EgreConfig:
    layer3: str = "clip_rn50.layer3"
    pooled: str = "clip_rn50.pooled"
    lare: str = "lare.lare"
    mode: Literal["cached", "end_to_end"] = "cached"
    # end_to_end only: the CLIP backbone and its input pixels (as `[features.clip_rn50]`)
    clip_model: str = "timm/resnet50_clip.openai"
    clip_revision: str = ""
    image_size: int = 224
    pad_mode: Literal["reflect101", "zeros"] = "reflect101"
    normalization: Literal["imagenet", "clip"] = "imagenet"
    random_crop: bool = True
    heads: int = 8
    d_k: int = 64
    d_v: int = 64
    channel_hidden: int = 128
    dropout: float = 0.1
    epochs: int = 9999
    batch_size: int = 48
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    monitor: Literal["auroc", "acc"] = "auroc"
    lr_patience: int = 5
    lr_factor: float = 0.5
    min_lr: float = 1e-7
    patience: int = 15
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("layer3", "pooled", "lare"):
            ref = getattr(self, key)
            check(ref.count(".") == 1 and all(ref.split(".")), key, f"must be '<feature>.<column>', got {ref!r}")
        check(self.mode in ("cached", "end_to_end"), "mode", f"must be cached or end_to_end, got {self.mode!r}")
        check(bool(self.clip_model), "clip_model", "must name a hub id or a local open_clip folder")
        check(
            not self.clip_model.startswith(("hf-hub:", "local-dir:")),
            "clip_model",
            f"give the hub id or folder without open_clip's schema prefix, got {self.clip_model!r}",
        )
        check(
            self.image_size > 0 and self.image_size % RESNET_STRIDE == 0,
            "image_size",
            f"must be a positive multiple of {RESNET_STRIDE}, got {self.image_size}",
        )
        check(self.pad_mode in ("reflect101", "zeros"), "pad_mode", f"must be reflect101 or zeros, got {self.pad_mode!r}")
        check(self.normalization in ("imagenet", "clip"), "normalization", f"must be imagenet or clip, got {self.normalization!r}")
        for key in ("heads", "d_k", "d_v", "channel_hidden"):
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        check(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0: off), got {self.grad_clip}")
        check(0 < self.lr_factor < 1, "lr_factor", f"must be in (0, 1), got {self.lr_factor}")
        check(self.min_lr >= 0, "min_lr", f"must be >= 0, got {self.min_lr}")
        check_recipe_fields(self, check)


def egre_module(c: int, hw: tuple[int, int], d: int, lare_channels: int, cfg: EgreConfig) -> Any:
    """The EGRE head for layer3 (c, *hw), pooled (d,) and LaRE (lare_channels, ., .) inputs."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Egre(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            h, dk, dv = cfg.heads, cfg.d_k, cfg.d_v
            self.hw = hw
            self.align = nn.Conv2d(lare_channels, h, 1)
            self.pos = nn.Parameter(torch.randn(1 + hw[0] * hw[1], c) / math.sqrt(c))
            self.q, self.k = nn.Linear(c, h * dk), nn.Linear(c, h * dk)
            self.v, self.o = nn.Linear(c, h * dv), nn.Linear(h * dv, c)
            for lin in (self.q, self.k, self.v, self.o):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
            self.attn_drop, self.out_drop = nn.Dropout(cfg.dropout), nn.Dropout(cfg.dropout)
            self.norm = nn.LayerNorm(c)
            self.w1 = nn.Linear(lare_channels, cfg.channel_hidden, bias=False)
            self.w2 = nn.Linear(cfg.channel_hidden, c, bias=False)
            self.fc = nn.Linear(d + 2 * c, 2)

        def forward(self, f3: Any, g: Any, lare: Any) -> Any:
            b = len(f3)
            h, dk, dv = cfg.heads, cfg.d_k, cfg.d_v
            tokens = f3.flatten(2).transpose(1, 2)  # (B, HW, C)
            x = torch.cat([tokens.mean(1, keepdim=True), tokens], 1) + self.pos  # (B, N, C)
            m = self.align(F.adaptive_avg_pool2d(lare, self.hw)).flatten(2).transpose(1, 2)  # (B, HW, h)
            bias = torch.cat([m.mean(1, keepdim=True), m], 1)  # (B, N, h)
            q = x[:, :1]
            qh = self.q(q).view(b, 1, h, dk).transpose(1, 2)  # (B, h, 1, dk)
            kh = self.k(x).view(b, -1, h, dk).transpose(1, 2)  # (B, h, N, dk)
            vh = self.v(x).view(b, -1, h, dv).transpose(1, 2)  # (B, h, N, dv)
            att = qh @ kh.transpose(-1, -2) / math.sqrt(dk) + bias.transpose(1, 2).unsqueeze(2)
            att = self.attn_drop(att.softmax(-1))
            out = (att @ vh).transpose(1, 2).reshape(b, 1, h * dv)
            s = self.norm(q + self.out_drop(self.o(out))).squeeze(1)  # (B, C)
            w = torch.sigmoid(self.w2(F.relu(self.w1(lare.mean((2, 3))))))
            r = f3.mean((2, 3)) * w
            logits = self.fc(torch.cat([g, s, r], 1))
            return logits[:, 1] - logits[:, 0]

    return Egre()


def end_to_end_module(visual: Any, lare_channels: int, cfg: EgreConfig) -> Any:
    """CLIP's ModifiedResNet `visual` and EGRE as one module: (pixels, LaRE) -> logit, with the
    authors' patched forward (the usual pass, also returning layer3)."""
    from torch import nn

    c3 = visual.layer3[-1].bn3.num_features
    side = visual.image_size // LAYER3_STRIDE
    d = visual.attnpool.c_proj.out_features

    class EndToEnd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = visual
            self.egre = egre_module(c3, (side, side), d, lare_channels, cfg)

        def forward(self, x: Any, lare: Any) -> Any:
            v = self.visual
            f3 = v.layer3(v.layer2(v.layer1(v.stem(x))))
            g = v.attnpool(v.layer4(f3))
            return self.egre(f3, g, lare)

    return EndToEnd()


def load_clip_visual(model: str, revision: str, image_size: int) -> tuple[Any, str]:
    """The pretrained, trainable fp32 visual tower of an open_clip CLIP ModifiedResNet, loaded as
    `aigi.features.clip_rn50` loads it, and the checkpoint's resolved revision."""
    import open_clip
    from open_clip.modified_resnet import ModifiedResNet

    from aigi.features.clip_rn50 import _open_clip_folder
    from aigi.manifests.revision import resolve_revision

    folder = _open_clip_folder(model, revision)
    clip = open_clip.create_model(f"local-dir:{folder}", precision="fp32", device="cpu", require_pretrained=True)
    visual = clip.visual
    del clip  # the text tower is not needed
    check(
        isinstance(visual, ModifiedResNet),
        "clip_model",
        f"{model} has a {type(visual).__name__} vision tower, not a CLIP ModifiedResNet",
    )
    check(visual.image_size == image_size, "image_size", f"must be the model's input size {visual.image_size}, got {image_size}")
    return visual.float().train().requires_grad_(True), resolve_revision(model, revision)


def visual_arch(visual: Any) -> dict[str, Any]:
    """ModifiedResNet's constructor arguments, read from a built one (JSON, saved with the state)."""
    return {
        "layers": [len(visual.layer1), len(visual.layer2), len(visual.layer3), len(visual.layer4)],
        "output_dim": int(visual.attnpool.c_proj.out_features),
        "heads": int(visual.attnpool.num_heads),
        "image_size": int(visual.image_size),
        "width": int(visual.conv1.out_channels * 2),
    }


class EgreHead(TorchHead):
    name = "egre"
    version = 1
    Config = EgreConfig
    MODEL_KEYS = ("clip_model",)

    def __init__(self, config: EgreConfig) -> None:
        super().__init__(config)
        self.backbone_: dict[str, Any] = {}  # end_to_end: the backbone's architecture and origin
        self._preprocessor: Any = None

    @property
    def end_to_end(self) -> bool:
        return self.config.mode == "end_to_end"

    def inputs(self) -> list[str]:
        if self.end_to_end:
            return [IMAGE, self.config.lare]
        return [self.config.layer3, self.config.pooled, self.config.lare]

    def features(self) -> list[str]:
        """The feature extractors needed; the images themselves ("image") are not one."""
        return sorted({i.split(".", 1)[0] for i in self.inputs() if i != IMAGE})

    @classmethod
    def tiny(cls) -> tuple[EgreConfig, dict[str, tuple[int, ...]]]:
        cfg = EgreConfig(
            heads=2, d_k=4, d_v=4, channel_hidden=8, epochs=15, batch_size=16, lr=3e-3, lr_patience=3,
            patience=6, device="cpu",
        )
        return cfg, {"clip_rn50.layer3": (16, 4, 4), "clip_rn50.pooled": (8,), "lare.lare": (4, 8, 8)}

    def _shapes(self, data: FeatureSet) -> dict[str, tuple[int, ...]]:
        if not self.end_to_end:
            return super()._shapes(data)
        data._check(IMAGE)
        s = self.config.image_size
        shapes = {IMAGE: (3, s, s), self.config.lare: column_shape(data, self.config.lare)}
        self.check_shapes(shapes)
        return shapes

    def check_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        if self.end_to_end:
            lare = shapes[self.config.lare]
            if len(lare) != 3:
                raise ValueError(f"{self.name}: needs LaRE maps (L, h, w), got {lare}")
            return
        f3, g, lare = (shapes[c] for c in self.inputs())
        if len(f3) != 3 or len(g) != 1 or len(lare) != 3:
            raise ValueError(f"{self.name}: needs layer3 (C, H, W), pooled (D,) and LaRE (L, h, w); got {f3}, {g}, {lare}")

    def build(self, shapes: dict[str, tuple[int, ...]], for_training: bool) -> Any:
        if self.end_to_end:
            cfg = self.config
            if for_training:
                visual, revision = load_clip_visual(cfg.clip_model, cfg.clip_revision, cfg.image_size)
                self.backbone_ = {"arch": visual_arch(visual), "clip_model": cfg.clip_model, "clip_revision": revision}
            else:  # weights come from the saved state
                from open_clip.modified_resnet import ModifiedResNet

                visual = ModifiedResNet(**self.backbone_["arch"])
            return end_to_end_module(visual, shapes[cfg.lare][0], cfg)
        f3, g, lare = (shapes[c] for c in self.inputs())
        return egre_module(f3[0], (f3[1], f3[2]), g[0], lare[0], self.config)

    def init_values(self) -> dict[str, Any]:
        return {"backbone": self.backbone_} if self.end_to_end else {}

    def set_state(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        self.backbone_ = dict(values.get("backbone", {}))
        super().set_state(arrays, values)
        self.training_.pop("backbone", None)

    def place(self, module: Any, device: Any) -> Any:
        import torch

        module = module.to(device)
        if self.end_to_end and device.type == "cuda":
            module.visual.to(memory_format=torch.channels_last)
        return module

    def pixels(self, image: Any, rng: np.random.Generator | None) -> np.ndarray:
        """(3, S, S) float32 input of one image (PIL or uint8 (H, W, 3)): in training (`rng`) a
        random S-window along each side longer than S (albumentations RandomCrop after
        PadIfNeeded), then `clip_rn50`'s preprocessing (pad to S, center crop, normalize)."""
        from PIL import Image

        from aigi.features.clip_rn50 import ClipRn50, ClipRn50Config

        cfg = self.config
        if self._preprocessor is None:
            self._preprocessor = ClipRn50(ClipRn50Config(
                model=cfg.clip_model, image_size=cfg.image_size, pad_mode=cfg.pad_mode,
                normalization=cfg.normalization, device="cpu",
            ))
        if rng is not None and cfg.random_crop:
            u8 = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.uint8)
            s, (h, w) = cfg.image_size, u8.shape[:2]
            y0 = int(rng.integers(0, h - s + 1)) if h > s else 0
            x0 = int(rng.integers(0, w - s + 1)) if w > s else 0
            image = u8[y0 : y0 + s, x0 : x0 + s]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
        return self._preprocessor.preprocess(image, {})

    def prepare(self, batch: dict[str, np.ndarray], device: Any, rng: np.random.Generator | None) -> tuple:
        import torch

        if self.end_to_end:
            x = torch.from_numpy(np.stack([self.pixels(im, rng) for im in batch[IMAGE]])).to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            lare = torch.from_numpy(np.ascontiguousarray(batch[self.config.lare])).to(device, non_blocking=True).float()
            return x, lare
        return tuple(
            torch.from_numpy(np.ascontiguousarray(batch[c])).to(device, non_blocking=True).float() for c in self.inputs()
        )

    def recipe(self) -> Recipe:
        c = self.config
        return Recipe(
            epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, seed=c.seed, optimizer=c.optimizer,
            weight_decay=c.weight_decay, grad_clip=c.grad_clip, monitor=c.monitor, lr_patience=c.lr_patience,
            lr_factor=c.lr_factor, min_lr=c.min_lr, lr_drops=-1, patience=c.patience, dtype=c.dtype,
        )
