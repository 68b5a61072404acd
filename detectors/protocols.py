"""Evaluation protocols: which images a detector trains on and which it is tested on.

Every protocol takes the images of a corpus (`FeatureSet`), their split ("train" / "val" /
"test", a separate (N,) array) and a factory `make() -> Detector` that gives a fresh, unfitted
detector. A detector is fitted on train rows only, with the val rows of the same selection for
early stopping; the test rows reach `score` and never `fit`. Test metrics pair each generator's
fakes with *all* real test images (GenImage-style, methods.md §7).

- `per_generator`: one model on everything, a row per generator and "all".
- `cross_generator`: GenImage's matrix, a model per training generator, every generator tested.
- `leave_one_out`: a model per held-out group (a generator, or a family), tested on that group.
- `chronological`: a model per cut between release dates, tested on what came later.
- `robustness`: one model on unperturbed rows, tested on each perturbation variant.
- `over_seeds`: any of them repeated over detector seeds, as mean and standard deviation.

Each returns a `Result`: a long table (`rows`, one dict per row, the protocol's key columns
first), the test predictions behind it, and notes for the report.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from aigi.detectors import metrics as _metrics
from aigi.detectors.metrics import ALL

if TYPE_CHECKING:
    from aigi.detectors.base import Detector
    from aigi.detectors.data import FeatureSet

SPLITS = ("train", "val", "test")
#: The variant name of unperturbed images (`robustness`).
CLEAN = "none"
#: Row keys that count images; they are equal across seeds and kept, not averaged.
COUNTS = ("n_real", "n_fake")

Make = Callable[[], "Detector"]


@dataclass
class Result:
    protocol: str
    #: the columns that name a row (e.g. ("train_generator", "test_generator")); metrics follow
    keys: tuple[str, ...]
    rows: list[dict[str, Any]]
    #: test predictions, column -> (M,) array: image_id, source, label, score and the key of the
    #: model that made them (e.g. train_generator); empty after `over_seeds`
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: generators the protocol could not place (e.g. no release date), by name
    left_out: list[str] = field(default_factory=list)
    #: `over_seeds`: the result of each seed, in order
    runs: list[Result] = field(default_factory=list)


# ---------------------------------------------------------------- the protocols


def per_generator(data: FeatureSet, split: np.ndarray, make: Make, *, intervals: bool = True) -> Result:
    """Train on all train images; a test row per generator (its fakes vs all test reals), then "all"."""
    split = _check_split(data, split)
    everything = np.ones(len(data), dtype=bool)
    det, notes = _fit(data, split, make, everything)
    test = split == "test"
    score = _score(det, data, test)
    rows = _rows(data.sources[test], data.labels[test], score, intervals)
    return Result("per_generator", ("generator",), rows, _predictions(data, test, score), notes)


def cross_generator(data: FeatureSet, split: np.ndarray, make: Make, *, intervals: bool = True) -> Result:
    """GenImage's matrix: for each generator i, train on i's train fakes and all train reals; test
    every generator j's test fakes against all test reals (plus j = "all", every test fake)."""
    split = _check_split(data, split)
    gens = _generators(data)
    real = data.labels == 0
    test = split == "test"
    rows, preds, notes = [], [], []
    for g in gens:
        det, fit_notes = _fit(data, split, make, real | (data.sources == g), g)
        notes += fit_notes
        score = _score(det, data, test)
        for r in _rows(data.sources[test], data.labels[test], score, intervals):
            rows.append({"train_generator": g, "test_generator": r.pop("generator"), **r})
        preds.append(_predictions(data, test, score, train_generator=g))
    return Result("cross_generator", ("train_generator", "test_generator"), rows, _concat(preds), notes)


def leave_one_out(
    data: FeatureSet, split: np.ndarray, make: Make, groups: Mapping[str, str] | None = None, *,
    intervals: bool = True,
) -> Result:
    """For each group: train without the group's fakes (all reals kept), test the group's test
    fakes against all test reals. `groups` maps every generator to its group: the identity (or
    None) gives leave-one-generator-out, a family map leave-one-family-out. Rows: the held-out
    group's generators, then the group pooled as "all" when it has more than one."""
    split = _check_split(data, split)
    gens = _generators(data)
    groups = {g: g for g in gens} if groups is None else dict(groups)
    missing = [g for g in gens if g not in groups]
    if missing:
        raise ValueError(f"leave_one_out: no group for generator(s) {', '.join(missing)}")
    names = sorted({groups[g] for g in gens})
    if len(names) < 2:
        raise ValueError(f"leave_one_out: needs at least two groups, got {names}")
    group_of = np.array([groups.get(s, "") for s in data.sources.tolist()], dtype=object)
    real = data.labels == 0
    rows, preds, notes = [], [], []
    for held in names:
        inside = (data.labels == 1) & (group_of == held)
        det, fit_notes = _fit(data, split, make, ~inside, held)
        notes += fit_notes
        test = (split == "test") & (real | inside)
        score = _score(det, data, test)
        members = sorted(g for g in gens if groups[g] == held)
        for r in _rows(data.sources[test], data.labels[test], score, intervals):
            if r["generator"] != ALL or len(members) > 1:
                rows.append({"held_out": held, **r})
        preds.append(_predictions(data, test, score, held_out=held))
    return Result("leave_one_out", ("held_out", "generator"), rows, _concat(preds), notes)


def chronological(
    data: FeatureSet, split: np.ndarray, make: Make, release: Mapping[str, str], *, intervals: bool = True
) -> Result:
    """For each cut between consecutive release dates: train on the generators released on or
    before it, test those released after against all test reals. Generators without a date are
    used nowhere and listed in `left_out`."""
    split = _check_split(data, split)
    gens = _generators(data)
    dated = {g: _date(g, release[g]) for g in gens if g in release}
    left_out = [g for g in gens if g not in dated]
    days = sorted(set(dated.values()))
    if len(days) < 2:
        raise ValueError(f"chronological: needs generators with at least two release dates, got {days}")
    real = data.labels == 0
    rows, preds, notes = [], [], []
    if left_out:
        notes.append(f"left out (no release date): {', '.join(left_out)}")
    for day in days[:-1]:
        cut = day.isoformat()
        before = sorted(g for g, d in dated.items() if d <= day)
        after = sorted(g for g, d in dated.items() if d > day)
        det, fit_notes = _fit(data, split, make, real | np.isin(data.sources, before), f"cut {cut}")
        notes += fit_notes
        test = (split == "test") & (real | np.isin(data.sources, after))
        score = _score(det, data, test)
        for r in _rows(data.sources[test], data.labels[test], score, intervals):
            rows.append({"cut": cut, "train_generators": " ".join(before), **r})
        preds.append(_predictions(data, test, score, cut=cut))
    return Result("chronological", ("cut", "generator"), rows, _concat(preds), notes, left_out)


def robustness(
    data: FeatureSet, split: np.ndarray, make: Make, variant: np.ndarray, *, intervals: bool = True
) -> Result:
    """Train on unperturbed ("none") train rows; a grid of test rows, variant x generator (each
    variant's generated images vs that variant's real images, then "all")."""
    split = _check_split(data, split)
    variant = np.asarray(variant).astype(str)
    if variant.shape != (len(data),):
        raise ValueError(f"robustness: variant must be ({len(data)},), got {variant.shape}")
    clean = variant == CLEAN
    if not (clean & (split == "train")).any():
        raise ValueError(f"robustness: no train rows with variant {CLEAN!r}")
    det, notes = _fit(data, split, make, clean)
    test = split == "test"
    score = _score(det, data, test)
    v_test = variant[test]
    rows = []
    # the clean variant first, then the perturbations by name
    for v in sorted(set(v_test.tolist()), key=lambda v: (v != CLEAN, v)):
        m = v_test == v
        for r in _rows(data.sources[test][m], data.labels[test][m], score[m], intervals):
            rows.append({"variant": v, **r})
    preds = _predictions(data, test, score)
    preds["variant"] = v_test
    return Result("robustness", ("variant", "generator"), rows, preds, notes)


def over_seeds(fn: Callable[[int], Result], seeds: int | Sequence[int]) -> Result:
    """Run `fn(seed)` (a protocol whose detector uses `seed`, see `reseed`) for each seed; each
    metric becomes its mean over seeds with `<metric>_std` (sample std, ddof=1; 0 for one seed)
    beside it. Bootstrap bounds (`_low` / `_high`) of single runs are dropped: the spread over
    seeds replaces them. `seeds`: a list, or a count n for seeds 0..n-1."""
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise ValueError("over_seeds: needs at least one seed")
    runs = [fn(s) for s in seeds]
    first = runs[0]
    keyed = [{tuple(r[k] for k in first.keys): r for r in run.rows} for run in runs]
    for s, k in zip(seeds[1:], keyed[1:], strict=True):
        if list(k) != list(keyed[0]):
            raise ValueError(f"over_seeds: seed {s} gave different rows than seed {seeds[0]}")
    rows = []
    for key, row in keyed[0].items():
        same = [k[key] for k in keyed]
        out: dict[str, Any] = {}
        for name, value in row.items():
            if name.endswith(("_low", "_high")):
                continue
            if name in first.keys or name in COUNTS or not _is_float(value):
                out[name] = value
                continue
            vals = np.array([_float(r.get(name)) for r in same])
            out[name] = float(np.mean(vals))
            out[f"{name}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        out["n_seeds"] = len(seeds)
        rows.append(out)
    notes = [*first.notes, f"mean and std over detector seeds {', '.join(map(str, seeds))}"]
    return Result(first.protocol, first.keys, rows, {}, notes, first.left_out, runs)


def reseed(make: Make, seed: int) -> Make:
    """`make` with the detector's `config.seed` replaced by `seed`. A head without a seed (a
    deterministic one) is returned as is: its runs are identical and their std is 0."""

    def made() -> Detector:
        det = make()
        if any(f.name == "seed" for f in dataclasses.fields(det.config)):
            det.config = dataclasses.replace(det.config, seed=seed)
        return det

    return made


# ---------------------------------------------------------------- shared steps


def _check_split(data: FeatureSet, split: np.ndarray) -> np.ndarray:
    split = np.asarray(split).astype(str)
    if split.shape != (len(data),):
        raise ValueError(f"protocols: split must be ({len(data)},), got {split.shape}")
    bad = sorted(set(split.tolist()) - set(SPLITS))
    if bad:
        raise ValueError(f"protocols: unknown split name(s) {bad}; expected {SPLITS}")
    if not (split == "test").any():
        raise ValueError("protocols: no test images")
    return split


def _generators(data: FeatureSet) -> list[str]:
    gens = sorted(set(data.sources[data.labels == 1].tolist()))
    if ALL in gens:
        raise ValueError(f"protocols: a generator may not be named {ALL!r}: it names the pooled rows")
    if not gens:
        raise ValueError("protocols: no generated images")
    return gens


def _fit(data: FeatureSet, split: np.ndarray, make: Make, keep: np.ndarray, what: str = "") -> tuple[Detector, list[str]]:
    """A fresh detector fitted on the kept train rows, early-stopping on the kept val rows."""
    train = data.subset((split == "train") & keep)
    val_mask = (split == "val") & keep
    notes = []
    val = None
    if val_mask.any():
        if set(np.unique(data.labels[val_mask]).tolist()) == {0, 1}:
            val = data.subset(val_mask)
        else:
            notes.append(f"{what or 'model'}: val holds one class only; trained without val")
    det = make()
    fitted = det.fit(train, val)
    return (det if fitted is None else fitted), notes


def _score(det: Detector, data: FeatureSet, mask: np.ndarray) -> np.ndarray:
    n = int(mask.sum())
    score = np.asarray(det.score(data.subset(mask)), dtype=np.float64)
    if score.shape != (n,):
        raise ValueError(f"{det.name}: score() returned shape {score.shape} for {n} images")
    return score


def _rows(source: np.ndarray, y: np.ndarray, score: np.ndarray, intervals: bool) -> list[dict]:
    """Metric rows per generator + "all"; with `intervals`, each metric's bootstrap interval
    (`metrics.with_intervals`: 1000 stratified replicates, seed 0, 95 %) where the module has it."""
    rows = _metrics.per_generator(source, y, score)
    fn = getattr(_metrics, "with_intervals", None)
    return list(fn(rows, source, y, score)) if intervals and fn is not None else rows


def _predictions(data: FeatureSet, mask: np.ndarray, score: np.ndarray, **key: str) -> dict[str, np.ndarray]:
    out = {name: np.full(int(mask.sum()), value) for name, value in key.items()}
    out.update(image_id=data.ids[mask], source=data.sources[mask], label=data.labels[mask], score=score)
    return out


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _date(generator: str, value: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"chronological: release date of {generator!r} must be YYYY-MM-DD, got {value!r}") from None


def _is_float(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)))


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)
