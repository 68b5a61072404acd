"""CLIP RN50 image features for LaRE²'s EGRE head: the layer3 map and the attention-pooled vector.

LaRE² (CVPR 2024, methods.md §1.2) classifies an image with OpenAI CLIP RN50 whose visual forward
is patched to return two tensors, which are this extractor's two columns:
- "layer3": the layer3 feature map F3, (1024, 14, 14) for RN50 at 224²; EGRE's spatial and channel
  refinement run on it, guided by the image's LaRE map;
- "pooled": the attention-pool output g, (1024,); it goes straight into the 3072→2 head.

Weights: OpenAI CLIP RN50 in open_clip format (`timm/resnet50_clip.openai`: open_clip_config.json
+ open_clip_model.safetensors; the same ModifiedResNet and weights as `clip.load("RN50")`). `model`
is a hub id (resolved through the Hugging Face cache, so offline with HF_HUB_OFFLINE=1 once
cached) or a local folder with the same two files; both are loaded by open_clip's `local-dir:`
path. Only the visual tower is kept. fp32 by default, as the authors (`jit=False` gives fp32).

Preprocessing is the released val/test path, with no resize: the RGB uint8 image is padded to at
least image_size×image_size with reflect-101 borders (albumentations `PadIfNeeded` 1.x defaults:
top = (S−h)//2, bottom = the rest, same for left/right), center-cropped to S×S (y0 = (h−S)//2,
x0 = (w−S)//2), scaled by 1/255 and normalized with the ImageNet mean/std (not CLIP's own
statistics; `normalization = "clip"` switches to them). Checked bit-exact against albumentations
1.3.1 + OpenCV 4.11 (`PadIfNeeded(S, S)` + `CenterCrop(S, S)`) for sizes from 1 px to 640 px,
including pads wider than the image. albumentations ≥ 2.0 changed PadIfNeeded's default border to
constant zeros; which version the authors ran is not recorded, so `pad_mode = "zeros"` exists.

Deviations and caveats:
- Frozen backbone. The original fine-tunes the whole CLIP end to end together with EGRE; cached
  features mean a frozen, pretrained RN50 and only the EGRE head trained on top. This is a
  different (cheaper, likely weaker) model than the released one.
- Field of view. LaRE is computed on a 256² squash of the whole image, while these features come
  from a 224 crop of the image at native resolution, so for images much larger than 256 px the two
  cover different regions (methods.md §1.2, §1.3 pitfall 7). Kept as released.
- Decoding: the original reads with OpenCV (BGR→RGB); here the pipeline's PIL image is used, so
  JPEG decoding may differ by a few levels and EXIF orientation follows the pipeline's decoder.
- Features are deterministic: no randomness, the seeds are unused.

Stored bytes per image (float16 default): layer3 1024·14·14·2 = 401,408 B + pooled 2,048 B =
403,456 B (≈394 KiB; double for float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from aigi.core.configtools import check
from aigi.features.base import (
    FeatureExtractor,
    check_batch,
    check_common,
    image_batch,
    resolve_torch_device,
)

if TYPE_CHECKING:
    from PIL import Image

#: (mean, std) per channel, RGB, on [0, 1] pixels.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # as released
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
CONFIG_NAME = "open_clip_config.json"
#: Weight files open_clip's hub and local-dir loaders look for, in their order of preference.
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
LAYER3_STRIDE = 16
RESNET_STRIDE = 32  # the attention pool's grid is image_size / 32 and fixed by its weights


@dataclass(frozen=True)
class ClipRn50Config:
    """`[features.clip_rn50]`. The shape keys must match the model; load() checks them."""

    model: str = "timm/resnet50_clip.openai"
    revision: str = ""
    image_size: int = 224
    layer3_channels: int = 1024
    embed_dim: int = 1024
    pad_mode: Literal["reflect101", "zeros"] = "reflect101"
    normalization: Literal["imagenet", "clip"] = "imagenet"
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    storage_dtype: Literal["float16", "float32"] = "float16"
    batch_size: int = 64
    device: str = "auto"

    NOT_FINGERPRINTED: ClassVar[tuple[str, ...]] = ("batch_size", "device")

    def __post_init__(self) -> None:
        check_common(self)
        check(
            not self.model.startswith(("hf-hub:", "local-dir:")),
            "model",
            f"give the hub id or folder without open_clip's schema prefix, got {self.model!r}",
        )
        check(
            self.image_size > 0 and self.image_size % RESNET_STRIDE == 0,
            "image_size",
            f"must be a positive multiple of {RESNET_STRIDE}, got {self.image_size}",
        )
        check(self.layer3_channels > 0, "layer3_channels", f"must be > 0, got {self.layer3_channels}")
        check(self.embed_dim > 0, "embed_dim", f"must be > 0, got {self.embed_dim}")
        check(self.pad_mode in ("reflect101", "zeros"), "pad_mode", f"must be reflect101 or zeros, got {self.pad_mode!r}")
        check(self.normalization in NORMALIZATIONS, "normalization", f"must be imagenet or clip, got {self.normalization!r}")


class ClipRn50(FeatureExtractor):
    name = "clip_rn50"
    version = 1
    Config = ClipRn50Config

    def __init__(self, config: ClipRn50Config) -> None:
        super().__init__(config)
        self._visual: Any = None  # open_clip ModifiedResNet after load; None keeps this picklable
        self._device: Any = None
        self._dtype: Any = None
        self._revision = ""

    def columns(self) -> dict[str, tuple[tuple[int, ...], str]]:
        cfg = self.config
        side = cfg.image_size // LAYER3_STRIDE
        return {
            "layer3": ((cfg.layer3_channels, side, side), cfg.storage_dtype),
            "pooled": ((cfg.embed_dim,), cfg.storage_dtype),
        }

    def preprocessing(self) -> dict[str, Any]:
        s = self.config.image_size
        mean, std = NORMALIZATIONS[self.config.normalization]
        return {
            "input": "RGB uint8",
            "resize": None,
            "pad_if_needed": [s, s],
            "pad_mode": self.config.pad_mode,
            "pad_split": "top=(S-h)//2 bottom=rest, left=(S-w)//2 right=rest",
            "crop": "center",
            "crop_size": [s, s],
            "crop_offset": "y0=(h-S)//2, x0=(w-S)//2",
            "scale": "1/255",
            "normalization": self.config.normalization,
            "mean": list(mean),
            "std": list(std),
            "layout": "CHW",
        }

    def preprocess(self, image: Image.Image, row: dict[str, Any]) -> np.ndarray:
        s = self.config.image_size
        u8 = np.asarray(image.convert("RGB"), dtype=np.uint8)
        h, w = u8.shape[:2]
        ph, pw = max(s - h, 0), max(s - w, 0)
        if ph or pw:
            # numpy's "reflect" is OpenCV's BORDER_REFLECT_101 (edge not repeated), also for pads
            # wider than the image, where both keep reflecting with period 2·(n−1).
            mode = "reflect" if self.config.pad_mode == "reflect101" else "constant"
            u8 = np.pad(u8, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode=mode)
            h, w = u8.shape[:2]
        y0, x0 = (h - s) // 2, (w - s) // 2
        crop = u8[y0 : y0 + s, x0 : x0 + s].astype(np.float32) / np.float32(255.0)
        mean, std = (np.asarray(v, dtype=np.float32) for v in NORMALIZATIONS[self.config.normalization])
        return np.ascontiguousarray(((crop - mean) / std).transpose(2, 0, 1))

    def load(self, device: str) -> None:
        try:
            import open_clip
        except ImportError as e:
            raise ImportError(
                "clip_rn50 needs open_clip: pip install open_clip_torch"
            ) from e
        import torch
        from open_clip.modified_resnet import ModifiedResNet

        from aigi.manifests.revision import resolve_revision

        cfg = self.config
        folder = _open_clip_folder(cfg.model, cfg.revision)
        # require_pretrained: open_clip would otherwise return random weights when none are found.
        model = open_clip.create_model(
            f"local-dir:{folder}", precision="fp32", device="cpu", require_pretrained=True
        )
        visual = model.visual
        del model  # the text tower is not needed
        check(
            isinstance(visual, ModifiedResNet),
            "model",
            f"{cfg.model} has a {type(visual).__name__} vision tower, not a CLIP ModifiedResNet",
        )
        check(
            visual.image_size == cfg.image_size,
            "image_size",
            f"must be the model's input size {visual.image_size}, got {cfg.image_size}",
        )
        c3 = visual.layer3[-1].bn3.num_features
        check(c3 == cfg.layer3_channels, "layer3_channels", f"the model's layer3 has {c3} channels, config says {cfg.layer3_channels}")
        d = visual.attnpool.c_proj.out_features
        check(d == cfg.embed_dim, "embed_dim", f"the model's attention pool gives {d}, config says {cfg.embed_dim}")
        self._device = resolve_torch_device(device)
        self._dtype = getattr(torch, cfg.dtype)
        self._visual = visual.to(self._device, self._dtype).eval().requires_grad_(False)
        self._visual.to(memory_format=torch.channels_last)
        self._revision = resolve_revision(cfg.model, cfg.revision)

    def model_revision(self) -> str:
        return self._revision

    def compute(self, batch: np.ndarray, rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, np.ndarray]:
        import torch

        if self._visual is None:
            raise RuntimeError("ClipRn50.compute called before load(device)")
        check_batch(self.name, batch, rows, seeds)
        s = self.config.image_size
        if len(batch) and tuple(batch.shape[1:]) != (3, s, s):
            raise ValueError(f"{self.name}.compute: expected images of shape (3, {s}, {s}), got {tuple(batch.shape[1:])}")
        cols = self.columns()
        bs = self.config.batch_size
        parts: dict[str, list[np.ndarray]] = {c: [] for c in cols}
        with torch.inference_mode():
            for i in range(0, len(batch), bs):
                for c, a in self._chunk(batch[i : i + bs]).items():
                    parts[c].append(a)
        return {
            c: (np.concatenate(parts[c]) if parts[c] else np.zeros((0, *shape), dtype=dt)).astype(dt, copy=False)
            for c, (shape, dt) in cols.items()
        }

    def _chunk(self, pixels: np.ndarray) -> dict[str, np.ndarray]:

        v = self._visual
        x = image_batch(pixels, self._device, self._dtype)
        # The authors' patched forward: the usual ModifiedResNet pass, also returning layer3.
        f3 = v.layer3(v.layer2(v.layer1(v.stem(x))))
        g = v.attnpool(v.layer4(f3))
        return {"layer3": f3.float().cpu().numpy(), "pooled": g.float().cpu().numpy()}

    @classmethod
    def tiny(cls, folder: Path) -> ClipRn50Config:
        """A random open_clip CLIP with a (1,1,1,1)-layer, width-8 ModifiedResNet at 64²."""
        import json

        import open_clip
        import torch
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model_cfg = {
            "embed_dim": 32,
            "quick_gelu": True,
            "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
            "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
        }
        torch.manual_seed(0)
        model = open_clip.model.CLIP(**model_cfg)
        # open_clip zero-inits each block's last BN weight and leaves BN statistics at (0, 1): the
        # residual branches would add nothing. Random BN parameters make every path count.
        for m in model.visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0.0, 0.1)
                    m.running_mean.normal_(0.0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        (folder / CONFIG_NAME).write_text(json.dumps({"model_cfg": model_cfg}, indent=2))
        state = {k: t.contiguous() for k, t in model.state_dict().items()}
        save_file(state, str(folder / WEIGHT_NAMES[0]))
        return ClipRn50Config(model=str(folder), image_size=64, layer3_channels=128, embed_dim=32, batch_size=4)


def _open_clip_folder(model: str, revision: str) -> Path:
    """The folder holding `model`'s open_clip config and weights: a local folder as is, a hub id as
    its snapshot in the Hugging Face cache (downloads only the config and one weights file, and
    only when not offline)."""
    path = Path(model)
    if not path.is_dir():
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(model, CONFIG_NAME, revision=revision or None)).parent
        except Exception as e:  # not cached offline, no such repo, not an open_clip repo
            raise FileNotFoundError(
                f"clip_rn50: cannot get {CONFIG_NAME} of {model!r} (revision {revision or 'main'}); "
                "give a hub id of an open_clip repo cached locally or a local folder"
            ) from e
        for name in WEIGHT_NAMES:
            try:
                hf_hub_download(model, name, revision=revision or None)
                break
            except Exception:  # try the next format; none found is reported below
                continue
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"clip_rn50: {model!r} has no {CONFIG_NAME}")
    if not any((path / n).is_file() for n in WEIGHT_NAMES):
        raise FileNotFoundError(f"clip_rn50: {model!r} has none of the weight files {', '.join(WEIGHT_NAMES)}")
    return path
