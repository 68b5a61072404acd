"""The CoDE heads (code_linear, code_knn, code_ocsvm) and the MLP, each against an independent
computation: scikit-learn fitted the released way, a brute-force nearest neighbour, a torch module
built from the saved weights. (The contract itself is tested for every head in
test_detector_conformance.py.)"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from aigi.core.configtools import ConfigError, Invalid, build  # noqa: E402
from aigi.detectors.code_knn import CodeKnn, CodeKnnConfig  # noqa: E402
from aigi.detectors.code_linear import CodeLinear, CodeLinearConfig  # noqa: E402
from aigi.detectors.code_ocsvm import CodeOcsvm, CodeOcsvmConfig  # noqa: E402
from aigi.detectors.data import FeatureSet  # noqa: E402
from aigi.detectors.logreg import LogReg, LogRegConfig  # noqa: E402
from aigi.detectors.metrics import binary_metrics  # noqa: E402
from aigi.detectors.mlp import Mlp, MlpConfig  # noqa: E402

COL = "code.code"


def embeddings(rng: np.random.Generator, n_real: int, n_fake: int, d: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Non-centred embeddings (like a LayerNorm output); fakes differ in a few dimensions."""
    x = rng.normal(0.5, 1.0, (n_real + n_fake, d))
    y = np.r_[np.zeros(n_real, np.int64), np.ones(n_fake, np.int64)]
    x[y == 1, :4] -= 1.0
    return x.astype(np.float32), y


def fs(x: np.ndarray, y: np.ndarray | None = None, column: str = COL) -> FeatureSet:
    return FeatureSet.from_arrays({column: x}, np.zeros(len(x), np.int64) if y is None else y)


# ---------------------------------------------------------------- code_linear


def test_code_linear_defaults_are_the_release():
    c = CodeLinearConfig()
    assert (c.feature, c.column, c.C, c.max_iter, c.class_weight, c.seed) == ("code", "code", 0.316, 1500, "balanced", 0)
    with pytest.raises(Invalid):
        CodeLinearConfig(C=0)


def test_code_linear_is_the_released_logistic_regression(tmp_path):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x, y = embeddings(rng, 40, 160)  # 1:4, as the release's training data
    xt, _ = embeddings(rng, 30, 30)
    ref = LogisticRegression(C=0.316, class_weight="balanced", max_iter=1500, random_state=0)
    ref.fit(x.astype(np.float64), y)  # raw features, not standardized
    want = ref.predict_proba(xt.astype(np.float64))[:, 1]
    det = CodeLinear(CodeLinearConfig()).fit(fs(x, y))
    np.testing.assert_allclose(det.score(fs(xt)), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(det.sklearn_.predict_proba(xt.astype(np.float64))[:, 1], want, rtol=0, atol=1e-12)
    loaded = CodeLinear.load(det.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.score(fs(xt)), det.score(fs(xt)))
    # the released hard decision is score >= 0.5
    np.testing.assert_array_equal(loaded.score(fs(xt)) >= 0.5, ref.predict(xt.astype(np.float64)) == 1)
    with pytest.raises(ValueError, match="1-D embedding"):
        det.score(fs(np.zeros((2, 3, 4, 4), np.float32)))


# ---------------------------------------------------------------- code_knn


def test_code_knn_decision_is_sklearn_1nn_cosine_and_the_score_is_the_margin(tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(1)
    x, y = embeddings(rng, 60, 90)
    xt, _ = embeddings(rng, 50, 50)
    det = CodeKnn(CodeKnnConfig()).fit(fs(x, y))
    score = det.score(fs(xt))
    ref = KNeighborsClassifier(n_neighbors=1, metric="cosine", weights="uniform").fit(x, y)
    np.testing.assert_array_equal(score > 0.5, ref.predict(xt) == 1)

    # brute force: cosine similarity to every training embedding, best of each class
    def unit(a):
        a = a.astype(np.float64)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    sim = unit(xt) @ unit(x).T
    g, r = sim[:, y == 1].max(1), sim[:, y == 0].max(1)
    np.testing.assert_allclose(score, (g - r + 2) / 4, rtol=0, atol=1e-6)  # the bank is float32
    assert ((score >= 0) & (score <= 1)).all()
    loaded = CodeKnn.load(det.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.score(fs(xt)), score)
    # a training image is its own nearest neighbour: similarity 1 to its own class
    g0, r0 = det.similarities(fs(x[:5]))
    np.testing.assert_allclose(r0, 1.0, atol=1e-6)
    assert (g0 < 1).all()
    # an all-zero embedding is similar to nothing: score exactly 0.5, no NaN
    assert det.score(fs(np.zeros((1, x.shape[1]), np.float32)))[0] == 0.5


# ---------------------------------------------------------------- code_ocsvm


def test_code_ocsvm_defaults_are_the_release():
    c = CodeOcsvmConfig()
    assert (c.kernel, c.gamma, c.nu, c.degree, c.coef0) == ("poly", "auto", 0.1, 3, 0.0)
    assert build(CodeOcsvmConfig, {"gamma": 0.5}, "detectors.code_ocsvm").gamma == 0.5
    assert build(CodeOcsvmConfig, {"gamma": "scale"}, "detectors.code_ocsvm").gamma == "scale"
    for bad in ({"gamma": "sometimes"}, {"gamma": -1.0}, {"nu": 0.0}, {"kernel": "cubic"}):
        with pytest.raises(ConfigError):
            build(CodeOcsvmConfig, bad, "detectors.code_ocsvm")


@pytest.mark.parametrize(
    "kw",
    [{}, {"kernel": "rbf", "gamma": "scale"}, {"kernel": "linear"}, {"kernel": "sigmoid", "gamma": 0.01, "coef0": 0.5},
     {"kernel": "poly", "degree": 2, "coef0": 1.0, "gamma": 0.2, "nu": 0.3}],
)
def test_code_ocsvm_decision_function_is_sklearns_fitted_on_reals_only(kw, tmp_path):
    from scipy.special import expit
    from sklearn.svm import OneClassSVM

    rng = np.random.default_rng(2)
    x, y = embeddings(rng, 120, 80)
    xt, yt = embeddings(rng, 60, 60)
    cfg = CodeOcsvmConfig(**kw)
    det = CodeOcsvm(cfg).fit(fs(x, y))
    ref = OneClassSVM(kernel=cfg.kernel, gamma=cfg.gamma, nu=cfg.nu, degree=cfg.degree, coef0=cfg.coef0)
    ref.fit(x[y == 0])  # an independent fit on the reals alone: the fakes must not matter
    want = ref.decision_function(xt)
    got = det.decision_function(fs(xt))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    # score = sigmoid(-d / s), s the spread of d over the training reals
    s = ref.decision_function(x[y == 0]).std()
    np.testing.assert_allclose(det.score(fs(xt)), expit(-want / s), rtol=1e-9, atol=1e-12)
    # the released decision: predict -1 (outlier) = generated <=> score > 0.5
    clear = np.abs(want) > 1e-9 * np.abs(want).max()
    np.testing.assert_array_equal((det.score(fs(xt)) > 0.5)[clear], (ref.predict(xt) == -1)[clear])
    loaded = CodeOcsvm.load(det.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.decision_function(fs(xt)), got)
    np.testing.assert_array_equal(loaded.score(fs(xt)), det.score(fs(xt)))


def test_code_ocsvm_needs_reals():
    rng = np.random.default_rng(3)
    x, y = embeddings(rng, 1, 10)
    with pytest.raises(ValueError, match="real images only"):
        CodeOcsvm(CodeOcsvmConfig()).fit(fs(x, y))
    # fakes are not needed: a reals-only training set is fine
    x, y = embeddings(rng, 30, 0)
    assert CodeOcsvm(CodeOcsvmConfig()).fit(fs(x, y)).score(fs(x)).shape == (30,)


# ---------------------------------------------------------------- mlp


def maps(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(1.0, 1.0, (2 * n, 4, 8, 8)).astype(np.float32)
    y = np.r_[np.zeros(n, np.int64), np.ones(n, np.int64)]
    x[y == 1, 0] += shift
    return x, y


TINY = MlpConfig(pool=2, hidden=8, epochs=6, batch_size=16, patience=2, device="cpu")


def test_mlp_config_rejects_impossible_values():
    for kw, key in (({"dropout": 1.0}, "dropout"), ({"hidden": 0}, "hidden"), ({"patience": 0}, "patience"),
                    ({"lr": 0.0}, "lr"), ({"epochs": 0}, "epochs")):
        with pytest.raises(Invalid) as e:
            MlpConfig(**kw)
        assert e.value.key == key


def test_mlp_is_the_saved_weights_as_a_torch_module(tmp_path):
    import torch

    rng = np.random.default_rng(4)
    x, y = maps(rng, 40, 0.5)
    xt, _ = maps(rng, 10, 0.5)
    state = torch.random.get_rng_state()
    det = Mlp(TINY).fit(fs(x, y, "lare.lare"))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    folder = det.save(tmp_path / "m")

    from safetensors.numpy import load_file

    w = load_file(str(folder / "state.safetensors"))
    pooled = LogReg(LogRegConfig(pool=2)).pooled(x)  # the same input as logreg's
    np.testing.assert_allclose(w["mean"], pooled.mean(0), rtol=1e-10)
    np.testing.assert_allclose(w["scale"], pooled.std(0), rtol=1e-8)
    net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    with torch.no_grad():
        for layer, k in ((net[0], "1"), (net[2], "2")):
            layer.weight.copy_(torch.from_numpy(w[f"w{k}"]))
            layer.bias.copy_(torch.from_numpy(w[f"b{k}"]))
        z = (LogReg(LogRegConfig(pool=2)).pooled(xt) - w["mean"]) / w["scale"]
        want = torch.sigmoid(net(torch.from_numpy(z.astype(np.float32))).double())[:, 0].numpy()
    np.testing.assert_allclose(det.score(fs(xt, column="lare.lare")), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(Mlp.load(folder).score(fs(xt, column="lare.lare")),
                                  det.score(fs(xt, column="lare.lare")))


def test_mlp_seed_matters_and_early_stopping_keeps_the_best_val_epoch():
    from dataclasses import replace

    rng = np.random.default_rng(5)
    x, y = maps(rng, 60, 0.3)
    xv, yv = maps(rng, 30, 0.3)
    yv = rng.permutation(yv)  # a validation set with no signal: AUROC wanders, so training stops early
    train, val = fs(x, y, "lare.lare"), fs(xv, yv, "lare.lare")
    cfg = replace(TINY, epochs=40, patience=2)
    det = Mlp(cfg).fit(train, val)
    h = det.history_
    assert h["epochs_run"] < 40 and len(h["val_auroc"]) == h["epochs_run"]
    assert h["best_epoch"] == int(np.argmax(h["val_auroc"]))
    assert h["epochs_run"] == h["best_epoch"] + 1 + cfg.patience  # stopped after `patience` worse epochs
    assert binary_metrics(yv, det.score(val))["auroc"] == pytest.approx(max(h["val_auroc"]))
    other = Mlp(replace(cfg, seed=1)).fit(train, val)
    assert not np.array_equal(other.score(train), det.score(train))
    no_val = Mlp(cfg).fit(train)
    assert no_val.history_["epochs_run"] == 40 and no_val.history_["val_auroc"] == []
    with pytest.raises(ValueError, match="both classes"):
        Mlp(cfg).fit(train, fs(xv[:5], np.zeros(5, np.int64), "lare.lare"))
