"""Pairing real and generated images, and splits that keep pairs, held-out generators and
near-duplicates from leaking."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from aigi.curation.pairing import pair_rows
from aigi.curation.split import assign_splits, straddling
from aigi.manifests.schema import PAIRS

COLS = ("image_id", "label", "source", "prompt_id", "class_id", "class_name", "parent_id")


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{c: r.get(c) for c in COLS} for r in rows],
        schema=pa.schema([("image_id", pa.string()), ("label", pa.int8()), ("source", pa.string()),
                          ("prompt_id", pa.string()), ("class_id", pa.int32()),
                          ("class_name", pa.string()), ("parent_id", pa.string())]),
    )


def real(i: str, **kw) -> dict:
    return {"image_id": i, "label": 0, "source": "real", **kw}


def fake(i: str, source: str = "g", **kw) -> dict:
    return {"image_id": i, "label": 1, "source": source, **kw}


def by_id(t: pa.Table) -> dict[str, dict]:
    return {r["image_id"]: r for r in t.to_pylist()}


def test_caption_pairing_links_the_real_whose_caption_was_the_prompt() -> None:
    rows = [real("r1", prompt_id="p1"), real("r2", prompt_id="p2"), real("r3", prompt_id="p3"),
            fake("f1", prompt_id="p2"), fake("f2", prompt_id="p1"), fake("f3", prompt_id="p9")]
    out = pair_rows(table(rows), by="caption")
    assert out.schema == PAIRS.arrow
    got = by_id(out)
    assert (got["f1"]["pair_id"], got["f1"]["pair_by"], got["f1"]["reals"]) == ("r2", "caption", ["r2"])
    assert got["f2"]["pair_id"] == "r1"
    assert got["f3"]["pair_id"] is None and got["f3"]["pair_by"] is None  # no real has its caption
    assert got["r1"]["pair_id"] == "r1" and got["r3"]["pair_id"] is None  # r3 has no fake
    assert got["f1"]["pair_group"] == got["r2"]["pair_group"] != got["f2"]["pair_group"]
    assert out.column("image_id").to_pylist() == [r["image_id"] for r in rows]


def test_class_pairing_gives_k_reals_of_the_class_spread_seeded_and_stable() -> None:
    rows = [real(f"r{c}{i}", class_id=c) for c in range(2) for i in range(4)]
    rows += [fake(f"f{c}{j}", class_id=c) for c in range(2) for j in range(400)]
    out = by_id(pair_rows(table(rows), by="class", k=2, seed=3))
    use: Counter = Counter()
    for c in range(2):
        for j in range(400):
            reals = out[f"f{c}{j}"]["reals"]
            assert len(reals) == 2 == len(set(reals))
            assert all(r.startswith(f"r{c}") for r in reals)  # same class only
            use.update(reals)
    # 400 fakes x 2 reals over 4 reals: 200 each in expectation (binomial sd 10)
    assert all(150 <= n <= 250 for n in use.values()) and len(use) == 8
    # a new generator's fakes change no existing pair (nothing downstream is redone)
    more = by_id(pair_rows(table(rows + [fake(f"g{j}", source="new", class_id=0) for j in range(50)]),
                           by="class", k=2, seed=3))
    assert all(more[i]["reals"] == v["reals"] for i, v in out.items())
    again = by_id(pair_rows(table(list(reversed(rows))), by="class", k=2, seed=3))
    assert all(again[i]["reals"] == out[i]["reals"] for i in out)  # row order does not matter
    other = by_id(pair_rows(table(rows), by="class", k=2, seed=4))
    assert any(other[i]["reals"] != out[i]["reals"] for i in out if i.startswith("f"))
    # a fake shares its pair group with each of its k reals (linked, so inseparable in a split)
    assert all(out[r]["pair_group"] == v["pair_group"] for v in out.values() if v["reals"] for r in v["reals"])


def test_parent_pairing_and_auto_order() -> None:
    rows = [real("r1", prompt_id="p1", class_id=5), real("r2", prompt_id="p2", class_id=5),
            fake("a", parent_id="r2", prompt_id="p1", class_id=5),  # parent wins in auto
            fake("b", prompt_id="p1", class_id=5),  # then caption
            fake("c", class_id=5),  # then class
            fake("d", parent_id="gone", class_id=7)]  # a parent that is not there: unpaired
    out = by_id(pair_rows(table(rows), by="auto"))
    assert (out["a"]["pair_by"], out["a"]["pair_id"]) == ("parent", "r2")
    assert (out["b"]["pair_by"], out["b"]["pair_id"]) == ("caption", "r1")
    assert out["c"]["pair_by"] == "class" and out["c"]["pair_id"] in {"r1", "r2"}
    assert out["d"]["pair_id"] is None
    assert all(v["pair_id"] is None or v["label"] == 1 or v["pair_id"] == v["image_id"] for v in out.values())
    none = by_id(pair_rows(table(rows), by="none"))
    assert all(v["pair_id"] is None for v in none.values())


def test_pairing_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="pair by"):
        pair_rows(table([]), by="nearest")
    with pytest.raises(ValueError, match="k"):
        pair_rows(table([]), k=0)
    with pytest.raises(ValueError, match="not unique"):
        pair_rows(table([real("x"), real("x")]))


def split_rows(rows: list[dict]) -> pa.Table:
    t = table(rows)
    pairs = pair_rows(t, by="auto")
    return t.append_column("pair_id", pairs.column("pair_id")).append_column("pair_group", pairs.column("pair_group"))


@pytest.mark.parametrize("by", ["real", "pair"])
def test_split_by_pair_keeps_a_real_with_its_fakes(by: str) -> None:
    rows = []
    for i in range(40):
        rows.append(real(f"r{i}", prompt_id=f"p{i}"))
        rows += [fake(f"f{i}-{g}", source=g, prompt_id=f"p{i}") for g in ("g1", "g2")]
    t = split_rows(rows)
    s = by_id(assign_splits(t, by=by, fractions=(0.6, 0.2, 0.2), seed=1))
    for i in range(40):
        assert s[f"f{i}-g1"]["split"] == s[f"f{i}-g2"]["split"] == s[f"r{i}"]["split"]
    assert {v["split"] for v in s.values()} == {"train", "val", "test"}


def test_holdout_sends_held_out_generators_and_their_groups_to_test() -> None:
    rows = []
    for i in range(30):
        rows.append(fake(f"a{i}", source="sd15", prompt_id=f"p{i}"))
        rows.append(fake(f"b{i}", source="sd15-finetune", prompt_id=f"p{i}"))
        rows.append(fake(f"c{i}", source="pixart", prompt_id=f"q{i}"))
    s = by_id(assign_splits(split_rows(rows), by="prompt", fractions=(0.8, 0.1, 0.1), seed=0,
                            holdout={"sd15", "sd15-finetune"}))
    assert all(s[f"{x}{i}"]["split"] == "test" for x in "ab" for i in range(30))
    pix = Counter(s[f"c{i}"]["split"] for i in range(30))
    assert pix == {"train": 24, "val": 3, "test": 3}  # the rest is cut as configured


def test_links_merge_groups_and_the_audit_finds_straddling_pairs() -> None:
    rows = [fake(f"f{i}", prompt_id=f"p{i}") for i in range(50)]
    t = split_rows(rows)
    plain = by_id(assign_splits(t, by="prompt", fractions=(0.5, 0.25, 0.25), seed=2))
    links = [(f"f{i}", f"f{i + 25}") for i in range(25)]
    crossing = [lk for lk in links if plain[lk[0]]["split"] != plain[lk[1]]["split"]]
    assert crossing  # without merging, some linked images straddle
    pairs = pa.table({"image_id_a": [a for a, _ in links], "image_id_b": [b for _, b in links],
                      "distance": [3] * len(links)})
    audit = straddling(assign_splits(t, by="prompt", fractions=(0.5, 0.25, 0.25), seed=2), pairs)
    assert sum(audit.column("straddles").to_pylist()) == len(crossing)
    merged = assign_splits(t, by="prompt", fractions=(0.5, 0.25, 0.25), seed=2, links=links)
    m = by_id(merged)
    assert all(m[a]["split"] == m[b]["split"] for a, b in links)
    assert not any(straddling(merged, pairs).column("straddles").to_pylist())
