"""Codec and size parity: measurements, normalization policies, the bias audit.

Encodings are checked by parsing the JPEG markers in the test (DQT tables against the IJG formula,
SOF sampling factors), the high-frequency share against a DCT matrix built here, and the audit's
statistics against hand computations. The last test is issue 7's "done when": a format-only
classifier separates JPEG reals from PNG fakes, and no longer does after normalization.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from aigi.core.configtools import ConfigError, build
from aigi.curation.audit import (
    AUC_PROPERTY,
    BIAS_AUDIT,
    PROPERTIES,
    audit_markdown,
    bias_audit,
    format_only_auc,
)
from aigi.curation.measure import MEASURES, hf_energy, measure, measure_rows
from aigi.curation.normalize import (
    NORMALIZED,
    UNPAIRED,
    NormalizeConfig,
    normalize_image,
    normalize_rows,
    normalize_seed,
    plan_rows,
)
from aigi.manifests.ids import sha256_bytes
from aigi.manifests.schema import IMAGES

# ---------------------------------------------------------------- helpers

IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])  # fmt: skip
SAMPLING_FACTORS = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}  # luma (H, V); chroma 1x1


def ijg_table(q: int) -> list[int]:
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return sorted(int(np.clip((v * scale + 50) // 100, 1, 255)) for v in IJG_LUMA)


def jpeg_segments(data: bytes) -> dict[int, list[bytes]]:
    """Marker -> payloads of a JPEG's header segments, up to the start of scan."""
    assert data[:2] == b"\xff\xd8"
    out: dict[int, list[bytes]] = {}
    i = 2
    while i < len(data):
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        out.setdefault(marker, []).append(data[i + 4 : i + 2 + length])
        if marker == 0xDA:
            break
        i += 2 + length
    return out


def luma_table(data: bytes) -> list[int]:
    """The 8-bit table with id 0 from the DQT segments, sorted (order-free)."""
    for seg in jpeg_segments(data)[0xDB]:
        j = 0
        while j < len(seg):
            assert seg[j] >> 4 == 0, "8-bit tables only"
            if seg[j] & 15 == 0:
                return sorted(seg[j + 1 : j + 65])
            j += 65
    raise AssertionError("no luminance table")


def sof_factors(data: bytes) -> list[tuple[int, int]]:
    seg = jpeg_segments(data)[0xC0][0]
    return [(seg[7 + 3 * c] >> 4, seg[7 + 3 * c] & 15) for c in range(seg[5])]


def encoded_like(data: bytes, q: int, sampling: str) -> bool:
    h, v = SAMPLING_FACTORS[sampling]
    return luma_table(data) == ijg_table(q) and sof_factors(data) == [(h, v), (1, 1), (1, 1)]


def picture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour field with edges and grain: some texture in every 8x8 block."""
    rng = np.random.default_rng(seed)
    from PIL import Image

    small = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    a = a + rng.integers(-6, 7, (h, w, 3), dtype=np.int16)
    a[h // 4 : h // 2, w // 3 : w // 2] = (230, 40, 30)
    return np.clip(a, 0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def image_row(image_id: str, label: int, data: bytes, source: str) -> dict:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        w, h, fmt = im.width, im.height, im.format
    row = dict.fromkeys(IMAGES.arrow.names)
    row.update(image_id=image_id, image={"bytes": data, "path": f"{image_id}.x"}, label=label,
               source=source, sha256=sha256_bytes(data), width=w, height=h, format=fmt,
               prompt=f"prompt of {image_id}", origin=f"o/{image_id}")
    return row


def images_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=IMAGES.arrow)


def run_policy(images: pa.Table, cfg: NormalizeConfig, pairs=None, seed: int = 0, measures=None):
    measures = measure_rows(images) if measures is None else measures
    plans = plan_rows(measures, cfg, seed, pairs)
    seeds = [normalize_seed(seed, i) for i in images.column("image_id").to_pylist()]
    return normalize_rows(images, plans, seeds)


def by_id(table: pa.Table) -> dict[str, dict]:
    return {r["image_id"]: r for r in table.to_pylist()}


# ---------------------------------------------------------------- measure


@pytest.mark.parametrize("q", (50, 75, 95))
@pytest.mark.parametrize("sampling", ("4:4:4", "4:2:0", "4:2:2"))
def test_measure_recovers_quality_and_subsampling(q: int, sampling: str) -> None:
    data = encode(picture(48, 64, q), "JPEG", quality=q, subsampling=sampling)
    assert encoded_like(data, q, sampling)  # the bytes really are what the test asked for
    m = measure(data)
    assert (m["format"], m["jpeg_quality"], m["subsampling"]) == ("JPEG", q, sampling)


def test_measure_size_fields_and_png() -> None:
    data = encode(picture(30, 50, 1), "PNG")
    m = measure(data)
    assert (m["format"], m["jpeg_quality"], m["subsampling"]) == ("PNG", None, None)
    assert (m["width"], m["height"], m["n_bytes"]) == (50, 30, len(data))
    assert m["aspect"] == pytest.approx(50 / 30)
    assert m["bits_per_pixel"] == pytest.approx(8 * len(data) / 1500)
    grey = encode(picture(16, 16, 2)[..., 0], "JPEG", quality=80)
    assert measure(grey)["subsampling"] is None  # no chroma, nothing subsampled


def test_measure_metadata_flags() -> None:
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    arr = picture(16, 16, 3)
    for fmt in ("JPEG", "PNG"):
        plain = measure(encode(arr, fmt))
        assert (plain["has_exif"], plain["has_icc"]) == (False, False)
        both = measure(encode(arr, fmt, exif=exif.tobytes(), icc_profile=icc))
        assert (both["has_exif"], both["has_icc"]) == (True, True)
        only_icc = measure(encode(arr, fmt, icc_profile=icc))
        assert (only_icc["has_exif"], only_icc["has_icc"]) == (False, True)


def test_measure_and_normalize_see_the_upright_picture() -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    data = encode(picture(24, 40, 8), "JPEG", quality=88, exif=exif.tobytes())
    m = measure(data)
    assert (m["width"], m["height"], m["has_exif"]) == (24, 40, True)
    new, rec = run_policy(images_table([image_row("r", 0, data, "photos")]), NormalizeConfig(format="jpeg"))
    out = new.to_pylist()[0]
    assert (out["width"], out["height"]) == (24, 40) == decode(out["image"]["bytes"]).shape[1::-1]
    assert measure(out["image"]["bytes"])["has_exif"] is False


def independent_hf_energy(rgb: np.ndarray) -> float:
    """The documented formula with an 8x8 DCT-II matrix built here, one block at a time."""
    n = 8
    k, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    d = np.sqrt(2 / n) * np.cos(np.pi * (2 * x + 1) * k / (2 * n))
    d[0] /= np.sqrt(2)
    assert np.allclose(d @ d.T, np.eye(n))  # orthonormal
    rgb = rgb.astype(np.float64)
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    ratios = []
    for by in range(y.shape[0] // n):
        for bx in range(y.shape[1] // n):
            c = d @ y[by * n : by * n + n, bx * n : bx * n + n] @ d.T
            e = c**2
            ac = e.sum() - e[0, 0]
            hf = sum(e[u, v] for u in range(n) for v in range(n) if u + v >= 8)
            if ac >= 64:
                ratios.append(hf / ac)
    return float(np.mean(ratios)) if ratios else 0.0


def test_hf_energy_matches_independent_dct() -> None:
    arr = picture(45, 70, 4)  # partial blocks at the right and bottom are left out
    arr[:16, :24] = 128  # flat blocks are left out of the mean
    arr[20:28, 40:48] = np.where(np.arange(8)[None, :, None] % 2, 129, 128)  # RMS 0.5: left out
    expected = independent_hf_energy(arr)
    assert 0 < expected < 28 / 63
    assert hf_energy(arr) == pytest.approx(expected, rel=1e-12)
    assert measure(encode(arr, "PNG"))["hf_energy"] == pytest.approx(expected, rel=1e-12)
    assert hf_energy(np.full((16, 16, 3), 7, np.uint8)) == 0.0
    assert hf_energy(np.zeros((7, 100, 3), np.uint8)) is None
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert hf_energy(noise) == pytest.approx(28 / 63, abs=0.02)  # white noise: flat spectrum


def test_hf_energy_lower_for_blur_and_heavy_jpeg() -> None:
    from PIL import Image, ImageFilter

    arr = picture(128, 160, 5)
    sharp = measure(encode(arr, "PNG"))["hf_energy"]
    q50 = measure(encode(arr, "JPEG", quality=50))["hf_energy"]
    blurred = Image.fromarray(arr).filter(ImageFilter.GaussianBlur(1.5))
    blur = measure(encode(np.asarray(blurred), "PNG"))["hf_energy"]
    assert q50 < sharp / 4 and blur < sharp / 4


def test_measure_rows_schema_and_errors() -> None:
    rows = [image_row("a", 0, encode(picture(24, 40, 6), "JPEG", quality=70), "photos"),
            image_row("b", 1, encode(picture(32, 32, 7), "PNG"), "gen")]
    m = measure_rows(images_table(rows))
    assert m.schema == MEASURES.arrow
    assert m.column("image_id").to_pylist() == ["a", "b"]
    assert m.column("jpeg_quality").to_pylist() == [70, None]
    assert m.column("width").to_pylist() == [40, 32]
    rows[1]["image"] = {"bytes": b"not an image", "path": None}
    with pytest.raises(ValueError, match="'b'"):
        measure_rows(images_table(rows))


# ---------------------------------------------------------------- normalize


def test_config_validation() -> None:
    assert build(NormalizeConfig, {}, "normalize") == NormalizeConfig()
    cfg = build(NormalizeConfig, {"format": "per_pair", "short_side": 256, "crop": "centre",
                                  "crop_size": 224}, "curation.normalize")
    assert cfg.crop_size == 224
    bad = [({"quality": 0}, "quality"), ({"quality": 101}, "quality"),
           ({"crop": "centre"}, "crop_size"), ({"crop_size": 64}, "crop_size"),
           ({"short_side": 100, "crop": "random", "crop_size": 200}, "crop_size"),
           ({"format": "webp"}, "format"), ({"sharpen": True}, "sharpen"),
           ({"short_side": -1}, "short_side")]
    for data, key in bad:
        with pytest.raises(ConfigError, match=f"curation.normalize.{key}"):
            build(NormalizeConfig, data, "curation.normalize")


@pytest.fixture(scope="module")
def small() -> pa.Table:
    """Two JPEG reals (different quality/subsampling), one PNG real, three PNG fakes."""
    return images_table([
        image_row("r0", 0, encode(picture(60, 80, 10), "JPEG", quality=72, subsampling="4:4:4"), "photos"),
        image_row("r1", 0, encode(picture(90, 72, 11), "JPEG", quality=93, subsampling="4:2:0"), "photos"),
        image_row("r2", 0, encode(picture(64, 64, 12), "PNG"), "scans"),
        image_row("f0", 1, encode(picture(64, 64, 13), "PNG"), "gen"),
        image_row("f1", 1, encode(picture(64, 64, 14), "PNG"), "gen"),
        image_row("f2", 1, encode(picture(64, 64, 15), "PNG"), "gen"),
    ])  # fmt: skip


def test_jpeg_policy_treats_reals_and_fakes_alike(small: pa.Table) -> None:
    before = small.to_pylist()
    new, rec = run_policy(small, NormalizeConfig(format="jpeg", quality=85, subsampling="4:2:2"))
    assert small.to_pylist() == before  # originals untouched
    assert new.schema == IMAGES.arrow and rec.schema == NORMALIZED.arrow
    assert new.column("image_id").to_pylist() == small.column("image_id").to_pylist()
    for old, row, r in zip(before, new.to_pylist(), rec.to_pylist(), strict=True):
        data = row["image"]["bytes"]
        assert encoded_like(data, 85, "4:2:2"), row["image_id"]  # reals re-encoded too
        assert (row["format"], row["jpeg_quality"], row["sha256"]) == ("JPEG", 85, sha256_bytes(data))
        assert (row["width"], row["height"]) == (old["width"], old["height"])
        assert r["original_sha256"] == old["sha256"] != r["sha256"]
        assert (r["from_format"], r["to_format"], r["quality"], r["subsampling"]) == (
            old["format"], "JPEG", 85, "4:2:2")
        for col in ("label", "source", "prompt", "origin", "class_id"):
            assert row[col] == old[col]
        assert not any(b in data for b in (b"Exif", b"ICC_PROFILE"))


def test_per_pair_copies_each_real_encoding(small: pa.Table) -> None:
    pairs = {"f0": "r0", "f1": "r1"}  # f2 unpaired
    new, rec = run_policy(small, NormalizeConfig(format="per_pair"), pairs)
    out, records, old = by_id(new), by_id(rec), by_id(small)
    assert encoded_like(out["f0"]["image"]["bytes"], 72, "4:4:4")
    assert encoded_like(out["f1"]["image"]["bytes"], 93, "4:2:0")
    for real in ("r0", "r1", "r2"):  # no size policy: the reals keep their bytes
        assert out[real]["image"] == old[real]["image"]
        assert records[real]["sha256"] == old[real]["sha256"]
    assert records["f0"]["encoded_like"] == "r0" and records["f0"]["policy"] == "per_pair"
    like = records["f2"]["encoded_like"]
    assert records["f2"]["policy"] == UNPAIRED and like in ("r0", "r1", "r2")
    f2 = out["f2"]["image"]["bytes"]
    if like == "r2":
        assert out["f2"]["format"] == "PNG" and np.array_equal(decode(f2), decode(old["f2"]["image"]["bytes"]))
    else:
        assert encoded_like(f2, *{"r0": (72, "4:4:4"), "r1": (93, "4:2:0")}[like])


def test_per_pair_with_size_policy_reencodes_reals_like_themselves(small: pa.Table) -> None:
    from PIL import Image

    cfg = NormalizeConfig(format="per_pair", short_side=48, crop="centre", crop_size=40)
    new, rec = run_policy(small, cfg, {"f0": "r1", "f1": "r0", "f2": "r2"})
    out, records, old = by_id(new), by_id(rec), by_id(small)
    for i, row in out.items():
        assert (row["width"], row["height"]) == (40, 40), i
        assert records[i]["resized"]
    assert encoded_like(out["r1"]["image"]["bytes"], 93, "4:2:0")
    assert encoded_like(out["f0"]["image"]["bytes"], 93, "4:2:0")
    assert encoded_like(out["f1"]["image"]["bytes"], 72, "4:4:4")
    # r2 (64x64 PNG) -> 48x48 Lanczos -> centre 40x40, losslessly: check the pixels.
    src = Image.fromarray(decode(old["r2"]["image"]["bytes"]))
    want = np.asarray(src.resize((48, 48), Image.Resampling.LANCZOS).crop((4, 4, 44, 44)))
    assert out["r2"]["format"] == "PNG" and np.array_equal(decode(out["r2"]["image"]["bytes"]), want)
    # r1 is 72x90: short side 72 -> 48 gives 48x60, centre crop box (4, 10, 44, 50).
    assert records["r1"]["crop_box"] == "4,10,44,50"


def test_keep_policy_and_png_policy(small: pa.Table) -> None:
    new, rec = run_policy(small, NormalizeConfig(format="keep"))
    assert new.to_pylist() == small.to_pylist()  # bytes, path and every column unchanged
    assert rec.column("sha256").to_pylist() == rec.column("original_sha256").to_pylist()
    new, _ = run_policy(small, NormalizeConfig(format="keep", short_side=32))
    out = by_id(new)
    assert encoded_like(out["r0"]["image"]["bytes"], 72, "4:4:4")
    assert min(out["r1"]["width"], out["r1"]["height"]) == 32 and out["f0"]["format"] == "PNG"
    new, _ = run_policy(small, NormalizeConfig(format="png"))
    for old, row in zip(small.to_pylist(), new.to_pylist(), strict=True):
        assert row["format"] == "PNG" and row["jpeg_quality"] is None
        assert np.array_equal(decode(row["image"]["bytes"]), decode(old["image"]["bytes"]))


def test_jpeg_sampled_draws_from_real_jpegs_only(small: pa.Table) -> None:
    m = measure_rows(small)
    plans = plan_rows(m, NormalizeConfig(format="jpeg_sampled"), seed=3)
    drawn = {(p["quality"], p["subsampling"]) for p in plans}
    assert drawn <= {(72, "4:4:4"), (93, "4:2:0")} and all(p["to_format"] == "JPEG" for p in plans)
    assert all(p["encoded_like"] in ("r0", "r1") for p in plans)
    reversed_plans = plan_rows(m.take(list(range(m.num_rows))[::-1]), NormalizeConfig(format="jpeg_sampled"), 3)
    assert {p["image_id"]: p for p in reversed_plans} == {p["image_id"]: p for p in plans}
    many = [plan_rows(m, NormalizeConfig(format="jpeg_sampled"), s)[3]["quality"] for s in range(20)]
    assert set(many) == {72, 93}  # the draw depends on the seed
    pngs_only = m.filter(pc.invert(pc.is_in(m.column("image_id"), pa.array(["r0", "r1"]))))
    with pytest.raises(ValueError, match="real JPEG"):
        plan_rows(pngs_only, NormalizeConfig(format="jpeg_sampled"), 0)


def test_random_crop_is_seeded(small: pa.Table) -> None:
    cfg = NormalizeConfig(format="png", crop="random", crop_size=24)
    data = small.column("image").to_pylist()[1]["bytes"]  # r1, 72x90
    plan = plan_rows(measure_rows(small), cfg, 0)[1]
    a, ra = normalize_image(data, plan, 11)
    b, rb = normalize_image(data, plan, 11)
    assert a == b and ra == rb
    boxes = {normalize_image(data, plan, s)[1]["crop_box"] for s in range(8)}
    assert len(boxes) > 1
    full = decode(data)
    for box in boxes:
        left, top, right, bottom = map(int, box.split(","))
        assert right - left == bottom - top == 24 and 0 <= left <= 72 - 24 and 0 <= top <= 90 - 24
    left, top, *_ = map(int, ra["crop_box"].split(","))
    assert np.array_equal(decode(a), full[top : top + 24, left : left + 24])
    seeds = [normalize_seed(0, i) for i in small.column("image_id").to_pylist()]
    plans = plan_rows(measure_rows(small), cfg, 0)
    assert normalize_rows(small, plans, seeds)[0] == normalize_rows(small, plans, seeds)[0]


def test_plan_errors(small: pa.Table) -> None:
    m = measure_rows(small)
    with pytest.raises(ValueError, match="'zz'.*not in the table"):
        plan_rows(m, NormalizeConfig(format="per_pair"), 0, {"f0": "zz"})
    with pytest.raises(ValueError, match="'f1'.*not a real image"):
        plan_rows(m, NormalizeConfig(format="per_pair"), 0, {"f0": "f1"})
    with pytest.raises(ValueError, match="'r0' is 80x60.*crop_size 64"):
        plan_rows(m, NormalizeConfig(crop="centre", crop_size=64), 0)
    plans = plan_rows(m, NormalizeConfig(), 0)
    with pytest.raises(ValueError, match="plans"):
        normalize_rows(small, plans[:-1], [0] * len(plans))


# ---------------------------------------------------------------- audit


def meta_table(rows: list[tuple]) -> pa.Table:
    keys = ("source", "label", "format", "jpeg_quality", "subsampling", "width", "height")
    out = []
    for i, r in enumerate(rows):
        d = dict(zip(keys, r, strict=True), image_id=f"i{i}")
        d.update(aspect=d["width"] / d["height"], n_bytes=1000 + i, has_exif=d["label"] == 0,
                 has_icc=False, bits_per_pixel=float(i % 7), hf_energy=0.01 * (i % 11))
        out.append(d)
    return pa.Table.from_pylist(out).select(MEASURES.arrow.names).cast(MEASURES.arrow)


def test_bias_audit_statistics_match_hand_computation() -> None:
    rng = np.random.default_rng(0)
    rows = [("photos", 0, "JPEG", int(q), "4:2:0", 640, 480) for q in rng.integers(70, 96, 40)]
    rows += [("gen", 1, "PNG" if i % 4 else "JPEG", None if i % 4 else 90, None if i % 4 else "4:4:4",
              512, 512) for i in range(30)]
    m = meta_table(rows)
    audit = bias_audit(m, "before", seed=1)
    assert audit.schema == BIAS_AUDIT.arrow
    got = {(r["source"], r["property"]): r for r in audit.to_pylist()}
    assert {p for s, p in got if s == "gen"} == {*PROPERTIES, AUC_PROPERTY}

    fmt = got[("gen", "format")]
    assert json.loads(fmt["value_counts"]) == {"JPEG": 8, "PNG": 22}
    # TV distance by hand: reals 100% JPEG, fakes 8/30 JPEG.
    assert fmt["tv_distance"] == pytest.approx(0.5 * (abs(1 - 8 / 30) + 22 / 30))
    assert json.loads(got[("photos", "has_exif")]["value_counts"]) == {"true": 40}

    # KS by hand: the largest gap between the two empirical CDFs.
    real = np.array([r[3] for r in rows if r[1] == 0], float)
    fake = np.array([r[3] for r in rows if r[1] == 1 and r[3] is not None], float)
    grid = np.union1d(real, fake)
    d = max(abs((real <= t).mean() - (fake <= t).mean()) for t in grid)
    q = got[("gen", "jpeg_quality")]
    assert q["n"] == 8 and q["ks_stat"] == pytest.approx(d) and 0 <= q["ks_pvalue"] <= 1
    pq = got[("photos", "jpeg_quality")]
    assert pq["mean"] == pytest.approx(real.mean()) and pq["p50"] == pytest.approx(np.median(real))
    assert pq["ks_stat"] is None and got[("gen", "width")]["ks_stat"] == 1.0
    assert got[(None, AUC_PROPERTY)]["auc"] > 0.9

    md = audit_markdown(audit)
    assert "## before" in md and "| real vs gen |" in md and "JPEG 40" in md


def test_format_only_auc_known_cases() -> None:
    rng = np.random.default_rng(1)
    q = rng.integers(70, 96, 80).tolist()
    ss = rng.choice(["4:2:0", "4:4:4"], 80).tolist()
    # Perfect separation by codec -> 1; identical metadata -> 0.5 exactly.
    sep = meta_table([("r", 0, "JPEG", q[i], ss[i], 64, 64) for i in range(80)]
                     + [("g", 1, "PNG", None, None, 64, 64) for _ in range(80)])
    assert format_only_auc(sep, 0) == 1.0
    same = meta_table([("r", 0, "JPEG", 90, "4:2:0", 64, 64)] * 50 + [("g", 1, "JPEG", 90, "4:2:0", 64, 64)] * 50)
    assert format_only_auc(same, 0) == 0.5
    # Paired metadata (each fake has its real's tuple): no information. The gate keeps the AUC at
    # 0.5; an ungated lookup is pushed far below by out-of-fold bias (why the gate exists).
    paired = meta_table([("r", 0, "JPEG", q[i], ss[i], 64, 64) for i in range(80)]
                        + [("g", 1, "JPEG", q[i], ss[i], 64, 64) for i in range(80)])
    assert abs(format_only_auc(paired, 0) - 0.5) <= 0.05
    assert format_only_auc(paired, 0, min_count=1, z=0.0) < 0.3
    # A leak through size alone, with quality splitting the full tuples: found by (codec, w, h).
    sizes = [(640, 480), (480, 640), (600, 400), (800, 600)]
    size_leak = meta_table([("r", 0, "JPEG", q[i], ss[i], *sizes[i % 4]) for i in range(80)]
                           + [("g", 1, "JPEG", q[i], ss[i], 512, 512) for i in range(80)])
    assert format_only_auc(size_leak, 0) > 0.95
    one_class = meta_table([("r", 0, "JPEG", 90, "4:2:0", 64, 64)] * 5)
    assert np.isnan(format_only_auc(one_class, 0))


# ---------------------------------------------------------------- issue 7: done when

CAMERA_SIZES = [(400, 300), (300, 400), (432, 288), (288, 432), (384, 288), (448, 336), (480, 320)]


@pytest.fixture(scope="module")
def corpus() -> pa.Table:
    """60 real JPEGs (quality 70-95, camera-like sizes, mixed subsampling), 60 PNG fakes 512x512."""
    rng = np.random.default_rng(2024)
    rows = []
    for i in range(60):
        w, h = CAMERA_SIZES[i % len(CAMERA_SIZES)]
        q, ss = int(rng.integers(70, 96)), ("4:2:0", "4:2:2", "4:4:4")[i % 3]
        rows.append(image_row(f"real{i:02d}", 0, encode(picture(h, w, i), "JPEG", quality=q, subsampling=ss), "photos"))
    for i in range(60):
        rows.append(image_row(f"fake{i:02d}", 1, encode(picture(512, 512, 100 + i), "PNG", compress_level=0), "sdxl"))
    return images_table(rows)


def test_done_when_format_only_auc_before_and_after(corpus: pa.Table) -> None:
    pairs = {f"fake{i:02d}": f"real{i:02d}" for i in range(60)}
    size = {"short_side": 256, "crop": "centre", "crop_size": 256}
    m0 = measure_rows(corpus)
    before = format_only_auc(m0, 0)
    after = {}
    audits = [bias_audit(m0, "before")]
    for fmt in ("jpeg", "per_pair"):
        new, rec = run_policy(corpus, NormalizeConfig(format=fmt, **size), pairs, measures=m0)
        assert {(r["width"], r["height"]) for r in rec.to_pylist()} == {(256, 256)}
        m1 = measure_rows(new)
        after[fmt] = format_only_auc(m1, 0)
        audits.append(bias_audit(m1, f"after {fmt}"))
        if fmt == "per_pair":  # each fake carries its real's quality and subsampling
            codec = {r["image_id"]: (r["jpeg_quality"], r["subsampling"]) for r in m1.to_pylist()}
            codec0 = {r["image_id"]: (r["jpeg_quality"], r["subsampling"]) for r in m0.to_pylist()}
            assert all(codec[f] == codec[r] == codec0[r] for f, r in pairs.items())
    # Negative control: per_pair without the size policy leaves 512x512 fakes among camera sizes
    # (sizes are unchanged, so the plan's codec fields and the original sizes are the metadata).
    plans = plan_rows(m0, NormalizeConfig(format="per_pair"), 0, pairs)
    control = m0.drop_columns(["format", "jpeg_quality", "subsampling"])
    for col, key, typ in (("format", "to_format", pa.string()), ("jpeg_quality", "quality", pa.int16()),
                          ("subsampling", "subsampling", pa.string())):
        control = control.append_column(col, pa.array([p[key] for p in plans], typ))
    assert set(control.column("format").to_pylist()) == {"JPEG"}
    size_leak = format_only_auc(control, 0)
    print(f"\nformat-only AUC before {before:.3f}, after jpeg {after['jpeg']:.3f}, "
          f"after per_pair {after['per_pair']:.3f}, per_pair without size policy {size_leak:.3f}")
    assert before >= 0.95
    assert abs(after["jpeg"] - 0.5) <= 0.05 and abs(after["per_pair"] - 0.5) <= 0.05
    assert size_leak >= 0.95
    md = audit_markdown(audits)
    assert "| all images | 1.000 | 0.500 | 0.500 |" in md.replace(f"{before:.3f}", "1.000")
