"""The gradient-trained heads: resnet_dnf, resnet_dire (torchvision ResNets on maps) and egre (LaRE²).

The contract itself (fit/score/save/load, seeds, separable and noise data) is checked for every
registered head by tests/test_detector_conformance.py; here: the EGRE forward against a numpy
re-derivation of the paper's formula, the maps' dtypes and shapes, the augmentation, early
stopping on val, pretrained weights, streaming from a feature store, CPU determinism.
"""

from __future__ import annotations

import math
import os
import pickle
from dataclasses import replace

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from aigi.core.configtools import ConfigError, build  # noqa: E402
from aigi.detectors import registry  # noqa: E402
from aigi.detectors._torch import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from aigi.detectors.data import FeatureSet  # noqa: E402
from aigi.detectors.egre import EgreConfig, EgreHead  # noqa: E402
from aigi.detectors.resnet_dire import ResnetDire, ResnetDireConfig  # noqa: E402
from aigi.detectors.resnet_dnf import ResnetDnf, ResnetDnfConfig  # noqa: E402

torch = pytest.importorskip("torch")

HEADS = ("egre", "resnet_dire", "resnet_dnf")


def labels(n: int) -> np.ndarray:
    return np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]


def separable(shapes: dict[str, tuple[int, ...]], n: int, seed: int, shift: float = 0.7, flip: bool = False) -> FeatureSet:
    """n real and n generated images; generated inputs are shifted by `shift`; `flip` swaps labels."""
    rng = np.random.default_rng(seed)
    y = labels(n)
    arrays = {
        c: (rng.normal(0, 1, (2 * n, *s)) + shift * y.reshape(-1, *[1] * len(s))).astype(np.float32)
        for c, s in shapes.items()
    }
    return FeatureSet.from_arrays(arrays, 1 - y if flip else y)


def state_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- registry and configs


def test_registry_and_tiny():
    for name in HEADS:
        cls = registry.get(name)
        cfg, shapes = cls.tiny()
        assert cls(cfg).inputs() == list(shapes)
    assert "_torch" not in registry.names()
    assert EgreHead(EgreConfig()).inputs() == ["clip_rn50.layer3", "clip_rn50.pooled", "lare.lare"]
    assert EgreHead(EgreConfig()).features() == ["clip_rn50", "lare"]


@pytest.mark.parametrize(
    "cls, table, key",
    [
        (EgreConfig, {"mode": "online"}, "mode"),
        (EgreConfig, {"lare": "lare"}, "lare"),
        (EgreConfig, {"dropout": 1.0}, "dropout"),
        (ResnetDnfConfig, {"arch": "vgg16"}, "arch"),
        (ResnetDnfConfig, {"batch_size": 1}, "batch_size"),
        (ResnetDireConfig, {"pretrained": "weights.bin"}, "pretrained"),
        (ResnetDireConfig, {"monitor": "loss"}, "monitor"),
    ],
)
def test_bad_config_names_the_key(cls, table, key):
    with pytest.raises(ConfigError, match=rf"detectors\.x\.{key}"):
        build(cls, table, "detectors.x", "run.toml")


def test_recipe_defaults_are_the_papers():
    dnf, dire, egre = ResnetDnfConfig(), ResnetDireConfig(), EgreConfig()
    assert (dnf.arch, dnf.lr, dnf.batch_size, dnf.crop, dnf.normalize) == ("resnet50", 1e-4, 64, 0, "none")
    assert (dire.arch, dire.lr, dire.batch_size, dire.crop, dire.normalize) == ("resnet50", 1e-4, 64, 224, "imagenet")
    assert (dnf.lr_patience, dnf.lr_drops, dire.epochs) == (5, 2, 400)
    assert (egre.lr, egre.batch_size, egre.grad_clip, egre.lr_factor, egre.min_lr) == (1e-4, 48, 5.0, 0.5, 1e-7)
    assert (egre.heads, egre.d_k, egre.d_v, egre.channel_hidden, egre.dropout) == (8, 64, 64, 128, 0.1)


# ---------------------------------------------------------------- EGRE against the formula


def adaptive_pool(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """(B, C, H, W) -> (B, C, oh, ow), bin i over [floor(i*H/oh), ceil((i+1)*H/oh))."""
    b, c, h, w = x.shape
    out = np.empty((b, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, h1 = i * h // oh, -(-(i + 1) * h // oh)
            w0, w1 = j * w // ow, -(-(j + 1) * w // ow)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def egre_reference(p: dict[str, np.ndarray], f3, g, lare, heads: int, dk: int, dv: int) -> np.ndarray:
    """P(generated) per image, written from methods.md §1.2 image by image, head by head."""
    p = {k: v.astype(np.float64) for k, v in p.items()}
    f3, g, lare = (a.astype(np.float64) for a in (f3, g, lare))
    b, c, h, w = f3.shape
    maps = np.einsum("kl,blij->bkij", p["align.weight"][:, :, 0, 0], adaptive_pool(lare, h, w))
    maps += p["align.bias"][None, :, None, None]
    out = []
    for n in range(b):
        tok = f3[n].reshape(c, h * w).T
        x = np.vstack([tok.mean(0), tok]) + p["pos"]  # (1+HW, C)
        gm = maps[n].reshape(heads, h * w).T
        bias = np.vstack([gm.mean(0), gm])  # (1+HW, heads)
        q = x[0]
        qa = p["q.weight"] @ q + p["q.bias"]
        ka = x @ p["k.weight"].T + p["k.bias"]
        va = x @ p["v.weight"].T + p["v.bias"]
        heads_out = []
        for k in range(heads):
            logits = ka[:, k * dk : (k + 1) * dk] @ qa[k * dk : (k + 1) * dk] / math.sqrt(dk) + bias[:, k]
            a = np.exp(logits - logits.max())
            a /= a.sum()
            heads_out.append(a @ va[:, k * dv : (k + 1) * dv])
        y = q + p["o.weight"] @ np.concatenate(heads_out) + p["o.bias"]
        s = (y - y.mean()) / np.sqrt(y.var() + 1e-5) * p["norm.weight"] + p["norm.bias"]
        wch = 1 / (1 + np.exp(-(p["w2.weight"] @ np.maximum(p["w1.weight"] @ lare[n].mean((1, 2)), 0))))
        r = f3[n].mean((1, 2)) * wch
        z = p["fc.weight"] @ np.concatenate([g[n], s, r]) + p["fc.bias"]
        e = np.exp(z - z.max())
        out.append(e[1] / e.sum())
    return np.array(out)


@pytest.mark.parametrize("batch", [5, 1])
def test_egre_forward_equals_the_formula(batch):
    cfg = EgreConfig(heads=2, d_k=3, d_v=5, channel_hidden=6, device="cpu")
    shapes = {"clip_rn50.layer3": (7, 3, 3), "clip_rn50.pooled": (4,), "lare.lare": (4, 7, 5)}
    head = EgreHead(cfg)
    torch.manual_seed(0)
    module = head.build(shapes, for_training=True)
    rng = np.random.default_rng(1)
    # random values everywhere (the init zeroes the attention biases): every term must count
    params = {k: rng.normal(0, 0.5, tuple(v.shape)).astype(np.float32) for k, v in module.state_dict().items()}
    head.set_state(params, {"shapes": {c: list(s) for c, s in shapes.items()}})
    inputs = {c: rng.normal(0, 1, (batch, *s)).astype(np.float32) for c, s in shapes.items()}
    inputs["lare.lare"] = np.abs(inputs["lare.lare"])  # a squared error is >= 0
    got = head.score(FeatureSet.from_arrays(inputs, np.zeros(batch, np.int64)))
    want = egre_reference(params, *inputs.values(), heads=2, dk=3, dv=5)
    assert got.dtype == np.float64 and got.shape == (batch,)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_egre_released_size():
    """The parameters EGRE adds to CLIP RN50, counted term by term (methods.md §1.2)."""
    shapes = {"clip_rn50.layer3": (1024, 14, 14), "clip_rn50.pooled": (1024,), "lare.lare": (4, 32, 32)}
    module = EgreHead(EgreConfig()).build(shapes, for_training=True)
    want = (3 * (1024 * 512 + 512) + (512 * 1024 + 1024) + 197 * 1024 + 2 * 1024 + (4 * 8 + 8)
            + (4 * 128 + 128 * 1024) + (3072 * 2 + 2))
    assert sum(p.numel() for p in module.parameters()) == want


# ---------------------------------------------------------------- ResNet inputs


def u8_maps(n: int, side: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, side, side), dtype=np.uint8)


def test_maps_as_the_released_pipelines_read_them():
    cpu = torch.device("cpu")
    u8 = u8_maps(4)
    # DNF: x/255, whole map, no normalization; clean float maps as stored
    dnf = ResnetDnf(ResnetDnf.tiny()[0])
    (a,) = dnf.prepare({"dnf.dnf": u8}, cpu, None)
    (b,) = dnf.prepare({"dnf.dnf": u8.astype(np.float32) / 255}, cpu, None)
    assert a.dtype == torch.float32 and a.shape == (4, 3, 16, 16)
    np.testing.assert_allclose(a.numpy(), u8 / 255.0, rtol=1e-6)
    assert torch.equal(a, b)
    (c,) = dnf.prepare({"dnf.dnf": (u8.astype(np.float32) / 255).astype(np.float16)}, cpu, None)
    assert c.dtype == torch.float32 and torch.allclose(a, c, atol=1e-3)
    # DIRE: x/255 (float DIRE in [0, 2] halved), ImageNet-normalized, center crop 12 of 16
    dire = ResnetDire(ResnetDire.tiny()[0])
    (d,) = dire.prepare({"dire.dire": u8}, cpu, None)
    (e,) = dire.prepare({"dire.dire": 2 * u8.astype(np.float32) / 255}, cpu, None)
    mean, std = np.array(IMAGENET_MEAN).reshape(3, 1, 1), np.array(IMAGENET_STD).reshape(3, 1, 1)
    want = ((u8 / 255.0 - mean) / std)[:, :, 2:14, 2:14]
    np.testing.assert_allclose(d.numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e.numpy(), d.numpy(), atol=1e-5)


def test_training_augmentation_crops_and_flips():
    cpu = torch.device("cpu")
    u8 = u8_maps(64)
    dire = ResnetDire(ResnetDire.tiny()[0])
    (x,) = dire.prepare({"dire.dire": u8}, cpu, np.random.default_rng(0))
    (full,) = ResnetDire(ResnetDireConfig(crop=0, normalize="imagenet")).prepare({"dire.dire": u8}, cpu, None)
    assert x.shape == (64, 3, 12, 12)
    flips, offsets = 0, set()
    for i in range(64):  # each output is a 12x12 window of its own map, maybe mirrored
        windows = {(y0, x0, f) for y0 in range(5) for x0 in range(5) for f in (0, 1)
                   if torch.equal(x[i], (full[i].flip(-1) if f else full[i])[:, y0 : y0 + 12, x0 : x0 + 12])}
        assert windows, i
        flips += min(f for *_, f in windows)
        offsets |= {w[:2] for w in windows}
    assert 10 < flips < 54 and len(offsets) > 5
    (again,) = dire.prepare({"dire.dire": u8}, cpu, np.random.default_rng(0))
    assert torch.equal(x, again)


def test_resnet_heads_take_uint8_and_float16_maps():
    cfg = ResnetDnfConfig(arch="resnet18", epochs=2, batch_size=16, lr=1e-3, device="cpu")
    y = labels(12)
    u8 = u8_maps(24)
    u8[y == 1] //= 2  # generated maps darker
    det = ResnetDnf(cfg).fit(FeatureSet.from_arrays({"dnf.dnf": u8}, y))
    s8 = det.score(FeatureSet.from_arrays({"dnf.dnf": u8}, y))
    s32 = det.score(FeatureSet.from_arrays({"dnf.dnf": u8.astype(np.float32) / 255}, y))
    assert s8.dtype == np.float64 and ((s8 >= 0) & (s8 <= 1)).all()
    np.testing.assert_array_equal(s8, s32)
    f16 = ResnetDnf(cfg).fit(FeatureSet.from_arrays({"dnf.dnf": (u8 / 255).astype(np.float16)}, y))
    assert f16.score(FeatureSet.from_arrays({"dnf.dnf": (u8 / 255).astype(np.float16)}, y)).shape == (24,)
    assert det.get_state()[1]["shapes"] == {"dnf.dnf": [3, 16, 16]}
    with pytest.raises(ValueError, match="fitted on inputs"):
        det.score(FeatureSet.from_arrays({"dnf.dnf": u8_maps(4, side=8)}, labels(2)))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        ResnetDnf(cfg).fit(FeatureSet.from_arrays({"dnf.dnf": np.zeros((4, 1, 16, 16), np.uint8)}, labels(2)))
    with pytest.raises(ValueError, match="crop 12 is larger"):
        ResnetDire(ResnetDire.tiny()[0]).fit(FeatureSet.from_arrays({"dire.dire": u8_maps(4, side=8)}, labels(2)))


# ---------------------------------------------------------------- early stopping, on val only


def test_early_stopping_watches_val():
    """Train separable, validate on the same distribution with its labels FLIPPED: learning makes
    val worse, so the best epoch is early and training stops `patience` epochs after it, the lr
    halved every `lr_patience` epochs without improvement; the kept weights are the best epoch's."""
    cfg = EgreConfig(heads=2, d_k=4, d_v=4, channel_hidden=8, epochs=40, batch_size=16, lr=3e-3,
                     lr_patience=2, patience=5, device="cpu")
    shapes = EgreHead.tiny()[1]
    train = separable(shapes, 60, seed=0)
    val = separable(shapes, 40, seed=1, flip=True)
    det = EgreHead(cfg).fit(train, val)
    t = det.training_
    history = [h["val"] for h in t["history"]]
    best = int(np.argmax(history))
    assert t["stopped"] == "patience" and t["best_epoch"] == best and t["best_val"] == history[best]
    assert t["epochs_run"] == best + 1 + cfg.patience < cfg.epochs
    assert history[-1] < 0.1  # it did learn (the flipped val says so)
    lrs = [h["lr"] for h in t["history"]]
    assert lrs[best + 3] == cfg.lr * 0.5 and lrs[best + 5] == cfg.lr * 0.25  # halved after 2, 4 bad epochs
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(val.labels, det.score(val)) == pytest.approx(history[best], abs=1e-12)
    # without val: every epoch runs, the last weights are kept
    short = EgreHead(replace(cfg, epochs=3)).fit(train)
    assert short.training_["epochs_run"] == 3 and short.training_["best_epoch"] == 2
    assert short.training_["stopped"] == "epochs"


def test_resnet_plateau_rule():
    """CNNDetection's rule: lr ÷ 10 after lr_patience epochs without improvement; after
    lr_drops drops the next plateau stops."""
    cfg = ResnetDnfConfig(arch="resnet18", epochs=30, batch_size=16, lr=1e-3, lr_patience=1,
                          lr_drops=1, device="cpu")
    shapes = ResnetDnf.tiny()[1]
    det = ResnetDnf(cfg).fit(separable(shapes, 16, 0), separable(shapes, 16, 1, flip=True))
    t = det.training_
    history = [h["val"] for h in t["history"]]
    assert t["stopped"] == "plateau" and t["epochs_run"] < cfg.epochs
    lrs = sorted({h["lr"] for h in t["history"]})
    assert lrs == [pytest.approx(1e-4), 1e-3]  # one drop, then the next plateau stopped it
    assert history[-1] <= max(history[:-1])  # the last epoch did not improve
    with pytest.raises(ValueError, match="both real and generated"):
        ResnetDnf(cfg).fit(separable(shapes, 4, 0), separable(shapes, 4, 1).subset(np.arange(4)))


# ---------------------------------------------------------------- determinism, saving


def test_cpu_training_is_deterministic(tmp_path):
    cfg, shapes = ResnetDire.tiny()
    cfg = replace(cfg, epochs=2)
    train, val = separable(shapes, 12, 0), separable(shapes, 8, 1)
    a, b = ResnetDire(cfg).fit(train, val), ResnetDire(cfg).fit(train, val)
    c = ResnetDire(replace(cfg, seed=1)).fit(train, val)
    assert state_equal(a.get_state()[0], b.get_state()[0])
    assert a.get_state()[1] == b.get_state()[1]
    assert not state_equal(a.get_state()[0], c.get_state()[0])
    loaded = ResnetDire.load(a.save(tmp_path / "dire"))
    np.testing.assert_array_equal(loaded.score(val), a.score(val))
    assert loaded.get_state()[1]["init"] == "random"
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(a)).score(val), a.score(val))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_dire_loads_local_pretrained_weights(tmp_path, suffix):
    import torchvision

    torch.manual_seed(5)
    ref = torchvision.models.resnet18(weights=None).state_dict()  # an ImageNet-shaped file: fc 1000
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in ref.items()}, str(path))
    else:
        torch.save(ref, path)
    cfg = replace(ResnetDire.tiny()[0], pretrained=str(path))
    head = ResnetDire(cfg)
    got = head.build({"dire.dire": (3, 16, 16)}, for_training=True).state_dict()
    for k, v in ref.items():
        if not k.startswith("fc."):
            assert torch.equal(got[f"net.{k}"], v), k
    assert got["net.fc.weight"].shape == (1, 512)
    assert head.init_values()["init"] == "pretrained" and len(head.init_values()["pretrained_sha256"]) == 64
    wrong = ResnetDire(replace(cfg, arch="resnet50"))
    with pytest.raises(ValueError, match="not a torchvision resnet50"):
        wrong.build({"dire.dire": (3, 16, 16)}, for_training=True)
    with pytest.raises(FileNotFoundError):
        ResnetDire(ResnetDireConfig(pretrained=str(tmp_path / "missing.pth"))).build({}, for_training=True)


# ---------------------------------------------------------------- from a feature store


def test_streamed_from_the_feature_store(tmp_path):
    from aigi.features.dnf import Dnf, DnfConfig
    from aigi.features.store import write_features

    extractor = Dnf(DnfConfig(img_size=16))
    y = labels(20)
    maps = u8_maps(40)
    maps[y == 1] //= 2
    ids = [f"img{i}" for i in range(40)]
    shards = []
    for k, part in enumerate(np.array_split(np.arange(40), 3)):
        shards.append(write_features(tmp_path / f"s{k}.parquet", [ids[i] for i in part], part.tolist(),
                                     {"dnf": maps[part]}, extractor, "test"))
    stored = FeatureSet.from_store({"dnf.dnf": shards}, ids, y, np.where(y == 1, "gen", "real"))
    cfg = ResnetDnfConfig(arch="resnet18", epochs=1, batch_size=16, device="cpu")
    det = ResnetDnf(cfg).fit(stored, stored)
    in_memory = FeatureSet.from_arrays({"dnf.dnf": maps}, y)
    np.testing.assert_array_equal(det.score(stored), det.score(in_memory))
    assert det.get_state()[1]["shapes"] == {"dnf.dnf": [3, 16, 16]}
