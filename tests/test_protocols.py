"""Evaluation protocols: which images each fit saw, which were scored, and the rows they give.

The detector is a one-feature stump defined here: it learns a threshold (the midpoint of the two
class means of x[:, 0] over its train rows) and records every fit. The expected rows are rebuilt
in this file from the images each protocol should have trained on, with metrics written out by
hand (pairwise AUROC, thresholded accuracy).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from aigi.core.configtools import check  # noqa: E402
from aigi.detectors import protocols  # noqa: E402
from aigi.detectors.base import Detector  # noqa: E402
from aigi.detectors.data import FeatureSet  # noqa: E402

COLUMN = "f.x"
GENS = ["flux", "sdA", "sdB", "sdC"]
SHIFT = {"coco": 0.0, "sdA": 1.5, "sdB": 2.5, "sdC": 0.8, "flux": 3.0, "mystery": 2.0}
#: 1.0 shifted by 0.05 per seed: moves the threshold, so ACC depends on the seed, AUROC does not
SEED_SHIFT = 0.05


@dataclass(frozen=True)
class StumpConfig:
    feature: str = "f"
    column: str = "x"
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.seed >= 0, "seed", "must be >= 0")


class Stump(Detector):
    name = "stump"
    version = 1
    Config = StumpConfig

    def __init__(self, config: StumpConfig, log: list) -> None:
        super().__init__(config)
        self.log = log
        self.thr: float | None = None

    def fit(self, train: FeatureSet, val: FeatureSet | None = None) -> Stump:
        self.log.append({"train": set(train.ids.tolist()), "val": None if val is None else set(val.ids.tolist())})
        x, y = train.array(COLUMN)[:, 0], train.labels
        self.thr = float((x[y == 0].mean() + x[y == 1].mean()) / 2)
        return self

    def score(self, data: FeatureSet) -> np.ndarray:
        return expected_score(data.array(COLUMN)[:, 0], self.thr, self.config.seed)


def expected_score(x0: np.ndarray, thr: float, seed: int = 0) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x0 - thr - SEED_SHIFT * seed)))


def factory(log: list, seed: int = 0):
    return lambda: Stump(StumpConfig(seed=seed), log)


# ---------------------------------------------------------------- synthetic corpora


def corpus(seed: int = 0, sources=("coco", *GENS), n: int = 30) -> tuple[FeatureSet, np.ndarray]:
    """n images per source, x[:, 0] ~ N(SHIFT[source], 1); 50/20/30 % train/val/test per source."""
    rng = np.random.default_rng(seed)
    src, split = [], []
    for s in sources:
        src += [s] * n
        split += ["train"] * (n // 2) + ["val"] * (n // 5) + ["test"] * (n - n // 2 - n // 5)
    src = np.array(src)
    y = (src != "coco").astype(np.int64)
    x = rng.normal(0.0, 1.0, (len(src), 3))
    x[:, 0] += np.array([SHIFT[s] for s in src])
    ids = np.array([f"{s}-{i}" for i, s in enumerate(src)])
    return FeatureSet.from_arrays({COLUMN: x}, y, ids=ids, sources=src), np.array(split)


# ---------------------------------------------------------------- independent metrics


def pairwise_auroc(y: np.ndarray, s: np.ndarray) -> float:
    fake, real = s[y == 1][:, None], s[y == 0][None, :]
    return float(((fake > real) + 0.5 * (fake == real)).mean())


def reference_rows(data: FeatureSet, train_ids: set, test_mask: np.ndarray, seed: int = 0) -> dict[str, dict]:
    """generator -> {n_real, n_fake, acc, auroc}: a stump fitted on `train_ids`, scored on
    `test_mask`, each generator's test fakes with all test reals, and "all"."""
    x0 = data.arrays[COLUMN][:, 0]
    tr = np.isin(data.ids, list(train_ids))
    thr = (x0[tr & (data.labels == 0)].mean() + x0[tr & (data.labels == 1)].mean()) / 2
    y, src, s = data.labels[test_mask], data.sources[test_mask], expected_score(x0[test_mask], thr, seed)
    out = {}
    for g in [*sorted(set(src[y == 1].tolist())), "all"]:
        keep = (y == 0) | (src == g) if g != "all" else np.ones(len(y), bool)
        out[g] = {
            "n_real": int((y[keep] == 0).sum()),
            "n_fake": int((y[keep] == 1).sum()),
            "acc": float(((s[keep] >= 0.5) == (y[keep] == 1)).mean()),
            "auroc": pairwise_auroc(y[keep], s[keep]),
        }
    return out


def assert_row(row: dict, want: dict) -> None:
    assert row["n_real"] == want["n_real"] and row["n_fake"] == want["n_fake"]
    assert row["acc"] == pytest.approx(want["acc"])
    assert row["auroc"] == pytest.approx(want["auroc"])


def ids_where(data: FeatureSet, mask: np.ndarray) -> set:
    return set(data.ids[mask].tolist())


def assert_never_fit_on_test(log: list, data: FeatureSet, split: np.ndarray) -> None:
    test = ids_where(data, split == "test")
    assert log, "no fit was recorded"
    for call in log:
        assert not call["train"] & test
        assert call["val"] is None or not call["val"] & test


# ---------------------------------------------------------------- the protocols


def test_per_generator_trains_on_train_stops_on_val_and_scores_test():
    data, split = corpus()
    log: list = []
    res = protocols.per_generator(data, split, factory(log), intervals=False)
    assert len(log) == 1
    assert log[0]["train"] == ids_where(data, split == "train")
    assert log[0]["val"] == ids_where(data, split == "val")
    assert_never_fit_on_test(log, data, split)
    assert res.keys == ("generator",)
    assert [r["generator"] for r in res.rows] == [*GENS, "all"]
    want = reference_rows(data, log[0]["train"], split == "test")
    for r in res.rows:
        assert_row(r, want[r["generator"]])
    # the predictions are the test images, with the scores behind the rows
    assert set(res.predictions["image_id"].tolist()) == ids_where(data, split == "test")
    assert len(res.predictions["score"]) == int((split == "test").sum())


def test_per_generator_rows_keep_their_values_with_intervals_requested():
    data, split = corpus()
    log: list = []
    plain = protocols.per_generator(data, split, factory(log), intervals=False).rows
    full = protocols.per_generator(data, split, factory(log)).rows  # bootstrap when metrics has it
    assert [r["generator"] for r in full] == [r["generator"] for r in plain]
    for a, b in zip(full, plain, strict=True):
        for k, v in b.items():
            assert a[k] == (v if isinstance(v, str | int) else pytest.approx(v, nan_ok=True))


def test_cross_generator_matrix_trains_each_generator_alone():
    data, split = corpus()
    log: list = []
    res = protocols.cross_generator(data, split, factory(log), intervals=False)
    assert len(log) == len(GENS)
    assert_never_fit_on_test(log, data, split)
    real = data.labels == 0
    for g, call in zip(GENS, log, strict=True):
        assert call["train"] == ids_where(data, (split == "train") & (real | (data.sources == g)))
        assert call["val"] == ids_where(data, (split == "val") & (real | (data.sources == g)))
    # the matrix: every (train, test) pair once, plus the pooled test column "all"
    pairs = [(r["train_generator"], r["test_generator"]) for r in res.rows]
    assert pairs == list(itertools.product(GENS, [*GENS, "all"]))
    for g, call in zip(GENS, log, strict=True):
        want = reference_rows(data, call["train"], split == "test")
        for r in (r for r in res.rows if r["train_generator"] == g):
            assert_row(r, want[r["test_generator"]])
            assert r["n_real"] == int(((split == "test") & real).sum())  # all test reals, always
    assert len(res.predictions["score"]) == len(GENS) * int((split == "test").sum())


def test_leave_one_generator_out_never_trains_on_the_held_out_generator():
    data, split = corpus()
    log: list = []
    res = protocols.leave_one_out(data, split, factory(log), {g: g for g in GENS}, intervals=False)
    assert len(log) == len(GENS)
    assert_never_fit_on_test(log, data, split)
    real = data.labels == 0
    test = split == "test"
    for g, call in zip(GENS, log, strict=True):
        others = real | ((data.labels == 1) & (data.sources != g))
        assert call["train"] == ids_where(data, (split == "train") & others)
        assert call["val"] == ids_where(data, (split == "val") & others)
        assert not any(i.startswith(f"{g}-") for i in call["train"] | call["val"])
        rows = [r for r in res.rows if r["held_out"] == g]
        assert [r["generator"] for r in rows] == [g]  # one generator: no pooled duplicate
        want = reference_rows(data, call["train"], test & (real | (data.sources == g)))
        assert_row(rows[0], want[g])
    # None means the same as the identity
    again = protocols.leave_one_out(data, split, factory([]), None, intervals=False)
    assert again.rows == res.rows


def test_leave_one_family_out_holds_out_the_whole_family():
    data, split = corpus()
    family = {"sdA": "sd", "sdB": "sd", "sdC": "sd", "flux": "flux"}
    log: list = []
    res = protocols.leave_one_out(data, split, factory(log), family, intervals=False)
    assert len(log) == 2  # groups in name order: flux, sd
    assert_never_fit_on_test(log, data, split)
    real, test = data.labels == 0, split == "test"
    sd = np.isin(data.sources, ["sdA", "sdB", "sdC"])
    assert log[0]["train"] == ids_where(data, (split == "train") & ~(data.sources == "flux"))
    assert log[1]["train"] == ids_where(data, (split == "train") & ~sd)
    assert [(r["held_out"], r["generator"]) for r in res.rows] == [
        ("flux", "flux"), ("sd", "sdA"), ("sd", "sdB"), ("sd", "sdC"), ("sd", "all")]
    want = reference_rows(data, log[1]["train"], test & (real | sd))
    for r in res.rows[1:]:
        assert_row(r, want[r["generator"]])
    with pytest.raises(ValueError, match="no group for generator"):
        protocols.leave_one_out(data, split, factory([]), {"sdA": "sd"})
    with pytest.raises(ValueError, match="two groups"):
        protocols.leave_one_out(data, split, factory([]), dict.fromkeys(GENS, "all-in-one"))


def test_chronological_cuts_between_release_dates():
    data, split = corpus(sources=("coco", *GENS, "mystery"))
    release = {"sdA": "2022-08-22", "sdB": "2022-11-24", "sdC": "2022-11-24", "flux": "2024-08-01",
               "unused": "2020-01-01"}
    log: list = []
    res = protocols.chronological(data, split, factory(log), release, intervals=False)
    assert res.left_out == ["mystery"] and any("mystery" in n for n in res.notes)
    assert len(log) == 2
    assert_never_fit_on_test(log, data, split)
    real, test = data.labels == 0, split == "test"
    cuts = {"2022-08-22": (["sdA"], ["flux", "sdB", "sdC"]), "2022-11-24": (["sdA", "sdB", "sdC"], ["flux"])}
    for (cut, (before, after)), call in zip(cuts.items(), log, strict=True):
        assert call["train"] == ids_where(data, (split == "train") & (real | np.isin(data.sources, before)))
        assert call["val"] == ids_where(data, (split == "val") & (real | np.isin(data.sources, before)))
        rows = [r for r in res.rows if r["cut"] == cut]
        assert [r["generator"] for r in rows] == [*after, "all"]
        assert {r["train_generators"] for r in rows} == {" ".join(before)}
        want = reference_rows(data, call["train"], test & (real | np.isin(data.sources, after)))
        for r in rows:
            assert_row(r, want[r["generator"]])
    # an undated generator is in no fit and no evaluation
    assert not any(i.startswith("mystery-") for c in log for i in c["train"] | c["val"])
    assert "mystery" not in set(res.predictions["source"].tolist())
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        protocols.chronological(data, split, factory([]), {**release, "mystery": "last spring"})
    with pytest.raises(ValueError, match="two release dates"):
        protocols.chronological(data, split, factory([]), dict.fromkeys(GENS, "2023-01-01"))


def test_robustness_trains_on_clean_rows_and_grids_variants_by_generator():
    clean, split0 = corpus()
    variants = {"none": 0.0, "jpeg75": -0.7, "blur1": -1.2}  # a perturbation pulls fakes to reals
    x, y, ids, src, split, var = [], [], [], [], [], []
    for v, pull in variants.items():
        xv = clean.arrays[COLUMN].copy()
        xv[:, 0] += pull * clean.labels
        x.append(xv)
        y.append(clean.labels)
        ids.append(np.char.add(clean.ids, f"@{v}"))
        src.append(clean.sources)
        split.append(split0)
        var.append(np.full(len(clean), v))
    data = FeatureSet.from_arrays({COLUMN: np.concatenate(x)}, np.concatenate(y), ids=np.concatenate(ids),
                                  sources=np.concatenate(src))
    split, var = np.concatenate(split), np.concatenate(var)
    log: list = []
    res = protocols.robustness(data, split, factory(log), var, intervals=False)
    assert len(log) == 1
    assert_never_fit_on_test(log, data, split)
    assert log[0]["train"] == ids_where(data, (split == "train") & (var == "none"))
    assert log[0]["val"] == ids_where(data, (split == "val") & (var == "none"))
    assert [(r["variant"], r["generator"]) for r in res.rows] == list(
        itertools.product(["none", "blur1", "jpeg75"], [*GENS, "all"]))
    for v in variants:
        want = reference_rows(data, log[0]["train"], (split == "test") & (var == v))
        for r in (r for r in res.rows if r["variant"] == v):
            assert_row(r, want[r["generator"]])
    acc = {r["variant"]: r["acc"] for r in res.rows if r["generator"] == "all"}
    assert acc["none"] > acc["jpeg75"] > acc["blur1"]
    assert (res.predictions["variant"] == var[split == "test"]).all()
    with pytest.raises(ValueError, match="no train rows"):
        protocols.robustness(data, split, factory([]), np.full(len(data), "jpeg75"))


def test_over_seeds_gives_mean_and_std_of_each_metric():
    data, split = corpus()
    log: list = []
    seeds = [0, 3, 7]

    def run(seed: int) -> protocols.Result:
        make = protocols.reseed(factory(log), seed)
        return protocols.per_generator(data, split, make, intervals=False)

    res = protocols.over_seeds(run, seeds)
    assert len(res.runs) == 3 and len(log) == 3
    want = [reference_rows(data, log[0]["train"], split == "test", seed=s) for s in seeds]
    for r in res.rows:
        accs = np.array([w[r["generator"]]["acc"] for w in want])
        assert r["acc"] == pytest.approx(accs.mean())
        assert r["acc_std"] == pytest.approx(accs.std(ddof=1))
        assert r["auroc_std"] == pytest.approx(0.0, abs=1e-12)  # a shift does not reorder
        assert r["n_real"] == want[0][r["generator"]]["n_real"] and r["n_seeds"] == 3
    assert any(r["acc_std"] > 0 for r in res.rows)
    # a count is seeds 0..n-1; one seed has std 0
    one = protocols.over_seeds(run, 1)
    assert all(r["acc_std"] == 0.0 for r in one.rows)


def test_a_val_split_with_one_class_is_not_used():
    data, split = corpus()
    split = np.where((split == "val") & (data.labels == 1), "train", split)
    log: list = []
    res = protocols.per_generator(data, split, factory(log), intervals=False)
    assert log[0]["val"] is None and any("val" in n for n in res.notes)


def test_bad_splits_are_refused():
    data, split = corpus()
    with pytest.raises(ValueError, match="unknown split"):
        protocols.per_generator(data, np.where(split == "val", "valid", split), factory([]))
    with pytest.raises(ValueError, match="no test images"):
        protocols.per_generator(data, np.where(split == "test", "val", split), factory([]))
    with pytest.raises(ValueError, match="split must be"):
        protocols.per_generator(data, split[:-1], factory([]))


# ---------------------------------------------------------------- reports of protocol results


def test_protocol_report_states_the_policy_with_every_table_and_links_plots():
    from aigi.detectors import report

    data, split = corpus()
    cross = protocols.cross_generator(data, split, factory([]), intervals=False)
    loo = protocols.leave_one_out(data, split, factory([]), intervals=False)
    md = report.protocol_report(
        "stump on f", [report.section(cross, plots={"AUROC matrix": "plots/matrix.png"}), report.section(loo)],
        ["threshold 0.5"], preprocessing="x: 3 numbers, no resize", normalization="PNG, 256 center crop",
    )
    lines = md.splitlines()
    assert lines[0] == "# stump on f" and "- threshold 0.5" in lines
    assert lines.count("*Feature preprocessing:* x: 3 numbers, no resize  ") == 2  # one per table
    assert lines.count("*Corpus normalization:* PNG, 256 center crop  ") == 2
    assert "![AUROC matrix](plots/matrix.png)" in lines
    assert "## cross generator" in lines and "## leave one out" in lines
    header = next(line for line in lines if line.startswith("| train generator"))
    assert header.startswith("| train generator | test generator | n real | n fake | ACC@0.5 |")
    r = cross.rows[1]
    assert f"| {r['train_generator']} | {r['test_generator']} | {r['n_real']} | {r['n_fake']} | {r['acc']:.3f} |" in md
    assert "| sdA | sdA |" in md  # leave_one_out: held out, generator


def test_markdown_report_keeps_its_fixed_columns_and_adds_the_policy():
    from aigi.detectors import report

    data, split = corpus()
    rows = protocols.per_generator(data, split, factory([])).rows  # with intervals if available
    legacy = report.markdown_report("t", rows, ["n"])
    assert "| generator | n_real | n_fake | ACC@0.5 | real ACC | fake ACC | AP | AUROC |" in legacy
    assert "Feature preprocessing" not in legacy and "[" not in legacy.split("| all |")[1].splitlines()[0]
    md = report.markdown_report("t", rows, ["n"], preprocessing="pp", normalization="nn",
                                plots=["plots/roc.png"], columns="auto", keys=("generator",))
    lines = md.splitlines()
    top = lines.index("*Feature preprocessing:* pp  ")
    assert lines[top + 1] == "*Corpus normalization:* nn  " and lines[top + 3].startswith("| generator |")
    assert "![roc](plots/roc.png)" in lines
    # a seed spread shows as "mean ± std", a bootstrap interval as "value [low, high]"
    spread = [{"generator": "a", "n_real": 3, "n_fake": 4, "acc": 0.5, "acc_std": 0.25}]
    assert "| a | 3 | 4 | 0.500 ± 0.250 |" in report.markdown_report("s", spread, [], columns="auto")
    ci = [{"generator": "a", "n_real": 3, "n_fake": 4, "auroc": 0.9, "auroc_low": 0.8, "auroc_high": 0.95}]
    assert "| a | 3 | 4 | 0.900 [0.800, 0.950] |" in report.markdown_report("s", ci, [], columns="auto")
    assert report.format_table(spread, columns="auto").splitlines()[2].split() == ["a", "3", "4", "0.500", "±", "0.250"]
    with pytest.raises(ValueError, match="columns"):
        report.markdown_report("s", spread, [], columns="all")
