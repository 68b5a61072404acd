"""Aligned fakes through `aigi run`, on a tiny random-weight Stable Diffusion: every mode on a
handful of captioned real photos with object boxes; parents, sizes, masks and change metrics;
reproducible bytes; the autoencoder round trip against diffusers called directly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from aigi.pipeline.config import parse_config
from aigi.pipeline.run import run

SIZE = 32
SOURCE_SIZES = [(48, 40), (40, 56), (64, 64), (36, 36), (20, 16)]  # the last is too small


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    from aigi.generators.tiny import tiny_stable_diffusion

    return tiny_stable_diffusion(tmp_path_factory.mktemp("sd"), seed=5)


@pytest.fixture(scope="module")
def tiny_inpaint(tmp_path_factory) -> Path:
    """An inpainting checkpoint (9-channel UNet): what `regenerate` needs."""
    from aigi.generators.tiny import tiny_stable_diffusion

    return tiny_stable_diffusion(tmp_path_factory.mktemp("sd-inpaint"), seed=6, in_channels=9)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A Parquet source: JPEG photos with a caption, a class and an object box each."""
    path = tmp_path_factory.mktemp("objects") / "objects.parquet"
    rng = np.random.default_rng(0)
    rows = []
    for i, (w, h) in enumerate(SOURCE_SIZES):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80 + i)
        rows.append({"image": {"bytes": buf.getvalue(), "path": f"{i}.jpg"}, "caption": f"photo number {i}",
                     "category": ["cat", "dog"][i % 2], "box": [w * 0.25, h * 0.25, w * 0.5, h * 0.5],
                     "id": f"obj-{i}"})
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def config(out: Path, photos: Path, model: Path, inpaint_model: Path) -> dict:
    entry = {"family": "stable_diffusion", "model": str(model), "size": [SIZE, SIZE], "steps": 2,
             "guidance": 2.0, "batch_size": 3}
    aligned = {"fit": "centre_crop", "min_side": 24}
    return {
        "run": {"out": str(out), "seed": 9},
        "real": {"name": "objects", "source": "parquet", "path": str(photos), "caption_column": "caption",
                 "class_column": "category", "mask_column": "box", "id_column": "id", "class_id_names": "none"},
        "generators": [
            {**entry, "name": "vae", "mode": "vae_roundtrip", "aligned": aligned, "steps": 30, "guidance": 7.5},
            {**entry, "name": "i2i", "mode": "img2img", "aligned": {**aligned, "strength": {"min": 0.5, "max": 0.9}}},
            {**entry, "name": "box", "mode": "inpaint",
             "aligned": {**aligned, "mask": "box", "paste_back": True, "prompt": "other_class"}},
            {**entry, "name": "object", "mode": "inpaint", "aligned": {**aligned, "mask": "source", "prompt": "class"}},
            {**entry, "name": "regen", "model": str(inpaint_model), "mode": "regenerate", "aligned": aligned},
        ],
        "curation": {"pair": {"by": "parent"}, "normalize": {"format": "per_pair"}, "split": {"by": "pair"}},
    }


def fixed(raw: dict) -> dict:
    """vae_roundtrip refuses sampler settings: drop the ones the shared entry gave it."""
    raw["generators"][0] = {k: v for k, v in raw["generators"][0].items() if k not in ("steps", "guidance")}
    return raw


def centre_crop_resized(img: Image.Image, size: int) -> Image.Image:
    """The size policy, written out here: the largest centred square, resized."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    crop = img.crop((left, top, left + s, top + s))
    if crop.size == (size, size):
        return crop
    return crop.resize((size, size), Image.Resampling.LANCZOS if s > size else Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def done(tmp_path_factory, photos, tiny_sd, tiny_inpaint) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    run(parse_config(fixed(config(out, photos, tiny_sd, tiny_inpaint))), serial=True, stream=io.StringIO())
    return out


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_every_mode_makes_one_fake_per_usable_real_with_its_record(done: Path) -> None:
    reals = {r["image_id"]: r for r in rows(done / "images" / "objects")}
    usable = {i for i, r in reals.items() if min(r["width"], r["height"]) >= 24}
    assert len(usable) == 4
    modes = (("vae", "vae_roundtrip"), ("i2i", "img2img"), ("box", "inpaint"), ("object", "inpaint"),
             ("regen", "regenerate"))
    for name, mode in modes:
        fakes = rows(done / "images" / name)
        assert {f["parent_id"] for f in fakes} == usable and len(fakes) == 4, name
        for f in fakes:
            assert (f["width"], f["height"]) == (SIZE, SIZE) and f["label"] == 1 and f["aligned_mode"] == mode
            assert f["psnr"] is not None and f["ssim"] is not None and f["lpips"] is None
            assert f["class_name"] == reals[f["parent_id"]]["class_name"]
            if mode == "inpaint":
                mask = np.asarray(Image.open(io.BytesIO(f["mask"]["bytes"])))
                assert mask.shape == (SIZE, SIZE)
                assert f["mask_area"] == pytest.approx(np.count_nonzero(mask > 127) / mask.size)
            else:
                assert f["mask"] is None
        if name == "i2i":
            assert all(0.5 <= f["strength"] <= 0.9 for f in fakes) and len({f["strength"] for f in fakes}) > 1
        if name == "vae":
            assert all(f["steps"] is None and f["scheduler"] is None for f in fakes)
        if name == "regen":  # the whole image regenerated, conditioned on itself (empty mask)
            assert all(f["strength"] == 1.0 and f["mask_area"] == 0.0 and f["psnr"] < 60 for f in fakes)
    # the too-small real is in the quarantine with its reason, once per entry
    q = pq.read_table(done / "quarantine" / "aligned").to_pylist()
    assert len(q) == 5 and all(r["reason"].startswith("too small for the size policy: 20x16") for r in q)


def test_paste_back_keeps_the_fitted_parent_outside_the_mask(done: Path) -> None:
    reals = {r["image_id"]: r for r in rows(done / "images" / "objects")}
    for f in rows(done / "images" / "box"):
        parent = centre_crop_resized(Image.open(io.BytesIO(reals[f["parent_id"]]["image"]["bytes"])).convert("RGB"), SIZE)
        fake = np.asarray(Image.open(io.BytesIO(f["image"]["bytes"])).convert("RGB"))
        outside = np.asarray(Image.open(io.BytesIO(f["mask"]["bytes"]))) <= 127
        assert np.array_equal(fake[outside], np.asarray(parent)[outside])
        assert f["prompt"] in ("a photo of a cat", "a photo of a dog")
        assert f["prompt"] != f"a photo of a {reals[f['parent_id']]['class_name']}"  # another class


def test_source_masks_follow_the_size_policy(done: Path) -> None:
    reals = {r["image_id"]: r for r in rows(done / "images" / "objects")}
    for f in rows(done / "images" / "object"):
        r = reals[f["parent_id"]]
        box = np.zeros((r["height"], r["width"]), np.uint8)
        x, y, w, h = (round(v) for v in (r["width"] * 0.25, r["height"] * 0.25, r["width"] * 0.5, r["height"] * 0.5))
        box[y : y + h, x : x + w] = 255
        want = np.asarray(centre_crop_resized(Image.fromarray(box), SIZE)) > 127
        got = np.asarray(Image.open(io.BytesIO(f["mask"]["bytes"]))) > 127
        assert np.mean(want != got) < 0.05  # resampling moves the edge by at most a pixel
        assert f["prompt"] == f"a photo of a {r['class_name']}"


def test_vae_roundtrip_equals_decode_of_encode_by_diffusers(done: Path, tiny_sd: Path) -> None:
    import diffusers
    import torch

    vae = diffusers.AutoencoderKL.from_pretrained(tiny_sd, subfolder="vae").eval()
    reals = {r["image_id"]: r for r in rows(done / "images" / "objects")}
    for f in rows(done / "images" / "vae"):
        parent = centre_crop_resized(Image.open(io.BytesIO(reals[f["parent_id"]]["image"]["bytes"])).convert("RGB"), SIZE)
        x = torch.from_numpy(np.asarray(parent, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            y = vae.decode(vae.encode(x).latent_dist.mean).sample
        want = ((y[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        got = np.asarray(Image.open(io.BytesIO(f["image"]["bytes"])).convert("RGB"))
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_parents_drive_pairs_splits_and_per_pair_encoding(done: Path) -> None:
    images = {r["image_id"]: r for r in pq.read_table(done / "images").to_pylist()}
    pairs = {r["image_id"]: r for r in rows(done / "curation" / "pairs.parquet")}
    splits = {r["image_id"]: r["split"] for r in rows(done / "curation" / "splits.parquet")}
    after = {r["image_id"]: r for r in pq.read_table(done / "curation" / "measures_normalized").to_pylist()}
    fakes = [i for i, r in images.items() if r["label"] == 1]
    assert fakes
    for i in fakes:
        parent = images[i]["parent_id"]
        assert pairs[i]["pair_by"] == "parent" and pairs[i]["pair_id"] == parent
        assert splits[i] == splits[parent]
        assert after[i]["format"] == "JPEG" and after[i]["jpeg_quality"] == images[parent]["jpeg_quality"]
    parity = rows(done / "curation" / "frequency_parity.parquet")
    assert {(r["source"], r["mode"], r["when"]) for r in parity} >= {("vae", "vae_roundtrip", "before"),
                                                                     ("vae", "vae_roundtrip", "after")}
    assert "Frequency parity" in (done / "curation" / "bias_audit.md").read_text(encoding="utf-8")


def test_same_config_elsewhere_gives_the_same_bytes(done: Path, tmp_path: Path, photos: Path, tiny_sd: Path,
                                                     tiny_inpaint: Path) -> None:
    raw = fixed(config(tmp_path / "again", photos, tiny_sd, tiny_inpaint))
    raw["generators"] = raw["generators"][1:3]  # the sampled modes: seeds and masks from the rows
    run(parse_config(raw), serial=True, stream=io.StringIO())
    for name in ("i2i", "box"):
        first = {r["image_id"]: r["sha256"] for r in rows(done / "images" / name)}
        again = {r["image_id"]: r["sha256"] for r in rows(tmp_path / "again" / "images" / name)}
        assert first == again
