"""The logistic-regression detector, the detection metrics and the report tables."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here needs the hub; keep it that way

from aigi.core.configtools import ConfigError, Invalid, build  # noqa: E402
from aigi.detectors import registry  # noqa: E402
from aigi.detectors.data import FeatureSet  # noqa: E402
from aigi.detectors.logreg import LogReg, LogRegConfig  # noqa: E402
from aigi.detectors.metrics import (  # noqa: E402
    INTERVAL_METRICS,
    binary_metrics,
    bootstrap_ci,
    per_generator,
    with_intervals,
)
from aigi.detectors.report import format_table, markdown_report  # noqa: E402

# ---------------------------------------------------------------- independent references


def pairwise_auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Fraction of (fake, real) pairs where the fake scores higher; ties count one half."""
    fake, real = s[y == 1][:, None], s[y == 0][None, :]
    return float(((fake > real) + 0.5 * (fake == real)).mean())


def definition_ap(y: np.ndarray, s: np.ndarray) -> float:
    """Mean over positives of precision at the positive's rank (scores must be distinct)."""
    assert len(np.unique(s)) == len(s)
    order = np.argsort(-s)
    ys = y[order]
    hits = np.cumsum(ys)
    ranks = np.arange(1, len(ys) + 1)
    return float(np.sum((hits / ranks)[ys == 1]) / ys.sum())


def brute_force(y: np.ndarray, s: np.ndarray, max_fpr: float = 0.01) -> tuple[float, float]:
    """(TPR at 1% FPR, best accuracy) scanning every threshold t (score >= t called generated),
    including one above every score."""
    best_tpr, best_acc = 0.0, 0.0
    for t in [np.inf, *np.unique(s)]:
        pred = s >= t
        tpr, fpr = pred[y == 1].mean(), pred[y == 0].mean()
        if fpr <= max_fpr:
            best_tpr = max(best_tpr, tpr)
        best_acc = max(best_acc, (pred == (y == 1)).mean())
    return float(best_tpr), float(best_acc)


def blobs(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """n real maps around 0 and n generated maps around `shift`, (2n, 4, 8, 8) float16."""
    real = rng.normal(0.0, 1.0, (n, 4, 8, 8))
    fake = rng.normal(shift, 1.0, (n, 4, 8, 8))
    x = np.concatenate([real, fake]).astype(np.float16)
    y = np.r_[np.zeros(n, np.int8), np.ones(n, np.int8)]
    return x, y


def fs(x: np.ndarray, y: np.ndarray | None = None) -> FeatureSet:
    """The maps `x` as the column "lare.lare" logreg reads by default (labels: all real if None)."""
    return FeatureSet.from_arrays({"lare.lare": x}, np.zeros(len(x), np.int64) if y is None else y)


# ---------------------------------------------------------------- registry and config


def test_registry_finds_logreg():
    assert "logreg" in registry.names()
    assert "metrics" not in registry.names() and "report" not in registry.names()
    assert registry.get("logreg") is LogReg


@pytest.mark.parametrize(
    "kwargs, key",
    [({"C": 0.0}, "C"), ({"C": -1.0}, "C"), ({"pool": 0}, "pool"), ({"max_iter": 0}, "max_iter")],
)
def test_config_rejects_impossible_values(kwargs, key):
    with pytest.raises(Invalid) as e:
        LogRegConfig(**kwargs)
    assert e.value.key == key


def test_config_from_toml_table_names_the_key():
    cfg = build(LogRegConfig, {"pool": 2, "C": 3}, "detectors.logreg")
    assert cfg.pool == 2 and cfg.C == 3.0
    with pytest.raises(ConfigError, match="detectors.logreg.class_weight"):
        build(LogRegConfig, {"class_weight": "auto"}, "detectors.logreg")
    with pytest.raises(ConfigError, match="detectors.logreg.C"):
        build(LogRegConfig, {"C": 0}, "detectors.logreg")


# ---------------------------------------------------------------- pooling


@pytest.mark.parametrize("h, w, pool", [(8, 8, 1), (8, 8, 2), (8, 8, 4), (6, 6, 4), (6, 10, 4), (3, 3, 4)])
def test_pooling_matches_torch_adaptive_avg_pool2d(h, w, pool):
    import torch

    x = np.random.default_rng(0).normal(size=(3, 5, h, w)).astype(np.float32)
    ref = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), pool).numpy()
    got = LogReg(LogRegConfig(pool=pool)).pooled(x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref.reshape(3, -1), rtol=1e-5, atol=1e-6)


def test_pooling_leaves_1d_features_alone_and_rejects_other_shapes():
    det = LogReg(LogRegConfig(pool=2))
    x = np.random.default_rng(1).normal(size=(4, 7)).astype(np.float16)
    np.testing.assert_array_equal(det.pooled(x), x.astype(np.float64))
    with pytest.raises(ValueError, match="shape"):
        det.pooled(np.zeros((4, 3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        det.pooled(np.full((2, 3), np.nan))


# ---------------------------------------------------------------- fitting and scoring


def test_separates_two_gaussian_blobs():
    rng = np.random.default_rng(2)
    x, y = blobs(rng, 100, 0.3)
    xt, yt = blobs(rng, 100, 0.3)
    det = LogReg(LogRegConfig(pool=4)).fit(fs(x, y))
    s = det.score(fs(xt))
    assert s.shape == (200,) and s.dtype == np.float64
    assert ((s >= 0) & (s <= 1)).all()
    assert pairwise_auroc(yt, s) > 0.95


def test_near_chance_on_identical_distributions():
    rng = np.random.default_rng(3)
    x, y = blobs(rng, 200, 0.0)
    xt, yt = blobs(rng, 200, 0.0)
    s = LogReg(LogRegConfig(pool=2)).fit(fs(x, y)).score(fs(xt))
    assert abs(pairwise_auroc(yt, s) - 0.5) < 0.1


def test_matches_a_hand_built_global_pool_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    x, y = blobs(rng, 30, 0.2)
    y[:5] = 1  # unbalanced classes, so class_weight matters
    xt, _ = blobs(rng, 10, 0.2)

    def channel_means(a):  # pool=1: one mean per channel
        return a.astype(np.float64).mean(axis=(2, 3))

    f, ft = channel_means(x), channel_means(xt)
    mu, sd = f.mean(0), f.std(0)
    ref = LogisticRegression(C=0.5, max_iter=1000, class_weight="balanced", random_state=0)
    ref.fit((f - mu) / sd, y)
    want = ref.predict_proba((ft - mu) / sd)[:, list(ref.classes_).index(1)]

    got = LogReg(LogRegConfig(pool=1, C=0.5)).fit(fs(x, y)).score(fs(xt))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)

    # Without standardizing and without class weights, the raw channel means go straight in.
    raw = LogisticRegression(C=0.5, max_iter=1000, random_state=0).fit(f, y)
    want_raw = raw.predict_proba(ft)[:, list(raw.classes_).index(1)]
    cfg = LogRegConfig(pool=1, C=0.5, standardize=False, class_weight="none")
    np.testing.assert_allclose(LogReg(cfg).fit(fs(x, y)).score(fs(xt)), want_raw, rtol=1e-6, atol=1e-8)


def test_scores_are_the_sklearn_pipeline_before_save_and_after_load(tmp_path):
    rng = np.random.default_rng(9)
    x, y = blobs(rng, 40, 0.3)
    y[:7] = 1  # unbalanced
    xt, _ = blobs(rng, 15, 0.3)
    for cfg in (LogRegConfig(pool=2), LogRegConfig(pool=3, C=0.1, standardize=False, class_weight="none")):
        det = LogReg(cfg).fit(fs(x, y))
        pooled = det.pooled(xt)
        want = det.sklearn_.predict_proba(pooled)[:, list(det.sklearn_.classes_).index(1)]
        np.testing.assert_allclose(det.score(fs(xt)), want, rtol=0, atol=1e-12)
        loaded = LogReg.load(det.save(tmp_path / f"pool{cfg.pool}"))
        assert loaded.sklearn_ is None  # scoring after load is the kept numbers, in numpy
        np.testing.assert_array_equal(loaded.score(fs(xt)), det.score(fs(xt)))
        np.testing.assert_allclose(loaded.score(fs(xt)), want, rtol=0, atol=1e-12)


def test_pickle_round_trip_gives_identical_scores():
    rng = np.random.default_rng(5)
    x, y = blobs(rng, 20, 0.5)
    det = LogReg(LogRegConfig(pool=2)).fit(fs(x, y))
    again = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(again.score(fs(x)), det.score(fs(x)))
    assert again.config == det.config


def test_errors_unfitted_one_class_bad_labels_and_shape_mismatch(tmp_path):
    rng = np.random.default_rng(6)
    x, y = blobs(rng, 10, 0.5)
    with pytest.raises(RuntimeError, match="before fit"):
        LogReg(LogRegConfig()).score(fs(x))
    with pytest.raises(RuntimeError, match="before fit"):
        LogReg(LogRegConfig()).save(tmp_path / "unfitted")
    with pytest.raises(ValueError, match="both"):
        LogReg(LogRegConfig()).fit(fs(x, np.ones(len(x), np.int8)))
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        LogReg(LogRegConfig()).fit(fs(x, np.full(len(x), 2)))
    with pytest.raises(ValueError, match="rows"):  # labels and features of different lengths
        LogReg(LogRegConfig()).fit(fs(x, y[:-1]))
    det = LogReg(LogRegConfig(pool=2)).fit(fs(x, y))
    with pytest.raises(ValueError, match="pooled features"):
        det.score(fs(np.zeros((2, 3, 8, 8))))
    with pytest.raises(KeyError, match="lare.lare"):
        det.score(FeatureSet.from_arrays({"dnf.dnf": x}, y))


def test_load_refuses_another_detector_or_version(tmp_path):
    import json

    rng = np.random.default_rng(10)
    x, y = blobs(rng, 10, 0.5)
    folder = LogReg(LogRegConfig(pool=2)).fit(fs(x, y)).save(tmp_path / "m")
    manifest = json.loads((folder / "detector.json").read_text())
    assert manifest["name"] == "logreg" and manifest["config"]["pool"] == 2
    manifest["version"] = 1  # the pickled format of version 1 is not readable
    (folder / "detector.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="version"):
        LogReg.load(folder)
    manifest.update(name="mlp", version=LogReg.version)
    (folder / "detector.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="mlp"):
        LogReg.load(folder)


# ---------------------------------------------------------------- metrics


def test_binary_metrics_accuracies_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.5, 0.7, 0.2, 0.5, 0.9, 0.6])
    m = binary_metrics(y, s)
    # score >= 0.5 is called generated: reals 0.1 right, 0.5 wrong, 0.7 wrong; fakes 0.2 wrong, rest right.
    assert (m["n_real"], m["n_fake"]) == (3, 4)
    assert m["real_acc"] == pytest.approx(1 / 3)
    assert m["fake_acc"] == pytest.approx(3 / 4)
    assert m["acc"] == pytest.approx(4 / 7)
    assert binary_metrics(y, s, threshold=0.8)["acc"] == pytest.approx(4 / 7)  # 3 reals + 0.9
    assert m["balanced_acc"] == pytest.approx((1 / 3 + 3 / 4) / 2)
    # Best threshold 0.2: reals 0.1 right; all 4 fakes right -> 5/7 (every other threshold gives <= 4/7).
    assert m["oracle_acc"] == pytest.approx(5 / 7)
    assert m["oracle_acc"] == pytest.approx(brute_force(y, s)[1])


def test_auroc_and_ap_against_their_definitions():
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.3, 0.2, 0.1])
    m = binary_metrics(y, s)
    # Hand-worked: positives at ranks 1,3,4,7 -> (1/1 + 2/3 + 3/4 + 4/7) / 4.
    assert definition_ap(y, s) == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 7) / 4)
    assert m["ap"] == pytest.approx(definition_ap(y, s))
    assert m["auroc"] == pytest.approx(pairwise_auroc(y, s))
    # Random scores with ties: the pairwise definition counts ties one half.
    rng = np.random.default_rng(7)
    y2 = rng.integers(0, 2, 300)
    s2 = rng.integers(0, 10, 300) / 10
    assert binary_metrics(y2, s2)["auroc"] == pytest.approx(pairwise_auroc(y2, s2))
    s3 = rng.random(300)
    assert binary_metrics(y2, s3)["ap"] == pytest.approx(definition_ap(y2, s3))


def test_missing_class_gives_nan_not_an_error():
    m = binary_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.7]))
    assert (m["n_real"], m["n_fake"]) == (0, 3)
    assert m["fake_acc"] == pytest.approx(2 / 3) and m["acc"] == pytest.approx(2 / 3)
    assert all(math.isnan(m[k]) for k in ("real_acc", "ap", "auroc"))
    r = binary_metrics(np.array([0, 0]), np.array([0.9, 0.2]))
    assert r["real_acc"] == 0.5 and all(math.isnan(r[k]) for k in ("fake_acc", "ap", "auroc"))
    for row in (m, r):
        assert all(math.isnan(row[k]) for k in ("balanced_acc", "tpr_at_1fpr", "oracle_acc"))
    e = binary_metrics(np.zeros(0, int), np.zeros(0))
    assert (e["n_real"], e["n_fake"]) == (0, 0) and all(math.isnan(e[k]) for k in ("acc", "ap", "auroc"))


def test_binary_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="equal-length"):
        binary_metrics(np.array([0, 1]), np.array([0.5]))
    with pytest.raises(ValueError, match="labels"):
        binary_metrics(np.array([0, 3]), np.array([0.5, 0.2]))
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics(np.array([0, 1]), np.array([0.5, np.nan]))


def _eval_set():
    rng = np.random.default_rng(8)
    source = np.array(["coco"] * 6 + ["imagenet"] * 4 + ["sdB"] * 5 + ["sdA"] * 3)
    y = np.r_[np.zeros(10, int), np.ones(8, int)]
    return source, y, rng.random(len(y))


def test_per_generator_pairs_each_generator_with_all_reals():
    source, y, s = _eval_set()
    rows = per_generator(source, y, s)
    assert [r["generator"] for r in rows] == ["sdA", "sdB", "all"]
    assert [(r["n_real"], r["n_fake"]) for r in rows] == [(10, 3), (10, 5), (10, 8)]
    reals = y == 0
    for r in rows[:2]:
        keep = reals | (source == r["generator"])
        assert r["auroc"] == pytest.approx(pairwise_auroc(y[keep], s[keep]))
        assert r["real_acc"] == pytest.approx(np.mean(s[reals] < 0.5))
        assert r["fake_acc"] == pytest.approx(np.mean(s[source == r["generator"]] >= 0.5))
    assert rows[-1]["auroc"] == pytest.approx(pairwise_auroc(y, s))
    with pytest.raises(ValueError, match="'all'"):
        per_generator(np.array(["coco", "all"]), np.array([0, 1]), np.array([0.1, 0.9]))


def test_tpr_at_1fpr_by_hand_and_against_a_threshold_scan():
    # 100 reals at 0.00 .. 0.99; fakes at 0.995, 0.985 and 0.5. FPR <= 1% allows one real
    # (0.99) above the threshold: t = 0.985 catches 2 of 3 fakes; t = 0.98 would call 2 reals.
    y = np.r_[np.zeros(100, int), np.ones(3, int)]
    s = np.r_[np.arange(100) / 100, 0.995, 0.985, 0.5]
    assert binary_metrics(y, s)["tpr_at_1fpr"] == pytest.approx(2 / 3)
    assert brute_force(y, s)[0] == pytest.approx(2 / 3)
    rng = np.random.default_rng(11)
    for ties in (True, False):
        y2 = rng.integers(0, 2, 500)
        s2 = rng.normal(y2 * 1.5, 1.0)
        s2 = np.round(s2, 1) if ties else s2
        m = binary_metrics(y2, s2)
        tpr, acc = brute_force(y2, s2)
        assert m["tpr_at_1fpr"] == pytest.approx(tpr, abs=1e-12)
        assert m["oracle_acc"] == pytest.approx(acc, abs=1e-12)
    # Perfect separation: every fake caught at 0% FPR.
    assert binary_metrics(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.3]))["tpr_at_1fpr"] == 1.0


def test_ranking_metrics_equal_sklearn_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(12)
    for k in range(5):
        y = rng.integers(0, 2, 200 + k)
        s = rng.integers(0, 7, len(y)) / 7 + 0.3 * y * (k % 2)
        m = binary_metrics(y, s)
        assert m["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert m["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert m["auroc"] == pytest.approx(pairwise_auroc(y, s), abs=1e-12)


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    rng = np.random.default_rng(13)
    y = np.r_[np.zeros(300, int), np.ones(2000, int)]
    s = rng.random(len(y))
    counts = []

    def fake_mean(yb, sb):
        counts.append((int((yb == 0).sum()), int((yb == 1).sum())))
        return float(sb[yb == 1].mean())

    low, high = bootstrap_ci(y, s, fake_mean, n=400, seed=1)
    assert set(counts) == {(300, 2000)}  # stratified: every replicate keeps the class counts
    centre, half = s[y == 1].mean(), 1.96 * s[y == 1].std() / np.sqrt(2000)
    assert low == pytest.approx(centre - half, abs=0.25 * half)
    assert high == pytest.approx(centre + half, abs=0.25 * half)
    # Same seed, same interval; a wider alpha gives a narrower interval inside it.
    assert bootstrap_ci(y, s, fake_mean, n=400, seed=1) == (low, high)
    low90, high90 = bootstrap_ci(y, s, fake_mean, n=400, seed=1, alpha=0.1)
    assert low < low90 < high90 < high
    # Percentile interval: the quantiles of the replicate values themselves.
    values = []
    bootstrap_ci(y, s, lambda yb, sb: values.append(sb[yb == 1].mean()) or values[-1], n=400, seed=1)
    assert (low, high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])), abs=1e-15)
    # A perfect detector has a degenerate interval; an undefined metric gives NaN.
    y3, s3 = np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])
    assert bootstrap_ci(y3, s3, lambda a, b: binary_metrics(a, b)["acc"], n=50) == (1.0, 1.0)
    lo, hi = bootstrap_ci(np.array([1, 1]), np.array([0.3, 0.9]), lambda a, b: binary_metrics(a, b)["auroc"], n=20)
    assert math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(y3, s3, fake_mean, alpha=1.0)


def test_with_intervals_equals_bootstrap_ci_per_metric():
    rng = np.random.default_rng(14)
    source = np.array(["real"] * 150 + ["sdA"] * 60 + ["sdB"] * 90)
    y = (source != "real").astype(int)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1).round(2)  # with ties
    rows = with_intervals(per_generator(source, y, s), source, y, s, n=200, seed=3)
    assert [r["generator"] for r in rows] == ["sdA", "sdB", "all"]
    assert rows[0]["n_fake"] == 60 and rows[0]["auroc"] == per_generator(source, y, s)[0]["auroc"]
    for r in rows:
        keep = np.ones(len(y), bool) if r["generator"] == "all" else (y == 0) | (source == r["generator"])
        for m in INTERVAL_METRICS:
            want = bootstrap_ci(y[keep], s[keep], lambda a, b, m=m: binary_metrics(a, b)[m], n=200, seed=3)
            assert (r[f"{m}_low"], r[f"{m}_high"]) == pytest.approx(want, abs=1e-12)
            assert r[f"{m}_low"] <= r[m] + 1e-9 and r[m] - 1e-9 <= r[f"{m}_high"]
    assert set(rows[0]) >= {"acc_low", "acc_high", "ap_low", "ap_high", "auroc_low", "auroc_high",
                            "tpr_at_1fpr_low", "tpr_at_1fpr_high", "balanced_acc", "oracle_acc"}
    # A generator row without reals: ACC has an interval, the ranking metrics are undefined.
    only = with_intervals(per_generator(source[y == 1], y[y == 1], s[y == 1]), source[y == 1], y[y == 1],
                          s[y == 1], n=20)
    assert not math.isnan(only[0]["acc_low"]) and math.isnan(only[0]["auroc_low"])
    with pytest.raises(ValueError, match="sdZ"):
        with_intervals([{"generator": "sdZ"}], source, y, s, n=5)


# ---------------------------------------------------------------- reports


def test_markdown_report_has_notes_rows_and_dashes_for_nan():
    source, y, s = _eval_set()
    rows = per_generator(source, y, s)
    rows.append({"generator": "sdC", **binary_metrics(np.array([1, 1]), np.array([0.9, 0.1]))})
    md = markdown_report("logreg on lare", rows, ["split: test", "pool 4"])
    lines = md.splitlines()
    assert lines[0] == "# logreg on lare"
    assert "- split: test" in lines and "- pool 4" in lines
    assert "| generator | n_real | n_fake | ACC@0.5 | real ACC | fake ACC | AP | AUROC |" in lines
    for r in rows[:3]:
        want = [r["generator"], str(r["n_real"]), str(r["n_fake"])]
        want += [f"{r[k]:.3f}" for k in ("acc", "real_acc", "fake_acc", "ap", "auroc")]
        assert "| " + " | ".join(want) + " |" in lines
    assert "| sdC | 0 | 2 | 0.500 | — | 0.500 | — | — |" in lines


def test_format_table_aligns_the_same_columns():
    source, y, s = _eval_set()
    rows = per_generator(source, y, s)
    rows.append({"generator": "sdC", **binary_metrics(np.array([1]), np.array([0.9]))})
    rows[0]["auroc"] = None  # a null read back from Parquet
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:3] == ["generator", "n_real", "n_fake"] and "AUROC" in lines[0]
    body = lines[2:]
    assert len(body) == len(rows)
    assert len({len(line) for line in body}) == 1  # fixed width: numbers right-aligned to one edge
    for r, line in zip(rows, body, strict=True):
        cells = line.split()
        assert cells[0] == r["generator"] and cells[1] == str(r["n_real"])
        assert cells[7] == ("—" if r["auroc"] is None or math.isnan(r["auroc"]) else f"{r['auroc']:.3f}")
    with pytest.raises(KeyError, match="auroc"):
        format_table([{k: v for k, v in rows[0].items() if k != "auroc"}])
