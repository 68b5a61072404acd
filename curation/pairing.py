"""Pairing: link each generated image to the real image(s) it is to be compared with.

Three links, as the protocols of the field define them:
- `parent`: the fake was made from a real image (aligned fakes: VAE round trip, img2img, ...);
  its `parent_id` is the real's image_id.
- `caption`: the fake's prompt is a real image's caption (D³ / COCO protocol: one prompt per real
  image); real rows carry their caption's `prompt_id`, so the link is an equal `prompt_id`.
- `class`: the fake and the real share a class (GenImage protocol); each fake gets `k` real images
  of its class.

When several reals qualify (a class, or a caption two photos share), the choice is seeded and
made per fake: the key's reals are ordered by sha256(seed, image_id), and a fake takes k
consecutive ones (cyclically) from a start drawn from sha256(seed, its image_id). So a fake's
pairs depend on its id and the key's reals only: adding a generator (more fakes) changes no
existing pair, and with it nothing downstream (per-pair encodings, features). Every real is used
about equally (in expectation), the result does not depend on row order, and the work is linear.

Output (PAIRS): one row per input row. For a fake: `pair_id` = its first real (the one per-pair
normalization copies the encoding of), `reals` = all k, `pair_by` = the link used. For a real:
`pair_id` = itself when any fake links to it. `pair_group` joins everything linked directly or
through shared reals (connected components), so a split by pair keeps a real image and every fake
derived from it on one side.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
import pyarrow as pa

from aigi.manifests.schema import PAIRS

PAIR_BY = ("auto", "caption", "class", "parent", "none")
_COLUMNS = ("image_id", "label", "prompt_id", "class_id", "class_name", "parent_id")


def _order(seed: int, image_id: str) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def _class_key(class_id: int | None, class_name: str | None) -> str | None:
    if class_id is not None:
        return f"id:{class_id}"
    return f"name:{class_name}" if class_name is not None else None


def pair_rows(images: pa.Table, by: str = "auto", k: int = 1, seed: int = 0) -> pa.Table:
    """A PAIRS table for rows with image_id, label, prompt_id, class_id, class_name, parent_id.

    `auto` uses, per fake, the first link that exists: parent, then caption, then class. A parent
    that is not among the rows (dropped as a duplicate, or never ingested) leaves the fake unpaired
    rather than pointing at nothing. Output rows are in input order.
    """
    if by not in PAIR_BY:
        raise ValueError(f"pair by: expected one of {PAIR_BY}, got {by!r}")
    if k < 1:
        raise ValueError(f"pair k: must be >= 1, got {k}")
    missing = [c for c in _COLUMNS if c not in images.column_names]
    if missing:
        raise ValueError(f"pair_rows: input lacks column(s) {missing}")
    rows = images.select(list(_COLUMNS)).to_pylist()
    n = len(rows)
    ids = [r["image_id"] for r in rows]
    if len(set(ids)) != n:
        raise ValueError("pair_rows: image_id values are not unique")

    reals = [r for r in rows if r["label"] == 0]
    real_ids = {r["image_id"] for r in reals}
    by_caption: dict[str, list[str]] = defaultdict(list)
    by_class: dict[str, list[str]] = defaultdict(list)
    for r in reals:
        if r["prompt_id"] is not None:
            by_caption[r["prompt_id"]].append(r["image_id"])
        ck = _class_key(r["class_id"], r["class_name"])
        if ck is not None:
            by_class[ck].append(r["image_id"])

    # Which link and key each fake uses.
    link: dict[str, tuple[str, str]] = {}
    for r in rows:
        if r["label"] == 0 or by == "none":
            continue
        options = []
        if by in ("auto", "parent") and r["parent_id"] is not None and r["parent_id"] in real_ids:
            options.append(("parent", r["parent_id"]))
        if by in ("auto", "caption") and r["prompt_id"] in by_caption:
            options.append(("caption", r["prompt_id"]))
        ck = _class_key(r["class_id"], r["class_name"])
        if by in ("auto", "class") and ck in by_class:
            options.append(("class", ck))
        if options:
            link[r["image_id"]] = options[0]

    chosen: dict[str, list[str]] = {}
    fakes_by_key: dict[tuple[str, str], list[str]] = defaultdict(list)
    for fid, (how, key) in link.items():
        if how == "parent":
            chosen[fid] = [key]
        else:
            fakes_by_key[(how, key)].append(fid)
    for (how, key), fakes in fakes_by_key.items():
        pool = sorted((by_caption if how == "caption" else by_class)[key], key=lambda i: (_order(seed, i), i))
        take = min(k, len(pool))
        for fid in fakes:
            start = int(_order(seed, fid)[:16], 16) % len(pool)
            chosen[fid] = [pool[(start + t) % len(pool)] for t in range(take)]

    linked_reals = {rid for rs in chosen.values() for rid in rs}
    group = _components(ids, chosen)
    pair_id, pair_by, pair_reals, pair_group = [], [], [], []
    for r in rows:
        iid = r["image_id"]
        if iid in chosen:
            pair_id.append(chosen[iid][0])
            pair_by.append(link[iid][0])
            pair_reals.append(chosen[iid])
        else:
            pair_id.append(iid if iid in linked_reals else None)
            pair_by.append(None)
            pair_reals.append(None)
        pair_group.append(group.get(iid))
    return pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            images.column("label").cast(pa.int8()).combine_chunks(),
            pa.array(pair_by, pa.string()),
            pa.array(pair_id, pa.string()),
            pa.array(pair_reals, pa.list_(pa.string())),
            pa.array(pair_group, pa.string()),
        ],
        schema=PAIRS.arrow,
    )


def _components(ids: list[str], chosen: dict[str, list[str]]) -> dict[str, str]:
    """Connected components of the fake↔real links, named by their smallest real image_id."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    members = sorted({*chosen, *(r for rs in chosen.values() for r in rs)})
    if not members:
        return {}
    index = {m: i for i, m in enumerate(members)}
    a = [index[f] for f, rs in chosen.items() for _ in rs]
    b = [index[r] for rs in chosen.values() for r in rs]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(members), len(members)))
    _, labels = connected_components(graph, directed=False)
    names: dict[int, str] = {}
    reals = {r for rs in chosen.values() for r in rs}
    for m in members:  # sorted, so the first real seen in a component is its smallest
        if m in reals:
            names.setdefault(int(labels[index[m]]), m)
    return {m: "pair:" + names[int(labels[index[m]])] for m in members}
