"""Curation functions: imagefolder ingestion, hashing, exact duplicates, leakage-safe splits."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from aigi.curation.hashing import hash_image, hash_rows
from aigi.curation.ingest import (
    BadImage,
    estimate_jpeg_quality,
    ingest_file,
    list_images,
)
from aigi.curation.neardup import near_duplicates
from aigi.curation.split import assign_splits
from aigi.manifests.ids import content_id
from aigi.manifests.schema import DUPLICATES, HASHES, IMAGES, SPLITS
from aigi.manifests.shards import read_shard, write_shard

PROVENANCE = ("model", "revision", "pipeline", "scheduler", "steps", "guidance", "seed", "dtype",
              "negative_prompt", "prompt", "prompt_id", "class_id")


# ---------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def smooth_image(h: int = 96, w: int = 128, shift: int = 0) -> np.ndarray:
    """A gradient with a block: structured enough for perceptual hashes, compressible as JPEG."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 2 + shift) % 256, y * 2, (x + y) % 256], -1).astype(np.uint8)
    a[20:50, 30:80] = [200, 30, 30]
    return a


def noisy_image(seed: int, h: int = 64, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "real"
    (root / "tench").mkdir(parents=True)
    (root / ".cache").mkdir()
    png = encode(smooth_image(), "PNG")
    (root / "a.png").write_bytes(png)
    (root / "b.JPG").write_bytes(encode(smooth_image(), "JPEG", quality=80))
    (root / "c.webp").write_bytes(encode(smooth_image(), "WEBP", lossless=True))
    (root / "tench" / "d.jpeg").write_bytes(encode(noisy_image(1, 40, 50), "JPEG", quality=90))
    (root / ".hidden.png").write_bytes(png)
    (root / ".cache" / "e.png").write_bytes(png)
    (root / "notes.txt").write_text("not an image")
    (root / "empty.jpg").write_bytes(b"")
    (root / "trunc.png").write_bytes(png[: len(png) // 2])
    (root / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    return root


GOOD = ["a.png", "b.JPG", "c.webp", "tench/d.jpeg"]


# ---------------------------------------------------------------- ingest


def test_list_images_filters_and_sorts(folder: Path) -> None:
    assert list_images(folder) == sorted(GOOD + ["empty.jpg", "garbage.jpg", "trunc.png"])
    assert list_images(folder, recursive=False) == sorted(
        ["a.png", "b.JPG", "c.webp", "empty.jpg", "garbage.jpg", "trunc.png"]
    )


def test_list_images_missing_root_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(missing)


def test_ingest_rows_conform_and_keep_bytes(folder: Path, tmp_path: Path) -> None:
    from PIL import Image

    rows = [ingest_file(folder, rel, "myfolder") for rel in GOOD]
    for rel, row in zip(GOOD, rows, strict=True):
        data = (folder / rel).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        assert list(row) == IMAGES.arrow.names
        assert row["image"] == {"bytes": data, "path": rel}
        assert row["sha256"] == sha
        assert row["image_id"] == content_id("real", "myfolder", rel, sha)
        assert row["label"] == 0 and row["source"] == "myfolder" and row["origin"] == rel
        with Image.open(folder / rel) as im:
            assert (row["width"], row["height"]) == im.size
        assert all(row[k] is None for k in PROVENANCE)
    assert [r["format"] for r in rows] == ["PNG", "JPEG", "WEBP", "JPEG"]
    assert rows[0]["jpeg_quality"] is None and rows[2]["jpeg_quality"] is None
    assert abs(rows[1]["jpeg_quality"] - 80) <= 1 and abs(rows[3]["jpeg_quality"] - 90) <= 1
    assert len({r["image_id"] for r in rows}) == len(rows)

    cols = {k: [r[k] for r in rows] for k in IMAGES.arrow.names}
    path = write_shard(cols, tmp_path / "images.parquet", IMAGES, producer="test")
    back = read_shard(path, IMAGES)
    assert back.schema.remove_metadata() == IMAGES.arrow
    for rel, img in zip(GOOD, back.column("image").to_pylist(), strict=True):
        assert img["bytes"] == (folder / rel).read_bytes()


def test_ingest_class_from_folder(folder: Path) -> None:
    assert ingest_file(folder, "tench/d.jpeg", "s", class_from_folder=True)["class_name"] == "tench"
    assert ingest_file(folder, "a.png", "s", class_from_folder=True)["class_name"] is None
    assert ingest_file(folder, "tench/d.jpeg", "s")["class_name"] is None


@pytest.mark.parametrize(
    "rel, reason",
    [("empty.jpg", "empty file"), ("trunc.png", "truncated"), ("garbage.jpg", "cannot decode")],
)
def test_ingest_bad_images(folder: Path, rel: str, reason: str) -> None:
    with pytest.raises(BadImage) as info:
        ingest_file(folder, rel, "s")
    assert info.value.reason.startswith(reason)
    assert rel in str(info.value)
    assert isinstance(info.value, ValueError)


def test_ingest_catches_truncated_jpeg(tmp_path: Path) -> None:
    data = encode(noisy_image(2), "JPEG", quality=90)
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage) as info:
        ingest_file(tmp_path, "t.jpg", "s")
    assert info.value.reason == "truncated"


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95, 100])
def test_jpeg_quality_round_trips(tmp_path: Path, quality: int) -> None:
    from PIL import Image

    data = encode(noisy_image(quality), "JPEG", quality=quality)
    with Image.open(io.BytesIO(data)) as im:
        assert abs(estimate_jpeg_quality(im) - quality) <= 1
    (tmp_path / "q.jpg").write_bytes(data)
    assert abs(ingest_file(tmp_path, "q.jpg", "s")["jpeg_quality"] - quality) <= 1


def test_jpeg_quality_none_without_tables() -> None:
    from PIL import Image

    with Image.open(io.BytesIO(encode(smooth_image(), "PNG"))) as im:
        assert estimate_jpeg_quality(im) is None


# ---------------------------------------------------------------- hashing


def test_same_pixels_png_and_lossless_webp() -> None:
    import imagehash
    from PIL import Image

    arr = smooth_image()
    png, webp = encode(arr, "PNG"), encode(arr, "WEBP", lossless=True)
    hp, hw = hash_image(png), hash_image(webp)
    assert hp["pixel_sha256"] == hw["pixel_sha256"]
    assert hp["sha256"] != hw["sha256"]
    assert hp["sha256"] == hashlib.sha256(png).hexdigest()
    with Image.open(io.BytesIO(png)) as im:
        assert hp["phash"] == int(str(imagehash.phash(im)), 16)
        assert hp["dhash"] == int(str(imagehash.dhash(im)), 16)
    # A different picture must not share the pixel digest.
    assert hash_image(encode(smooth_image(shift=1), "PNG"))["pixel_sha256"] != hp["pixel_sha256"]


def test_near_identical_images_have_close_phash() -> None:
    a = smooth_image()
    b = a.copy()
    b[60, 60] = [0, 255, 0]
    ha, hb = hash_image(encode(a, "PNG")), hash_image(encode(b, "PNG"))
    hc = hash_image(encode(noisy_image(7, 96, 128), "PNG"))
    assert ha["pixel_sha256"] != hb["pixel_sha256"]
    assert bin(ha["phash"] ^ hb["phash"]).count("1") <= 4
    assert bin(ha["dhash"] ^ hb["dhash"]).count("1") <= 4
    assert bin(ha["phash"] ^ hc["phash"]).count("1") > 10


def test_hash_rows_conforms(folder: Path, tmp_path: Path) -> None:
    rows = [ingest_file(folder, rel, "src") for rel in GOOD]
    images = pa.Table.from_pylist(rows, schema=IMAGES.arrow)
    hashes = hash_rows(images)
    assert hashes.schema == HASHES.arrow
    assert hashes.column("image_id").to_pylist() == [r["image_id"] for r in rows]
    for i, rel in enumerate(GOOD):
        assert hashes.slice(i, 1).to_pylist()[0] == {
            "image_id": rows[i]["image_id"], "source": "src", "label": 0,
            **hash_image((folder / rel).read_bytes()),
        }
    write_shard(hashes, tmp_path / "h.parquet", HASHES, producer="test")
    # a.png and c.webp (lossless) hold the same pixels.
    pix = hashes.column("pixel_sha256").to_pylist()
    assert pix[0] == pix[2] and pix[0] != pix[1]


# ---------------------------------------------------------------- exact duplicates


def hashes_table(ids: list[str], labels: list[int], pix: list[str]) -> pa.Table:
    n = len(ids)
    return pa.Table.from_pydict(
        {
            "image_id": ids, "source": ["s"] * n, "label": labels, "sha256": ids,
            # distinct pictures get far-apart perceptual hashes: only exact duplicates meet at
            # radius 0
            "pixel_sha256": pix, "phash": [int(p[:16], 16) for p in pix], "dhash": [0] * n,
        },
        schema=HASHES.arrow,
    )


def test_exact_duplicates_keeps_the_real_image(tmp_path: Path) -> None:
    p, q, r = "a" * 64, "b" * 64, "c" * 64
    t = hashes_table(
        ["g1", "real9", "g0", "solo", "x2", "x1"], [1, 0, 1, 1, 1, 1], [p, p, p, q, r, r]
    )
    d = near_duplicates(t, radius=0)
    assert d.schema == DUPLICATES.arrow
    got = {row["image_id"]: row for row in d.to_pylist()}
    assert d.column("image_id").to_pylist() == t.column("image_id").to_pylist()
    assert {k: got["real9"][k] for k in ("dup_group", "group_size", "keep", "drop_reason")} == {
        "dup_group": "real9", "group_size": 3, "keep": True, "drop_reason": None}
    for g in ("g1", "g0"):
        assert got[g]["keep"] is False and got[g]["drop_reason"] == "exact_duplicate_of:real9"
        assert got[g]["group_size"] == 3 and got[g]["dup_group"] == "real9"
    assert got["solo"]["keep"] and got["solo"]["drop_reason"] is None and got["solo"]["group_size"] == 1
    # Same label: the smallest image_id wins.
    assert got["x1"]["keep"] and got["x2"]["drop_reason"] == "exact_duplicate_of:x1"
    write_shard(d, tmp_path / "d.parquet", DUPLICATES, producer="test")


def test_exact_duplicates_matches_reference_and_ignores_order() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    ids = [f"id{i:05d}" for i in rng.permutation(n)]
    labels = rng.integers(0, 2, n).tolist()
    pix = [hashlib.sha256(str(k).encode()).hexdigest() for k in rng.integers(0, 2000, n)]
    d = near_duplicates(hashes_table(ids, labels, pix), radius=0)
    # Reference: the plain-Python reading of the rule.
    members: dict[str, list[tuple[int, str]]] = {}
    for i, lab, p in zip(ids, labels, pix, strict=True):
        members.setdefault(p, []).append((lab, i))
    for row, p in zip(d.to_pylist(), pix, strict=True):
        winner = min(members[p])[1]
        assert row["group_size"] == len(members[p])
        assert row["keep"] == (row["image_id"] == winner)
        assert row["drop_reason"] == (None if row["keep"] else f"exact_duplicate_of:{winner}")
    perm = rng.permutation(n)
    d2 = near_duplicates(
        hashes_table([ids[k] for k in perm], [labels[k] for k in perm], [pix[k] for k in perm]),
        radius=0,
    )
    assert sorted(d2.to_pylist(), key=lambda r: r["image_id"]) == sorted(
        d.to_pylist(), key=lambda r: r["image_id"]
    )


def test_exact_duplicates_rejects_repeated_ids() -> None:
    with pytest.raises(ValueError, match="unique"):
        near_duplicates(hashes_table(["a", "a"], [0, 1], ["a" * 64, "b" * 64]), radius=0)


# ---------------------------------------------------------------- splits


def split_rows(records: list[tuple[str, str, int, str | None, str | None]]) -> pa.Table:
    names = ("image_id", "source", "label", "prompt_id", "class_name")
    cols = {k: [r[i] for r in records] for i, k in enumerate(names)}
    return pa.table(
        {
            "image_id": pa.array(cols["image_id"], pa.string()),
            "source": pa.array(cols["source"], pa.string()),
            "label": pa.array(cols["label"], pa.int8()),
            "prompt_id": pa.array(cols["prompt_id"], pa.string()),
            "class_name": pa.array(cols["class_name"], pa.string()),
        }
    )


def mixed_rows(n_prompts: int = 300, n_real: int = 200) -> pa.Table:
    recs = []
    for p in range(n_prompts):
        for gen in ("sd15", "sdxl"):
            recs.append((f"{gen}-{p}", gen, 1, f"p{p}", f"class{p % 40}"))
    for k in range(n_real):
        recs.append((f"real-{k}", "coco", 0, f"cap{k}" if k % 3 else None, f"class{k % 60}"))
    return split_rows(recs)


def by_id(t: pa.Table) -> dict[str, tuple[str, str]]:
    return {r["image_id"]: (r["group"], r["split"]) for r in t.to_pylist()}


@pytest.mark.parametrize("by", ["prompt", "class", "image"])
def test_no_group_in_two_splits(by: str, tmp_path: Path) -> None:
    rows = mixed_rows()
    s = assign_splits(rows, by, (0.8, 0.1, 0.1), seed=3)
    assert s.schema == SPLITS.arrow
    assert s.column("image_id").to_pylist() == rows.column("image_id").to_pylist()
    seen: dict[str, set[str]] = {}
    for r in s.to_pylist():
        assert r["split"] in {"train", "val", "test"}
        seen.setdefault(r["group"], set()).add(r["split"])
    assert all(len(v) == 1 for v in seen.values())
    write_shard(s, tmp_path / "s.parquet", SPLITS, producer="test")


def test_same_prompt_two_generators_same_split() -> None:
    got = by_id(assign_splits(mixed_rows(), "prompt", (0.5, 0.25, 0.25), seed=11))
    for p in range(300):
        assert got[f"sd15-{p}"] == got[f"sdxl-{p}"]
        assert got[f"sd15-{p}"][0] == f"prompt:p{p}"


def test_group_key_fallbacks() -> None:
    rows = split_rows(
        [("a", "s", 0, "p1", "c1"), ("b", "s", 0, None, "c1"), ("c", "s", 0, None, None),
         ("d", "s", 0, "p2", None)]
    )
    by_prompt = [r["group"] for r in assign_splits(rows, "prompt", (1, 0, 0), 0).to_pylist()]
    assert by_prompt == ["prompt:p1", "class:c1", "image:c", "prompt:p2"]
    by_class = [r["group"] for r in assign_splits(rows, "class", (1, 0, 0), 0).to_pylist()]
    assert by_class == ["class:c1", "class:c1", "image:c", "prompt:p2"]
    by_image = [r["group"] for r in assign_splits(rows, "image", (1, 0, 0), 0).to_pylist()]
    assert by_image == ["image:a", "image:b", "image:c", "image:d"]


def test_order_follows_seeded_hash() -> None:
    seed = 42
    rows = split_rows([(f"i{k}", "g", 1, f"p{k}", None) for k in range(10)])
    got = {r["group"]: r["split"] for r in assign_splits(rows, "prompt", (0.6, 0.2, 0.2), seed).to_pylist()}
    groups = sorted(got, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    assert [got[g] for g in groups] == ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def test_fractions_respected_per_label() -> None:
    recs = [(f"g{k}", "gen", 1, f"p{k}", None) for k in range(1000)]
    recs += [(f"r{k}", "real", 0, f"cap{k}", None) for k in range(1000)]
    s = assign_splits(split_rows(recs), "prompt", (0.7, 0.2, 0.1), seed=5).to_pylist()
    for label in (0, 1):
        splits = [r["split"] for r in s if r["label"] == label]
        for name, frac in zip(("train", "val", "test"), (0.7, 0.2, 0.1), strict=True):
            assert abs(splits.count(name) / 1000 - frac) <= 0.02


def test_every_split_gets_a_group_when_possible() -> None:
    rows = split_rows([(f"i{k}", "g", 1, f"p{k}", None) for k in range(3)])
    for seed in range(5):
        s = assign_splits(rows, "prompt", (0.8, 0.1, 0.1), seed)
        assert sorted(s.column("split").to_pylist()) == ["test", "train", "val"]
    s = assign_splits(rows, "prompt", (0.5, 0.0, 0.5), 0)
    assert "val" not in s.column("split").to_pylist()
    assert set(s.column("split").to_pylist()) == {"train", "test"}


def test_row_order_invariance_and_seed_matters() -> None:
    rows = mixed_rows()
    perm = np.random.default_rng(1).permutation(rows.num_rows)
    a = by_id(assign_splits(rows, "class", (0.6, 0.2, 0.2), seed=9))
    b = by_id(assign_splits(rows.take(pa.array(perm)), "class", (0.6, 0.2, 0.2), seed=9))
    assert a == b
    c = by_id(assign_splits(rows, "class", (0.6, 0.2, 0.2), seed=10))
    assert a != c


def test_groups_are_cut_per_label_mix() -> None:
    """Groups with only generated, only real, and both kinds of images are three strata, each cut
    by the fractions as if it were alone: every split gets its share of each."""
    gen = [(f"g{k}", "gen", 1, None, f"class{k}") for k in range(20)]
    real = [(f"r{k}", "real", 0, None, f"class{k}") for k in range(10, 40)]
    fr = (0.5, 0.25, 0.25)
    both = {r["group"]: r["split"] for r in assign_splits(split_rows(gen + real), "class", fr, 4).to_pylist()}

    def alone(recs):
        return {r["group"]: r["split"] for r in assign_splits(split_rows(recs), "class", fr, 4).to_pylist()}

    gen_only = alone([r for r in gen if int(r[4][5:]) < 10])
    real_only = alone([r for r in real if int(r[4][5:]) >= 20])
    mixed = alone([r for r in gen + real if 10 <= int(r[4][5:]) < 20])
    for cut in (gen_only, real_only, mixed):
        assert {g: both[g] for g in cut} == cut
        assert sorted(cut.values()).count("test") == len(cut) // 4


@pytest.mark.parametrize(
    "fractions",
    [(0.5, 0.5, 0.5), (1.2, -0.2, 0.0), (0.5, 0.5), (float("nan"), 0.5, 0.5), (0.8, 0.1, 0.09)],
)
def test_bad_fractions(fractions) -> None:
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(mixed_rows(5, 5), "prompt", fractions, 0)


def test_bad_split_key() -> None:
    with pytest.raises(ValueError, match="split by"):
        assign_splits(mixed_rows(5, 5), "source", (0.8, 0.1, 0.1), 0)
