"""What the gradient-trained heads share: the training loop, scoring, saving, and the ResNet heads.

Not a registry entry (the leading underscore). `TorchHead` is a Detector whose model is a torch
module mapping its input columns to ONE logit per image (P(generated) = sigmoid(logit)); a head
subclass says how to build the module from the input shapes (`build`), how a numpy batch becomes
tensors on the device (`prepare`, where training-time augmentation happens) and which training
recipe its config means (`recipe`). `MapResNetHead` is the shared part of `resnet_dnf` and
`resnet_dire`: a torchvision ResNet on a (3, H, W) map.

The loop (`train_loop`):
- seeding: `torch.manual_seed(config.seed)` before the module is built (initialization and
  dropout draw from it); batches come from `train.batches(..., shuffle=True, seed=seed + epoch)`;
  augmentation draws from `numpy.random.default_rng([seed, epoch])`. Same data and seed on the
  CPU give the same weights, bit for bit.
- after each epoch, the monitored metric (val AUROC by default, or val ACC at 0.5) is measured on
  `val` — never on test. An epoch improves when it beats the best so far (strictly); the weights
  of the best epoch are kept and restored at the end. After `lr_patience` epochs without
  improvement (counted since the best epoch or the last lr change) the lr is multiplied by
  `lr_factor` (not below `min_lr`); after `lr_drops` such drops the next plateau stops training
  (the CNNDetection rule of DNF/DIRE), and independently `patience` epochs without improvement
  stop it. With no `val`, all `epochs` are trained and the last weights kept.
- batches of a single image are skipped in training (BatchNorm cannot train on one image).
- progress: `logging` INFO lines on the `aigi.detectors.<name>` logger, one per epoch and one a
  minute within long epochs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aigi.detectors.base import Detector, check_input, check_labels

if TYPE_CHECKING:
    from aigi.detectors.data import FeatureSet

#: ImageNet statistics on [0, 1] pixels (torchvision / CNNDetection / DIRE).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Batches read ahead of the GPU by a background thread.
PREFETCH = 2
#: Seconds between progress lines within an epoch.
PROGRESS_EVERY_S = 60.0


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    lr: float
    seed: int
    optimizer: str = "adam"  # "adam" | "adamw" | "sgd"
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    grad_clip: float = 0.0  # max gradient norm; 0: off
    monitor: str = "auroc"  # "auroc" | "acc"
    lr_patience: int = 0  # epochs without improvement before the lr drops; 0: never
    lr_factor: float = 0.1
    min_lr: float = 0.0
    lr_drops: int = -1  # drops allowed; the next plateau stops training; -1: unlimited
    patience: int = 0  # epochs without improvement that stop training; 0: off
    dtype: str = "float32"  # "bfloat16": autocast the forward pass


def check_recipe_fields(cfg: Any, check: Callable[[bool, str, str], None]) -> None:
    """Validate the recipe keys a head config shares (each config calls this in __post_init__)."""
    check(cfg.epochs >= 1, "epochs", f"must be >= 1, got {cfg.epochs}")
    check(cfg.batch_size >= 2, "batch_size", f"must be >= 2, got {cfg.batch_size}")
    check(cfg.lr > 0, "lr", f"must be > 0, got {cfg.lr}")
    check(cfg.weight_decay >= 0, "weight_decay", f"must be >= 0, got {cfg.weight_decay}")
    check(cfg.optimizer in ("adam", "adamw", "sgd"), "optimizer", f"must be adam, adamw or sgd, got {cfg.optimizer!r}")
    check(cfg.monitor in ("auroc", "acc"), "monitor", f"must be auroc or acc, got {cfg.monitor!r}")
    check(cfg.lr_patience >= 0, "lr_patience", f"must be >= 0, got {cfg.lr_patience}")
    check(cfg.patience >= 0, "patience", f"must be >= 0, got {cfg.patience}")
    check(cfg.dtype in ("float32", "bfloat16"), "dtype", f"must be float32 or bfloat16, got {cfg.dtype!r}")
    check(bool(cfg.device), "device", "must name a device (auto, cpu, cuda, cuda:0, ...)")


# ------------------------------------------------------------------------------------ data


def column_shape(data: FeatureSet, column: str) -> tuple[int, ...]:
    """Per-image shape of `column`, without reading its values (a store column: its metadata)."""
    if column in data.arrays:
        return tuple(int(d) for d in data.arrays[column].shape[1:])
    if column not in data.shards or not data.shards[column]:
        raise KeyError(f"FeatureSet: no column {column!r} (has {data.columns})")
    from aigi.features.store import feature_meta

    name = column.split(".", 1)[1] if "." in column else column
    return tuple(int(d) for d in feature_meta(data.shards[column][0])["shapes"][name])


def prefetch(items: Iterator[Any], depth: int = PREFETCH) -> Iterator[Any]:
    """`items` in order, produced `depth` ahead by a background thread (shard reads overlap compute)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as e:  # re-raised in the consumer
            put(e)

    thread = threading.Thread(target=work, daemon=True, name="aigi-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def metric(monitor: str, y: np.ndarray, logits: np.ndarray) -> float:
    if monitor == "acc":
        return float(((logits >= 0).astype(np.int64) == y).mean())
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, logits))


# ------------------------------------------------------------------------------------ loop

Prepare = Callable[[dict[str, np.ndarray], Any, "np.random.Generator | None"], tuple]


def predict_logits(
    module: Any, data: FeatureSet, inputs: list[str], prepare: Prepare, device: Any, batch_size: int,
    dtype: str = "float32",
) -> np.ndarray:
    """(N,) float32 logits in `data`'s order (eval mode, no augmentation)."""
    import torch

    out = np.empty(len(data), dtype=np.float32)
    module.eval()
    with torch.inference_mode(), _autocast(device, dtype):
        for batch, _, pos in prefetch(data.batches(inputs, batch_size)):
            out[pos] = module(*prepare(batch, device, None)).float().cpu().numpy()
    return out


def train_loop(
    module: Any, recipe: Recipe, train: FeatureSet, val: FeatureSet | None, inputs: list[str],
    prepare: Prepare, device: Any, log: logging.Logger,
) -> dict[str, Any]:
    """Train `module` (already on `device`) in place; returns what happened (JSON-able)."""
    import torch

    opt = _optimizer(module, recipe)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    best, best_epoch, best_state = -math.inf, -1, None
    since_best = since_change = drops = 0
    history: list[dict[str, Any]] = []
    stopped = "epochs"
    if val is None and (recipe.patience or recipe.lr_patience):
        log.warning("no val set: no early stopping, training all %d epochs", recipe.epochs)
    for epoch in range(recipe.epochs):
        module.train()
        rng = np.random.default_rng([recipe.seed, epoch])
        total = torch.zeros((), device=device)
        seen = 0
        shown = time.monotonic()
        batches = train.batches(inputs, recipe.batch_size, shuffle=True, seed=recipe.seed + epoch)
        for batch, y, _ in prefetch(batches):
            if len(y) < 2:
                continue
            x = prepare(batch, device, rng)
            target = torch.from_numpy(y.astype(np.float32)).to(device)
            with _autocast(device, recipe.dtype):
                logit = module(*x)
            loss = loss_fn(logit.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(module.parameters(), recipe.grad_clip)
            opt.step()
            total += loss.detach() * len(y)
            seen += len(y)
            if time.monotonic() - shown > PROGRESS_EVERY_S:
                shown = time.monotonic()
                log.info("epoch %d: %d/%d images, train loss %.4f", epoch, seen, len(train), float(total) / seen)
        if seen == 0:
            raise ValueError(f"training needs batches of at least 2 images; the train set has {len(train)}")
        lr = opt.param_groups[0]["lr"]
        rec: dict[str, Any] = {"epoch": epoch, "loss": float(total) / seen, "lr": lr, "val": None}
        history.append(rec)
        if val is None:
            log.info("epoch %d: train loss %.4f, lr %.2e", epoch, rec["loss"], lr)
            continue
        rec["val"] = score = metric(
            recipe.monitor, val.labels, predict_logits(module, val, inputs, prepare, device, recipe.batch_size, recipe.dtype)
        )
        if score > best:
            best, best_epoch, since_best, since_change = score, epoch, 0, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            since_best += 1
            since_change += 1
        log.info(
            "epoch %d: train loss %.4f, val %s %.4f (best %.4f at epoch %d), lr %.2e",
            epoch, rec["loss"], recipe.monitor, score, best, best_epoch, lr,
        )
        if recipe.patience and since_best >= recipe.patience:
            stopped = "patience"
            break
        if recipe.lr_patience and since_change >= recipe.lr_patience:
            if 0 <= recipe.lr_drops <= drops:
                stopped = "plateau"
                break
            new = max(lr * recipe.lr_factor, recipe.min_lr)
            for group in opt.param_groups:
                group["lr"] = new
            drops += 1
            since_change = 0
            log.info("val plateau: lr %.2e -> %.2e", lr, new)
    if best_state is not None:
        module.load_state_dict(best_state)
    else:
        best_epoch = len(history) - 1
    module.eval()
    return {
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_val": None if best_state is None else best,
        "stopped": stopped,
        "history": history,
    }


def _optimizer(module: Any, r: Recipe) -> Any:
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    if r.optimizer == "adam":
        return torch.optim.Adam(params, lr=r.lr, weight_decay=r.weight_decay)
    if r.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay)
    return torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)


def _autocast(device: Any, dtype: str) -> Any:
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


# ------------------------------------------------------------------------------------ head


class TorchHead(Detector):
    """A Detector around a torch module; subclasses define `build`, `prepare` and `recipe`."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.module_: Any = None
        self.shapes_: dict[str, tuple[int, ...]] | None = None
        self.training_: dict[str, Any] = {}

    # --- what a head defines

    def recipe(self) -> Recipe:
        raise NotImplementedError

    def check_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise ValueError when the head cannot take inputs of these per-image shapes."""

    def build(self, shapes: dict[str, tuple[int, ...]], for_training: bool) -> Any:
        """The module for these input shapes (weights from the config's init when for_training)."""
        raise NotImplementedError

    def prepare(self, batch: dict[str, np.ndarray], device: Any, rng: np.random.Generator | None) -> tuple:
        """The module's input tensors on `device`; `rng` is given in training (augmentation)."""
        raise NotImplementedError

    def init_values(self) -> dict[str, Any]:
        """JSON values about the initialization, saved with the state."""
        return {}

    def place(self, module: Any, device: Any) -> Any:
        """`module` on `device` (a head may also pick a memory format there)."""
        return module.to(device)

    # --- the Detector contract

    def __getstate__(self) -> dict[str, Any]:
        """Pickle through get_state (numpy arrays and JSON values), as save() does."""
        state: dict[str, Any] = {"config": self.config}
        if self.module_ is not None:
            state["fitted"] = self.get_state()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])
        if "fitted" in state:
            self.set_state(*state["fitted"])

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"aigi.detectors.{self.name}")

    def _device(self) -> Any:
        from aigi.features.base import resolve_torch_device

        return resolve_torch_device(self.config.device)

    def _shapes(self, data: FeatureSet) -> dict[str, tuple[int, ...]]:
        shapes = {c: column_shape(data, c) for c in self.inputs()}
        self.check_shapes(shapes)
        return shapes

    def fit(self, train: FeatureSet, val: FeatureSet | None = None) -> TorchHead:
        import torch

        check_labels(self.name, train.labels)
        if val is not None:
            if not set(np.unique(val.labels).tolist()) == {0, 1}:
                raise ValueError(f"{self.name}: early stopping needs both real and generated images in val")
            if self._shapes(val) != self._shapes(train):
                raise ValueError(f"{self.name}: val inputs {self._shapes(val)} differ from train {self._shapes(train)}")
        shapes = self._shapes(train)
        device = self._device()
        recipe = self.recipe()
        torch.manual_seed(recipe.seed)
        module = self.place(self.build(shapes, for_training=True), device)
        self.log.info("%s: training on %d images (%s), %s", self.name, len(train), device, shapes)
        self.training_ = train_loop(module, recipe, train, val, self.inputs(), self.prepare, device, self.log)
        self.module_, self.shapes_ = module, shapes
        return self

    def logits(self, data: FeatureSet) -> np.ndarray:
        if self.module_ is None:
            raise RuntimeError(f"{self.name}: score() called before fit() or load()")
        shapes = self._shapes(data)
        if shapes != self.shapes_:
            raise ValueError(f"{self.name}: fitted on inputs {self.shapes_}, got {shapes}")
        device = self._device()
        self.module_ = self.place(self.module_, device)
        r = self.recipe()
        return predict_logits(self.module_, data, self.inputs(), self.prepare, device, r.batch_size, r.dtype)

    def score(self, data: FeatureSet) -> np.ndarray:
        z = self.logits(data).astype(np.float64)
        return 1.0 / (1.0 + np.exp(-z))

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self.module_ is None:
            raise RuntimeError(f"{self.name}: nothing to save before fit()")
        arrays = {k: v.detach().cpu().numpy() for k, v in self.module_.state_dict().items()}
        assert self.shapes_ is not None
        values = {
            "shapes": {c: list(s) for c, s in self.shapes_.items()},
            **self.training_,
            **self.init_values(),
        }
        return arrays, values

    def set_state(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        import torch

        shapes = {c: tuple(s) for c, s in values["shapes"].items()}
        module = self.build(shapes, for_training=False)
        module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        self.module_ = module.eval()
        self.shapes_ = shapes
        self.training_ = {k: v for k, v in values.items() if k != "shapes"}


# ------------------------------------------------------------------------------------ ResNets


def build_resnet(arch: str, pretrained: str = "") -> tuple[Any, dict[str, Any]]:
    """A torchvision ResNet with ONE output logit, its fc N(0, 0.02)-initialized (CNNDetection).

    `pretrained`: a local torchvision state_dict file (.safetensors, or a .pth/.pt read with
    `torch.load(weights_only=True)`) loaded into everything but fc; "" is random init. Returns
    the module and a record of the initialization."""
    import torch
    import torchvision

    net = getattr(torchvision.models, arch)(weights=None)
    init: dict[str, Any] = {"init": "random"}
    if pretrained:
        state = _read_state_dict(pretrained)
        state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches
            raise ValueError(f"{pretrained}: not a torchvision {arch} state_dict: {str(e)[:300]}") from None
        missing = [k for k in missing if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(
                f"{pretrained}: not a torchvision {arch} state_dict "
                f"(missing {missing[:5]}, unexpected {list(unexpected)[:5]})"
            )
        init = {"init": "pretrained", "pretrained": str(pretrained), "pretrained_sha256": _sha256(pretrained)}
    net.fc = torch.nn.Linear(net.fc.in_features, 1)
    torch.nn.init.normal_(net.fc.weight, 0.0, 0.02)
    return _logit_module(net), init


def _read_state_dict(path: str) -> dict[str, Any]:
    import torch

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    return state


def _sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _logit_module(net: Any) -> Any:
    """`net` with its (B, 1) output squeezed to (B,) logits (state keys prefixed "net.")."""
    import torch

    class Logit(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net(x).squeeze(1)

    return Logit(net)


class MapResNetHead(TorchHead):
    """A ResNet on one (3, H, W) map column: uint8 maps are read as x/255 (torchvision's
    ToTensor on the PNG the released code wrote), float maps as stored times `FLOAT_SCALE`; then
    the head's normalization; in training a random `crop` (else the whole map) and a random
    horizontal flip; at scoring a center crop."""

    #: Multiplies float ("clean") maps so that they are on the scale of the uint8 ones / 255.
    FLOAT_SCALE = 1.0

    def check_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        (shape,) = shapes.values()
        if len(shape) != 3 or shape[0] != 3:
            raise ValueError(f"{self.name}: needs (3, H, W) maps, got per-image shape {shape}")
        crop = self.config.crop
        if crop and (crop > shape[1] or crop > shape[2]):
            raise ValueError(f"{self.name}: crop {crop} is larger than the {shape[1]}x{shape[2]} maps")

    def build(self, shapes: dict[str, tuple[int, ...]], for_training: bool) -> Any:
        pretrained = getattr(self.config, "pretrained", "") if for_training else ""
        module, init = build_resnet(self.config.arch, pretrained)
        if for_training:
            self.init_record_ = init
        return module

    def init_values(self) -> dict[str, Any]:
        return dict(getattr(self, "init_record_", {}))

    def set_state(self, arrays: dict[str, np.ndarray], values: dict[str, Any]) -> None:
        super().set_state(arrays, values)
        self.init_record_ = {k: values[k] for k in ("init", "pretrained", "pretrained_sha256") if k in values}

    def place(self, module: Any, device: Any) -> Any:
        import torch

        module = module.to(device)
        return module.to(memory_format=torch.channels_last) if device.type == "cuda" else module

    def prepare(self, batch: dict[str, np.ndarray], device: Any, rng: np.random.Generator | None) -> tuple:
        import torch

        (raw,) = batch.values()
        x = torch.from_numpy(np.ascontiguousarray(raw)).to(device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        else:
            x = x.float()
            if self.FLOAT_SCALE != 1.0:
                x = x * self.FLOAT_SCALE
        if self.config.normalize == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
            x = (x - mean) / std
        crop, h, w = self.config.crop, x.shape[2], x.shape[3]
        if rng is None:
            if crop:  # torchvision CenterCrop's offsets
                y0, x0 = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
                x = x[:, :, y0 : y0 + crop, x0 : x0 + crop]
        else:
            n = len(x)
            if crop:
                ys, xs = rng.integers(0, h - crop + 1, n), rng.integers(0, w - crop + 1, n)
                x = torch.stack([x[i, :, ys[i] : ys[i] + crop, xs[i] : xs[i] + crop] for i in range(n)])
            if self.config.flip:
                flip = torch.from_numpy(rng.random(n) < 0.5).to(device)
                x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return (x,)

    def recipe(self) -> Recipe:
        c = self.config
        return Recipe(
            epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, seed=c.seed, optimizer=c.optimizer,
            weight_decay=c.weight_decay, monitor=c.monitor, lr_patience=c.lr_patience, lr_factor=0.1,
            lr_drops=c.lr_drops, patience=c.patience, dtype=c.dtype,
        )


@dataclass(frozen=True)
class MapResNetConfig:
    """The recipe fields the ResNet heads on feature maps share (DNF, DIRE); each head's config
    subclasses it with its input and the defaults of its paper."""

    feature: str = ""
    column: str = ""
    arch: Literal["resnet50", "resnet18"] = "resnet50"
    normalize: Literal["none", "imagenet"] = "none"
    crop: int = 0  # 0: the whole map
    flip: bool = True
    epochs: int = 10000
    batch_size: int = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    monitor: Literal["auroc", "acc"] = "auroc"
    lr_patience: int = 5
    lr_drops: int = 2
    patience: int = 0  # epochs without improvement that stop training; 0: the plateau rule only
    dtype: Literal["float32", "bfloat16"] = "float32"
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        from aigi.core.configtools import check

        check_input(self)
        check(self.arch in ("resnet50", "resnet18"), "arch", f"must be resnet50 or resnet18, got {self.arch!r}")
        check(self.normalize in ("none", "imagenet"), "normalize", f"must be none or imagenet, got {self.normalize!r}")
        check(self.crop >= 0, "crop", f"must be >= 0, got {self.crop}")
        check(self.lr_drops >= 0, "lr_drops", f"must be >= 0, got {self.lr_drops}")
        check_recipe_fields(self, check)
