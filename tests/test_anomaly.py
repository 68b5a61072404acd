import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402
import math  # noqa: E402
import pickle  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aigi.core.configtools import ConfigError, Invalid, build  # noqa: E402
from aigi.features._ks2d import ks2d_pvalue, ks2d_statistic  # noqa: E402
from aigi.features.anomaly import Anomaly, AnomalyConfig, model_level_as  # noqa: E402

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
SEEDS = [11, 22, 33]
ROWS = [{}, {}, {}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_dinov2")
    cfg = Anomaly.tiny(folder)
    return folder, cfg, loaded(cfg)


@pytest.fixture(scope="module")
def ref_model(tiny):
    from transformers import Dinov2Model

    return Dinov2Model.from_pretrained(tiny[0]).eval().requires_grad_(False)


def loaded(cfg: AnomalyConfig) -> Anomaly:
    ex = Anomaly(cfg)
    ex.load("cpu")
    return ex


def images(n=3, seed=5):
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(48, 40), (32, 32), (30, 45)][:n]  # (width, height)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def reference_input(pil_images, size):
    """Resize shorter side + center crop + [0, 1], written with torchvision."""
    import torch
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor()])
    return torch.stack([tf(im.convert("RGB")) for im in pil_images])


def reference(model, x, seeds, *, steps=10, eps=0.01, directions=1, mode="ascent", v_eps=8 / 255, alpha=2 / 255, v_steps=10):
    """Complexity and vulnerability from methods.md §4.2–4.3, one image at a time."""
    import torch

    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    def f(u):
        return model(pixel_values=(u - mean) / std).pooler_output

    cs, vs = [], []
    for img, seed in zip(x, seeds, strict=True):
        img = img[None]
        g = torch.Generator().manual_seed(seed)
        dirs = torch.randn((directions, *img.shape[1:]), generator=g)
        start = torch.empty(img.shape[1:]).uniform_(-1e-6, 1e-6, generator=g)
        per_dir = []
        for d in dirs:
            d = d / d.norm()
            with torch.no_grad():
                feats = torch.cat([f((img + eps * (k * d)).clamp(0, 1)) for k in range(steps + 1)]).double()
            disp = feats[1:] - feats[:-1]
            disp = disp / disp.norm(dim=1, keepdim=True)
            cos = (disp[1:] * disp[:-1]).sum(dim=1)
            per_dir.append(torch.arccos(cos.clamp(-1, 1)).mean())
        cs.append(torch.stack(per_dir).mean().item())

        with torch.no_grad():
            f0 = f(img)
        adv = (img + start).clamp(0, 1)
        for _ in range(v_steps):
            adv = adv.detach().requires_grad_(True)
            loss = torch.nn.functional.mse_loss(f(adv), f0)
            (grad,) = torch.autograd.grad(loss if mode == "ascent" else -loss, adv)
            adv = adv.detach() + alpha * grad.sign()
            adv = (img + (adv - img).clamp(-v_eps, v_eps)).clamp(0, 1)
        with torch.no_grad():
            vs.append((f0 - f(adv)).norm().item())
    return np.array(cs), np.array(vs)


def assert_close(a, b, rtol=1e-5):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=0)


@pytest.mark.parametrize("mode", ["ascent", "descent"])
def test_matches_independent_computation(tiny, ref_model, mode):
    _, cfg, _ = tiny
    ex = loaded(dataclasses.replace(cfg, vulnerability=mode))
    ims = images()
    x = reference_input(ims, cfg.img_size)
    pre = np.stack([ex.preprocess(im, {}) for im in ims])
    np.testing.assert_allclose(pre, x.numpy(), rtol=0, atol=1e-6)
    got = ex.extract(ims, ROWS, SEEDS)
    c, v = reference(ref_model, x, SEEDS, mode=mode)
    assert all(got[k].shape == (3,) and got[k].dtype == np.float32 for k in got)
    assert np.all(c > 0) and np.all(v > 0)
    assert_close(got["complexity"], c)
    assert_close(got["vulnerability"], v)
    np.testing.assert_allclose(got["as_i"], got["vulnerability"] / got["complexity"], rtol=1e-6)


def test_ascent_and_descent_differ(tiny):
    _, cfg, ex = tiny
    ims = images()
    up = ex.extract(ims, ROWS, SEEDS)
    down = loaded(dataclasses.replace(cfg, vulnerability="descent")).extract(ims, ROWS, SEEDS)
    np.testing.assert_array_equal(up["complexity"], down["complexity"])  # same directions
    # Ascent maximizes the feature change; descent (the released sign) stays near the image.
    assert np.all(up["vulnerability"] > 2 * down["vulnerability"])


def test_several_directions_average(tiny, ref_model):
    _, cfg, _ = tiny
    ex = loaded(dataclasses.replace(cfg, directions=3))
    ims = images(2)
    got = ex.extract(ims, ROWS[:2], SEEDS[:2])
    c, v = reference(ref_model, reference_input(ims, cfg.img_size), SEEDS[:2], directions=3)
    assert_close(got["complexity"], c)
    assert_close(got["vulnerability"], v)  # the start noise is drawn after all directions


def test_non_default_parameters_match_reference(tiny, ref_model):
    _, cfg, _ = tiny
    kw = dict(complexity_steps=4, complexity_eps=0.05, vulnerability_eps=4 / 255, vulnerability_alpha=1 / 255, vulnerability_steps=3)
    ex = loaded(dataclasses.replace(cfg, **kw))
    ims = images(2)
    got = ex.extract(ims, ROWS[:2], SEEDS[:2])
    c, v = reference(ref_model, reference_input(ims, cfg.img_size), SEEDS[:2], steps=4, eps=0.05, v_eps=4 / 255, alpha=1 / 255, v_steps=3)
    assert_close(got["complexity"], c)
    assert_close(got["vulnerability"], v)


def test_seed_controls_randomness(tiny):
    _, _, ex = tiny
    ims = images()
    a = ex.extract(ims, ROWS, SEEDS)
    b = ex.extract(ims, ROWS, SEEDS)
    c = ex.extract(ims, ROWS, [12, 23, 34])
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert not np.allclose(a[k], c[k], rtol=1e-4, atol=0)


def test_changed_image_changes_features(tiny):
    _, _, ex = tiny
    a = ex.extract(images(1), ROWS[:1], SEEDS[:1])
    b = ex.extract(images(1, seed=6), ROWS[:1], SEEDS[:1])
    for k in a:
        assert not np.allclose(a[k], b[k], rtol=1e-4, atol=0)


def test_batch_independence(tiny):
    _, cfg, ex = tiny
    ims = images()
    chunked = loaded(dataclasses.replace(cfg, batch_size=2)).extract(ims, ROWS, SEEDS)
    whole = ex.extract(ims, ROWS, SEEDS)
    single = [ex.extract([im], [{}], [s]) for im, s in zip(ims, SEEDS, strict=True)]
    for k in whole:
        one_by_one = np.concatenate([s[k] for s in single])
        np.testing.assert_allclose(whole[k], one_by_one, rtol=1e-5, atol=0)
        np.testing.assert_allclose(chunked[k], one_by_one, rtol=1e-5, atol=0)


def test_gradients_work_under_callers_inference_mode(tiny):
    import torch

    _, _, ex = tiny
    ims = images(2)
    want = ex.extract(ims, ROWS[:2], SEEDS[:2])
    with torch.inference_mode():
        got = ex.extract(ims, ROWS[:2], SEEDS[:2])
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_columns_match_output_and_empty_batch(tiny):
    _, cfg, ex = tiny
    cols = ex.columns()
    assert cols == Anomaly(cfg).columns()
    assert cols == {"complexity": ((), "float32"), "vulnerability": ((), "float32"), "as_i": ((), "float32")}
    out = ex.extract(images(1), ROWS[:1], SEEDS[:1])
    assert {k: (v.shape[1:], v.dtype.name) for k, v in out.items()} == cols
    empty = ex.compute(np.zeros((0, 3, 32, 32), np.float32), [], [])
    assert {k: v.shape for k, v in empty.items()} == {k: (0,) for k in cols}


def test_picklable_before_load_and_revision_recorded(tiny):
    _, cfg, ex = tiny
    assert pickle.loads(pickle.dumps(Anomaly(cfg))).config == cfg
    assert ex.model_revision().startswith("sha256:")


def test_img_size_must_be_multiple_of_patch(tiny):
    _, cfg, _ = tiny
    with pytest.raises(Invalid) as e:
        Anomaly(dataclasses.replace(cfg, img_size=36)).load("cpu")
    assert e.value.key == "img_size" and "patch size (8)" in str(e.value)


def test_bad_inputs(tiny):
    _, cfg, ex = tiny
    with pytest.raises(ValueError, match="match"):
        ex.extract(images(2), ROWS[:1], SEEDS[:2])
    with pytest.raises(RuntimeError, match="load"):
        Anomaly(cfg).extract(images(1), ROWS[:1], SEEDS[:1])


@pytest.mark.parametrize(
    "kw, key",
    [
        ({"img_size": 0}, "img_size"),
        ({"complexity_steps": 1}, "complexity_steps"),
        ({"complexity_eps": 0.0}, "complexity_eps"),
        ({"directions": 0}, "directions"),
        ({"vulnerability_eps": 0.0}, "vulnerability_eps"),
        ({"vulnerability_alpha": -1.0}, "vulnerability_alpha"),
        ({"vulnerability_steps": 0}, "vulnerability_steps"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_config_validation(kw, key):
    with pytest.raises(Invalid) as e:
        AnomalyConfig(**kw)
    assert e.value.key == key


def test_config_from_toml_table_names_key():
    cfg = build(AnomalyConfig, {"vulnerability": "descent", "directions": 4}, "features.anomaly")
    assert cfg.vulnerability == "descent" and cfg.directions == 4 and cfg.img_size == 224
    assert cfg.vulnerability_eps == 8 / 255 and cfg.vulnerability_alpha == 2 / 255
    with pytest.raises(ConfigError, match="features.anomaly.vulnerability"):
        build(AnomalyConfig, {"vulnerability": "up"}, "features.anomaly")
    with pytest.raises(ConfigError, match="features.anomaly.directions"):
        build(AnomalyConfig, {"directions": 0}, "features.anomaly")


def test_fingerprint_ignores_batch_size_and_device(tiny):
    _, cfg, _ = tiny
    base = Anomaly(cfg).fingerprint()
    assert Anomaly(dataclasses.replace(cfg, batch_size=1, device="cpu")).fingerprint() == base
    assert Anomaly(dataclasses.replace(cfg, vulnerability="descent")).fingerprint() != base


# -- the model-level AS: 2-D KS statistic --------------------------------------------------------


def brute_force_d(x1, y1, x2, y2):
    """Fasano–Franceschini D with plain Python loops, from the description in methods.md §4.4."""

    def maxdist(xa, ya, xb, yb):
        n = len(xa)
        diffs = []
        for px, py in zip(xa, ya, strict=True):
            quads = []
            for xs, ys in ((xa, ya), (xb, yb)):
                m = len(xs)
                q = [0, 0, 0, 0]
                for qx, qy in zip(xs, ys, strict=True):
                    q[(0 if qx <= px else 2) + (0 if qy <= py else 1)] += 1
                # Order: (x<=, y<=), (x<=, y>), (x>, y<=), (x>, y>).
                quads.append([q[0] / m, q[1] / m, q[2] / m, q[3] / m])
            d = [a - b for a, b in zip(quads[0], quads[1], strict=True)]
            d[0] -= 1 / n
            diffs.extend(d)
        return max(-min(diffs), max(diffs) + 1 / n)

    return (maxdist(x1, y1, x2, y2) + maxdist(x2, y2, x1, y1)) / 2


@pytest.mark.parametrize("n1, n2, ties", [(7, 7, False), (12, 9, False), (15, 20, True), (1, 3, True)])
def test_ks2d_statistic_matches_brute_force(n1, n2, ties):
    rng = np.random.default_rng(n1 * 100 + n2)
    pts = [rng.normal(size=n) for n in (n1, n1, n2, n2)]
    if ties:  # few distinct values: many equal coordinates within and across samples
        pts = [np.round(p) for p in pts]
    want = brute_force_d(*[p.tolist() for p in pts])
    assert ks2d_statistic(*pts) == pytest.approx(want, abs=1e-12)
    # Row chunking (forced tiny here) does not change the result.
    assert ks2d_statistic(*pts, max_elems=3) == pytest.approx(want, abs=1e-12)


def test_ks2d_properties():
    rng = np.random.default_rng(0)
    x1, y1, x2, y2 = rng.normal(size=(4, 50))
    d = ks2d_statistic(x1, y1, x2, y2)
    assert d == pytest.approx(ks2d_statistic(x2, y2, x1, y1), abs=1e-15)  # symmetric
    assert 0 < d <= 1
    # Identical samples: every difference is 0 except the point's own 1/n, so D = 1/n.
    assert ks2d_statistic(x1, y1, x1, y1) == pytest.approx(1 / 50)
    assert ks2d_pvalue(1 / 50, x1, y1, x1, y1) > 0.99
    # Disjoint samples: D = 1 and the p-value vanishes.
    assert ks2d_statistic(x1, y1, x2 + 100, y2 + 100) == pytest.approx(1.0)
    assert ks2d_pvalue(1.0, x1, y1, x2 + 100, y2 + 100) < 1e-6


def test_ks2d_pvalue_matches_formula():
    from scipy.stats import kstwobign, pearsonr

    rng = np.random.default_rng(1)
    x1, y1 = rng.normal(size=(2, 40))
    x2 = rng.normal(size=30)
    y2 = 0.5 * x2 + rng.normal(size=30)
    d = ks2d_statistic(x1, y1, x2, y2)
    sqen = math.sqrt(40 * 30 / 70)
    r = math.sqrt(1 - 0.5 * (pearsonr(x1, y1)[0] ** 2 + pearsonr(x2, y2)[0] ** 2))
    want = kstwobign.sf(d * sqen / (1 + r * (0.25 - 0.75 / sqen)))
    assert ks2d_pvalue(d, x1, y1, x2, y2) == pytest.approx(want, rel=1e-9)


def test_model_level_as():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(60, 2))
    gen = rng.normal(loc=0.5, size=(80, 2))
    res = model_level_as(real, gen, seed=3)
    assert res["n_real"] == res["n_generated"] == 60
    assert res == model_level_as(real, gen, seed=3)  # the subsample follows the seed
    assert res["as"] != model_level_as(real, gen, seed=4)["as"]
    full = model_level_as(real, gen, equal_n=False)
    assert (full["n_real"], full["n_generated"]) == (60, 80)
    assert full["as"] == pytest.approx(ks2d_statistic(real[:, 0], real[:, 1], gen[:, 0], gen[:, 1]))
    assert 0 <= full["p_value"] <= 1
    same = model_level_as(real, real)
    assert same["as"] == pytest.approx(1 / 60) and same["p_value"] > 0.99
    with pytest.raises(ValueError, match="shape"):
        model_level_as(real[:, :1], gen)
    with pytest.raises(ValueError, match="NaN"):
        model_level_as(np.full((5, 2), np.nan), gen)
