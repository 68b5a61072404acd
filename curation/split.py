"""Leakage-safe train/val/test splits: whole groups (prompt, class, pair, ...) go to one split.

A group is split as a unit across every source: the same prompt rendered by two generators, or
the same class seen in real and generated images, lands in one split, so a detector is never
evaluated on a prompt or class it was trained on.

Assignment is stratified by the labels a group holds, so each split gets its share of groups
with only real images, with only generated ones, and with both (a class seen in real and
generated images; a real photo with the fakes made from it). Within each stratum the distinct
groups are ordered by sha256(f"{seed}:{group}") and cut by the fractions (largest-remainder
rounding; every split with a non-zero fraction gets at least one group when there are enough
groups). Each stratum is cut as if it were alone, so each label's rows follow the fractions.

Groups: `prompt`, `class`, `image`; `real` (the real image a row is paired with: a real and its
fakes), `pair` (the connected component of pair links: with k reals per fake, everything linked).
Three things can widen a group before the cut:
- `links` (near-duplicate pairs, when asked to merge): the groups of two linked images become one,
  so no near-duplicate straddles two splits;
- `holdout` (generator sources held out of training, e.g. every fine-tune of a family): their
  images, and every group they touch, go to `test`, so neither the held-out generators nor the
  prompts, classes or reals they were made from are seen in training.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aigi.manifests.schema import SPLIT_AUDIT, SPLITS

SPLIT_NAMES = ("train", "val", "test")
SPLIT_BY = ("prompt", "class", "image", "real", "pair")

# The key a group is named by, in fallback order, with the prefix recorded in `group`.
_KEYS = {
    "prompt": (("prompt:", "prompt_id"), ("class:", "class_name"), ("image:", "image_id")),
    "class": (("class:", "class_name"), ("prompt:", "prompt_id"), ("image:", "image_id")),
    "image": (("image:", "image_id"),),
    "real": (("real:", "pair_id"), ("image:", "image_id")),
    "pair": (("", "pair_group"), ("image:", "image_id")),
}
_COLUMNS = ("image_id", "source", "label", "prompt_id", "class_name")
_PAIR_COLUMNS = {"real": "pair_id", "pair": "pair_group"}


def check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    """Three finite, non-negative numbers summing to 1 (within 1e-6), else ValueError."""
    fr = tuple(fractions)
    if len(fr) != 3:
        raise ValueError(f"split fractions: expected 3 values (train, val, test), got {len(fr)}")
    if not all(isinstance(f, numbers.Real) and not isinstance(f, bool) and math.isfinite(f) and f >= 0 for f in fr):
        raise ValueError(f"split fractions: must be finite and non-negative, got {fr}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"split fractions: must sum to 1, got {fr} (sum {sum(fr)})")
    return fr  # type: ignore[return-value]


def split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """How many of `n` ordered groups go to each split (largest remainder, min one per split)."""
    exact = [Fraction(f) for f in fractions]
    total = sum(exact)
    quotas = [n * f / total for f in exact]  # exact rationals: no float drift in the rounding
    counts = [math.floor(q) for q in quotas]
    left = n - sum(counts)
    by_remainder = sorted(range(3), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[:left]:
        counts[i] += 1
    nonzero = [i for i in range(3) if exact[i] > 0]
    if n >= len(nonzero):
        for i in nonzero:
            if counts[i] == 0:
                # Some other split holds >= 2 here, since n >= number of non-zero splits.
                donor = max(range(3), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def _order_key(seed: int, group: str) -> str:
    return hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()


def _group_keys(rows: pa.Table, by: str) -> pa.ChunkedArray:
    candidates = [
        pc.binary_join_element_wise(prefix, rows.column(col).cast(pa.string()), "")
        for prefix, col in _KEYS[by]
    ]
    return candidates[0] if len(candidates) == 1 else pc.coalesce(*candidates)


def assign_splits(
    rows: pa.Table,
    by: str,
    fractions: tuple[float, float, float],
    seed: int,
    holdout: frozenset[str] | set[str] = frozenset(),
    links: list[tuple[str, str]] | None = None,
) -> pa.Table:
    """A SPLITS table: one row per input row, in input order, with its group and split.

    `rows` needs columns image_id, source, label, prompt_id, class_name (and pair_id / pair_group
    for a split by real / pair). `holdout` names sources whose images (and their groups) go to
    test; `links` are (image_id, image_id) pairs whose groups are merged. Same rows and seed give
    the same splits whatever the row order.
    """
    if by not in SPLIT_BY:
        raise ValueError(f"split by: expected one of {SPLIT_BY}, got {by!r}")
    fractions = check_fractions(fractions)
    need = [*_COLUMNS, *([_PAIR_COLUMNS[by]] if by in _PAIR_COLUMNS else [])]
    missing = [c for c in need if c not in rows.column_names]
    if missing:
        raise ValueError(f"assign_splits: input lacks column(s) {missing}")
    for col in ("image_id", "label"):
        if rows.column(col).null_count:
            raise ValueError(f"assign_splits: column {col!r} has null values")

    if rows.num_rows == 0:
        return SPLITS.arrow.empty_table()

    groups = _group_keys(rows, by)
    if links:
        groups = _merge_groups(rows.column("image_id"), groups, links)
    labels = rows.column("label")
    forced: list[str] = []
    if holdout:
        held = pc.is_in(rows.column("source"), value_set=pa.array(sorted(holdout), pa.string()))
        forced = sorted(pc.unique(pc.filter(groups, held)).to_pylist())
    decided: list[str] = list(forced)
    decided_split: list[int] = [SPLIT_NAMES.index("test")] * len(forced)
    done = set(forced)
    for stratum in _strata(groups, labels, done):
        ordered = sorted(stratum, key=lambda g: (_order_key(seed, g), g))
        counts = split_counts(len(ordered), fractions)
        decided.extend(ordered)
        decided_split.extend(np.repeat(np.arange(3), counts).tolist())

    where = pc.index_in(groups, value_set=pa.array(decided, pa.string())).to_numpy(
        zero_copy_only=False
    )
    split = pa.array(np.array(SPLIT_NAMES, dtype=object)[np.array(decided_split)[where]], pa.string())
    return pa.Table.from_arrays(
        [
            rows.column("image_id").cast(pa.string()),
            rows.column("source").cast(pa.string()),
            labels.cast(pa.int8()),
            groups,
            split,
        ],
        schema=SPLITS.arrow,
    )


def _strata(groups: pa.ChunkedArray, labels: pa.ChunkedArray, skip: set[str]) -> list[list[str]]:
    """The groups not in `skip`, in strata of equal label sets (real only, generated only, both),
    in a fixed order."""
    pairs = pa.table({"g": groups, "l": labels.cast(pa.int8())}).group_by("g").aggregate([("l", "distinct")])
    by_set: dict[tuple[int, ...], list[str]] = {}
    for g, ls in zip(pairs.column("g").to_pylist(), pairs.column("l_distinct").to_pylist(), strict=True):
        if g not in skip:
            by_set.setdefault(tuple(sorted(ls)), []).append(g)
    return [by_set[k] for k in sorted(by_set)]


def _merge_groups(ids: pa.ChunkedArray, groups: pa.ChunkedArray, links: list[tuple[str, str]]) -> pa.ChunkedArray:
    """Groups joined through `links`; a merged group is named by its smallest member group."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    names = pc.unique(groups).to_pylist()
    index = {g: i for i, g in enumerate(names)}
    of_image = dict(zip(ids.to_pylist(), groups.to_pylist(), strict=True))
    pairs = [(index[of_image[a]], index[of_image[b]]) for a, b in links if a in of_image and b in of_image]
    if not pairs:
        return groups
    a, b = zip(*pairs, strict=True)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(names), len(names)))
    _, comp = connected_components(graph, directed=False)
    smallest: dict[int, str] = {}
    for g in sorted(names):
        smallest.setdefault(int(comp[index[g]]), g)
    renamed = np.array([smallest[int(comp[index[g]])] for g in names], dtype=object)
    where = pc.index_in(groups, value_set=pa.array(names, pa.string())).to_numpy(zero_copy_only=False)
    return pa.chunked_array([pa.array(renamed[where], pa.string())])


def straddling(splits: pa.Table, pairs: pa.Table) -> pa.Table:
    """SPLIT_AUDIT rows for near-duplicate `pairs` (image_id_a, image_id_b, distance) whose two
    images both have a split; `straddles` marks the pairs split across train/val/test."""
    split_of = dict(zip(splits.column("image_id").to_pylist(), splits.column("split").to_pylist(), strict=True))
    out: dict[str, list] = {f.name: [] for f in SPLIT_AUDIT.arrow}
    for a, b, d in zip(*(pairs.column(c).to_pylist() for c in ("image_id_a", "image_id_b", "distance")), strict=True):
        if a in split_of and b in split_of:
            for key, value in zip(
                SPLIT_AUDIT.arrow.names, (a, b, d, split_of[a], split_of[b], split_of[a] != split_of[b]), strict=True
            ):
                out[key].append(value)
    return pa.table(out, schema=SPLIT_AUDIT.arrow)
