"""LaRE²'s EGRE head (Error-Guided feature REfinement, CVPR 2024; methods.md §1.2) on cached features.

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

Deviations:
- `mode = "cached"` only: the CLIP backbone is FROZEN (features read from the store) and only EGRE
  is trained. The released model fine-tunes the whole CLIP RN50 end to end from images, with
  random 224 crops; that end-to-end mode is not implemented yet. A different, cheaper model.
- The lr schedule steps on val (AUROC by default; `monitor = "acc"`: ACC at 0.5), not on the mean
  AUC over the test sets as released (test leakage, methods.md §1.3 pitfall 3), and the kept
  weights are the best val epoch's (released: best val "searched" ACC, an oracle threshold).
- The released run was stopped by hand; here `patience = 15` epochs without val improvement
  stop it (three lr halvings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.detectors._torch import Recipe, TorchHead, check_recipe_fields


@dataclass(frozen=True)
class EgreConfig:
    layer3: str = "clip_rn50.layer3"
    pooled: str = "clip_rn50.pooled"
    lare: str = "lare.lare"
    mode: Literal["cached"] = "cached"
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
        check(self.mode == "cached", "mode", f"only 'cached' is implemented, got {self.mode!r}")
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


class EgreHead(TorchHead):
    name = "egre"
    version = 1
    Config = EgreConfig

    def inputs(self) -> list[str]:
        return [self.config.layer3, self.config.pooled, self.config.lare]

    @classmethod
    def tiny(cls) -> tuple[EgreConfig, dict[str, tuple[int, ...]]]:
        cfg = EgreConfig(
            heads=2, d_k=4, d_v=4, channel_hidden=8, epochs=15, batch_size=16, lr=3e-3, lr_patience=3,
            patience=6, device="cpu",
        )
        return cfg, {"clip_rn50.layer3": (16, 4, 4), "clip_rn50.pooled": (8,), "lare.lare": (4, 8, 8)}

    def check_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        f3, g, lare = (shapes[c] for c in self.inputs())
        if len(f3) != 3 or len(g) != 1 or len(lare) != 3:
            raise ValueError(f"{self.name}: needs layer3 (C, H, W), pooled (D,) and LaRE (L, h, w); got {f3}, {g}, {lare}")

    def build(self, shapes: dict[str, tuple[int, ...]], for_training: bool) -> Any:
        f3, g, lare = (shapes[c] for c in self.inputs())
        return egre_module(f3[0], (f3[1], f3[2]), g[0], lare[0], self.config)

    def prepare(self, batch: dict[str, np.ndarray], device: Any, rng: np.random.Generator | None) -> tuple:
        import torch

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
