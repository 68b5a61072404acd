"""Curation through `aigi run`: captions become prompts, fakes pair with their reals, per-pair
encoding, splits by pair, stale shards left behind, the incremental mode, quarantine counts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from aigi.core.configtools import ConfigError
from aigi.pipeline.cli import main
from aigi.pipeline.config import parse_config
from aigi.pipeline.run import run


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from aigi.generators.tiny import tiny_stable_diffusion

    return tiny_stable_diffusion(tmp_path_factory.mktemp("sd"), seed=4)


def photo(seed: int, size: int = 32) -> np.ndarray:
    """A smooth random picture: distinct pictures are far apart in pHash."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def jpeg(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


CAPTIONS = ["a red barn", "a quiet harbour", "a snowy pass", "a busy market", "an old bridge", "a tall tower"]
QUALITIES = [72, 95, 80, 88, 75, 91]


@pytest.fixture(scope="module")
def coco_like(tmp_path_factory) -> Path:
    """A Parquet file of captioned real JPEGs (HF Image layout), as a COCO export would be."""
    path = tmp_path_factory.mktemp("coco") / "captions.parquet"
    images = [{"bytes": jpeg(photo(i), q), "path": f"{i:06d}.jpg"} for i, q in enumerate(QUALITIES)]
    pq.write_table(pa.table({"image": images, "caption": CAPTIONS, "id": [f"coco-{i}" for i in range(6)]}), path)
    return path


def d3_config(out: Path, coco: Path, model: Path, **curation) -> dict:
    return {
        "run": {"out": str(out), "seed": 1},
        "real": {"name": "coco", "source": "parquet", "path": str(coco), "caption_column": "caption",
                 "id_column": "id"},
        "prompts": {"source": "real"},
        "generators": [{"name": "sd", "family": "stable_diffusion", "model": str(model), "steps": 2,
                        "size": [32, 32], "images_per_prompt": 2, "batch_size": 4}],
        "curation": {"normalize": {"format": "per_pair"}, "split": {"by": "pair"}, **curation},
    }


def table(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_captions_prompts_pairs_per_pair_encoding_and_pair_splits(tmp_path, coco_like, tiny_sd):
    cfg = parse_config(d3_config(tmp_path / "run", coco_like, tiny_sd))
    run(cfg, serial=True, stream=io.StringIO())
    root = tmp_path / "run"
    reals = {r["image_id"]: r for r in pq.read_table(root / "images" / "coco").to_pylist()}
    fakes = {r["image_id"]: r for r in pq.read_table(root / "images" / "sd").to_pylist()}
    prompts = table(root / "prompts" / "prompts.parquet")
    assert sorted(p["prompt"] for p in prompts) == sorted(CAPTIONS)  # one prompt per captioned real
    assert len(fakes) == 12
    pairs = {r["image_id"]: r for r in table(root / "curation" / "pairs.parquet")}
    splits = {r["image_id"]: r["split"] for r in table(root / "curation" / "splits.parquet")}
    records = {r["image_id"]: r for r in pq.read_table(root / "curation" / "normalized_records").to_pylist()}
    after = {r["image_id"]: r for r in pq.read_table(root / "curation" / "measures_normalized").to_pylist()}
    for fid, fake in fakes.items():
        real = reals[pairs[fid]["pair_id"]]
        # the real whose caption was the prompt, linked by the caption's prompt id
        assert pairs[fid]["pair_by"] == "caption" and real["prompt"] == fake["prompt"]
        assert real["prompt_id"] == fake["prompt_id"]
        # per pair: the fake is encoded exactly like its real (DDA's protocol)
        assert records[fid]["encoded_like"] == real["image_id"]
        assert after[fid]["format"] == "JPEG"
        assert after[fid]["jpeg_quality"] == real["jpeg_quality"]
        assert after[fid]["subsampling"] == after[real["image_id"]]["subsampling"]
        assert splits[fid] == splits[real["image_id"]]  # a real and its fakes on one side
    # the reals themselves keep their bytes; their origin is the id column
    for rid, real in reals.items():
        assert records[rid]["sha256"] == real["sha256"] and real["origin"].startswith("coco-")
    audit = table(root / "curation" / "bias_audit.parquet")
    auc = {r["when"]: r["auc"] for r in audit if r["property"] == "format_only_auc" and r["source"] is None}
    # 18 images: the estimate is coarse (tests/test_parity.py checks 0.5 ± 0.05 on 120); the
    # metadata equality above is the exact check
    assert auc["before"] >= 0.95 and abs(auc["after"] - 0.5) <= 0.15


def test_a_source_that_lost_files_leaves_no_stale_shard_downstream(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.fromarray(photo(10 + i)).save(photos / f"{i}.png")
    cfg = parse_config({"run": {"out": str(tmp_path / "run")},
                        "real": {"path": str(photos), "unit_size": 2}})
    run(cfg, serial=True, stream=io.StringIO())
    (photos / "5.png").unlink()
    (photos / "4.png").unlink()  # the third unit is gone
    run(cfg, serial=True, stream=io.StringIO())
    root = tmp_path / "run"
    assert len(list((root / "images" / "real").glob("*.parquet"))) == 3  # the old shard is kept...
    hashed = pq.read_table(root / "curation" / "hashes").num_rows
    split_ids = {r["origin"] for r in pq.read_table(root / "images" / "real").to_pylist()}
    assert len(split_ids) == 6 and hashed == 6  # ...and (a glob would see it) its hashes too,
    kept = table(root / "curation" / "splits.parquet")
    assert len(kept) == 4  # but the split, planned from the plans, has only the 4 images left
    assert len(table(root / "curation" / "duplicates.parquet")) == 4


def test_incremental_dedupe_against_a_reference_run(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for i in range(4):
        Image.fromarray(photo(20 + i, 64)).save(first / f"{i}.png")
    # the second batch: two new pictures and a re-encoded copy of one already in the first run
    Image.fromarray(photo(30, 64)).save(second / "new-a.png")
    Image.fromarray(photo(31, 64)).save(second / "new-b.png")
    (second / "copy.jpg").write_bytes(jpeg(photo(21, 64), 70))
    run(parse_config({"run": {"out": str(tmp_path / "A")}, "real": {"path": str(first)}}),
        serial=True, stream=io.StringIO())
    cfg = parse_config({"run": {"out": str(tmp_path / "B")}, "real": {"path": str(second)},
                        "curation": {"dedupe": {"reference": [str(tmp_path / "A")]}}})
    run(cfg, serial=True, stream=io.StringIO())
    images = {r["image_id"]: r["origin"] for r in pq.read_table(tmp_path / "B" / "images").to_pylist()}
    dups = {images[r["image_id"]]: r for r in table(tmp_path / "B" / "curation" / "duplicates.parquet")}
    assert not dups["copy.jpg"]["keep"]
    assert dups["copy.jpg"]["drop_reason"].startswith("near_duplicate_of_reference:")
    assert dups["new-a.png"]["keep"] and dups["new-b.png"]["keep"]


def test_quarantine_counts_in_the_console_and_in_status(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(photo(1)).save(photos / "good.png")
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.txt").write_text("a sidecar")
    console = io.StringIO()
    run(parse_config({"run": {"out": str(tmp_path / "run")}, "real": {"path": str(photos)}}),
        serial=True, stream=console)
    assert "1 quarantined, 1 skipped" in console.getvalue()
    assert main(["status", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "(1 quarantined, 1 skipped)" in out and "quarantine: 1 inputs could not be used" in out


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"curation": {"split": {"holdout": ["nope"]}}}, "curation.split.holdout"),
        ({"prompts": {"source": "real", "real": "flickr"}}, "prompts.real"),
        ({"curation": {"dedupe": {"radius": 40}}}, "curation.dedupe.radius"),
        ({"curation": {"pair": {"k": 0}}}, "curation.pair.k"),
        ({"curation": {"normalize": {"quality": 0}}}, "curation.normalize.quality"),
        ({"real": [{"path": "x", "name": "a"}, {"path": "y", "name": "a"}]}, "real[1].name"),
    ],
)
def test_bad_curation_config_names_the_key(tmp_path, change, key):
    base = {"run": {"out": str(tmp_path)}, "real": {"path": "x"},
            "prompts": {"classes": ["tench"]},
            "generators": [{"name": "g", "family": "stable_diffusion", "model": "m"}]}
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_config({**base, **change}, file="cfg.toml")


def test_two_real_sources_deduplicated_against_each_other(tmp_path):
    import tarfile

    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(photo(40 + i, 64)).save(folder / f"{i}.png")
    shard = tmp_path / "web-000000.tar"
    with tarfile.open(shard, "w") as tar:
        for key, data, caption in (("s1", jpeg(photo(41, 64), 80), "a copy"), ("s2", jpeg(photo(50, 64), 80), "new")):
            for ext, payload in (("jpg", data), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    cfg = parse_config({"run": {"out": str(tmp_path / "run")},
                        "real": [{"name": "folder", "path": str(folder)},
                                 {"name": "web", "source": "webdataset", "path": str(shard)}]})
    run(cfg, serial=True, stream=io.StringIO())
    images = {r["image_id"]: r for r in pq.read_table(tmp_path / "run" / "images").to_pylist()}
    dups = {images[r["image_id"]]["origin"]: r for r in table(tmp_path / "run" / "curation" / "duplicates.parquet")}
    copy = next(o for o in dups if o.endswith("s1"))
    pair = {copy, "1.png"}
    # one of the two is kept (the smaller image_id: the choice depends on content, not on order)
    dropped = [o for o in pair if not dups[o]["keep"]]
    assert len(dropped) == 1 and dups[copy]["dup_group"] == dups["1.png"]["dup_group"]
    kept_id = dups[(pair - set(dropped)).pop()]["image_id"]
    assert dups[dropped[0]]["drop_reason"].startswith(f"near_duplicate_of:{kept_id}")
    assert all(d["keep"] for o, d in dups.items() if o not in pair)
    web = {r["origin"]: r for r in images.values() if r["source"] == "web"}
    assert {r["prompt"] for r in web.values()} == {"a copy", "new"}  # captions from the .txt members


def test_adding_a_generator_redoes_no_normalized_shard_of_the_others(tmp_path, coco_like, tiny_sd):
    """Growing a corpus: the new generator's images are paired, encoded and audited; the shards
    already normalized (and so the features computed on them) stay as they are."""
    raw = d3_config(tmp_path / "run", coco_like, tiny_sd)
    run(parse_config(raw), serial=True, stream=io.StringIO())
    normalized = tmp_path / "run" / "curation" / "normalized"
    before = {p: p.stat().st_mtime_ns for p in normalized.rglob("*.parquet")}
    second = {**raw["generators"][0], "name": "sd-b", "guidance": 3.0}
    run(parse_config({**raw, "generators": [*raw["generators"], second]}), serial=True, stream=io.StringIO())
    after = {p: p.stat().st_mtime_ns for p in normalized.rglob("*.parquet")}
    assert all(after.get(p) == t for p, t in before.items())
    assert {p.parent.name for p in set(after) - set(before)} == {"sd-b"}
