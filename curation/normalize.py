"""Format and size normalization: the same encoding code for real and generated images.

A detector trained where reals are JPEG and fakes PNG learns the codec ("Fake or JPEG?", 2024);
DDA (NeurIPS 2025) re-encodes each fake at its own real's JPEG quality. The originals stay as
they were; normalization writes NEW bytes beside them and records, per row, what it did.

Two steps. `plan_rows` decides each row's treatment from measurements only (cheap: run it once
over the whole corpus, so sampled qualities and pairs see every real image); `normalize_rows`
applies the plans to a shard of image bytes. Policies (`NormalizeConfig.format`):

- keep: bytes unchanged. A size policy that changes the pixels forces a re-encode "like itself"
  (JPEG at its own estimated quality and subsampling; any other codec as lossless PNG).
- png: every image re-encoded as lossless PNG (a real JPEG keeps its JPEG artifacts in the pixels;
  only the container stops differing).
- jpeg: every image, real and fake, decoded and re-encoded as JPEG at `quality` / `subsampling`.
  Real JPEGs are thus compressed twice and fakes once; the audit's hf_energy shows what remains.
- jpeg_sampled: every image re-encoded as JPEG; its (quality, subsampling) is copied from one real
  JPEG drawn per image_id (seeded), so the joint distribution of the real JPEGs is reproduced.
  Real images stored losslessly (PNG, ...) are left out of that distribution: they have no
  quality to copy, and counting them as q=100 would add a quality no real JPEG has.
- per_pair: each generated image is encoded exactly like its paired real (same codec, the real's
  estimated quality and subsampling). The real keeps its bytes unless a size policy changes its
  pixels (then it is re-encoded like itself) or its codec is neither JPEG nor PNG (then PNG, so
  real and fake share a codec). A fake without a pair copies a real drawn per image_id from all
  reals (codec included) and is recorded with policy "per_pair:unpaired".

Size: the short side is scaled to `short_side` (aspect kept; Lanczos when shrinking, bicubic when
enlarging; both up and down, so sizes really equalize), then a `crop_size` square is cut at the
centre or at an offset drawn from the per-image seed. Encoders: Pillow JPEG with
`quality=q, subsampling=s, optimize=False` and PNG via `aigi.manifests.imagebytes.encode_png`;
neither carries EXIF, ICC or other metadata over, so re-encoded images have none. Same plan and
seed -> same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from aigi.core.configtools import check
from aigi.manifests.ids import derive_seed, sha256_bytes
from aigi.manifests.schema import IMAGES, NORMALIZED

FORMATS = ("keep", "png", "jpeg", "jpeg_sampled", "per_pair")
SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
CROPS = ("none", "centre", "random")
UNPAIRED = "per_pair:unpaired"

# Layouts Pillow cannot write map to the one with the same number of chroma samples.
_ENCODABLE = {"4:4:4": "4:4:4", "4:2:2": "4:2:2", "4:2:0": "4:2:0", "4:1:1": "4:2:0", "4:4:0": "4:2:2"}
_PLAN_COLUMNS = ("image_id", "label", "format", "jpeg_quality", "subsampling", "width", "height")


@dataclass(frozen=True)
class NormalizeConfig:
    format: Literal["keep", "png", "jpeg", "jpeg_sampled", "per_pair"] = "keep"
    quality: int = 90
    subsampling: Literal["4:4:4", "4:2:2", "4:2:0"] = "4:2:0"
    short_side: int = 0  # 0: no resize
    crop: Literal["none", "centre", "random"] = "none"
    crop_size: int = 0

    def __post_init__(self) -> None:
        check(self.format in FORMATS, "format", f"must be one of {FORMATS}, got {self.format!r}")
        check(1 <= self.quality <= 100, "quality", f"must be in 1..100, got {self.quality}")
        check(self.subsampling in SUBSAMPLINGS, "subsampling", f"must be one of {SUBSAMPLINGS}")
        check(self.short_side >= 0, "short_side", "must be >= 0 (0 = no resize)")
        check(self.crop in CROPS, "crop", f"must be one of {CROPS}, got {self.crop!r}")
        check(self.crop_size >= 0, "crop_size", "must be >= 0")
        if self.crop != "none":
            check(self.crop_size > 0, "crop_size", f'must be > 0 when crop = "{self.crop}"')
        else:
            check(self.crop_size == 0, "crop_size", 'is set but crop = "none"')
        if self.short_side and self.crop_size:
            check(
                self.crop_size <= self.short_side,
                "crop_size",
                f"{self.crop_size} is larger than short_side {self.short_side}",
            )


def normalize_seed(run_seed: int, image_id: str) -> int:
    """The per-image seed of normalization (random crop offset)."""
    return derive_seed(run_seed, "normalize", image_id)


def _resized_size(w: int, h: int, short_side: int) -> tuple[int, int]:
    if not short_side or min(w, h) == short_side:
        return w, h
    scale = short_side / min(w, h)
    if w <= h:
        return short_side, max(1, round(h * scale))
    return max(1, round(w * scale)), short_side


def _own_codec(row: dict, cfg: NormalizeConfig) -> tuple[str, int | None, str | None]:
    """How to re-encode an image "like itself": JPEG at its own settings, anything else PNG."""
    if row["format"] != "JPEG":
        return "PNG", None, None
    q = row["jpeg_quality"] if row["jpeg_quality"] is not None else cfg.quality
    return "JPEG", int(q), _ENCODABLE.get(row["subsampling"] or "", cfg.subsampling)


def _draw(pool: list[dict], run_seed: int, image_id: str) -> dict:
    rng = np.random.default_rng(derive_seed(run_seed, "normalize.draw", image_id))
    return pool[int(rng.integers(len(pool)))]


def plan_rows(
    images: pa.Table, cfg: NormalizeConfig, seed: int, pairs: dict[str, str] | None = None
) -> list[dict]:
    """One plan per row (row order): the treatment `normalize_image` applies.

    `images` needs image_id, label, format, jpeg_quality, subsampling, width, height (a MEASURES
    table has them all). `pairs` maps a generated image_id to its real image_id (per_pair). The
    result depends on the rows and the seed only, not on row order. Raises ValueError for a crop
    larger than an image, a pair naming an image not in the table or of the wrong label, and
    jpeg_sampled without any real JPEG.
    """
    missing = [c for c in _PLAN_COLUMNS if c not in images.column_names]
    if missing:
        raise ValueError(f"plan_rows: input lacks column(s) {missing}")
    rows = images.select(list(_PLAN_COLUMNS)).to_pylist()
    by_id = {r["image_id"]: r for r in rows}
    if len(by_id) != len(rows):
        raise ValueError("plan_rows: duplicate image_id values")
    reals = sorted((r for r in rows if r["label"] == 0), key=lambda r: r["image_id"])
    real_jpegs = [r for r in reals if r["format"] == "JPEG"]
    if cfg.format == "jpeg_sampled" and not real_jpegs:
        raise ValueError("plan_rows: format 'jpeg_sampled' needs at least one real JPEG to sample from")
    pairs = pairs or {}
    size = {"short_side": cfg.short_side, "crop": cfg.crop, "crop_size": cfg.crop_size}

    plans = []
    for r in rows:
        w, h = _resized_size(r["width"], r["height"], cfg.short_side)
        if cfg.crop_size and min(w, h) < cfg.crop_size:
            raise ValueError(
                f"plan_rows: image {r['image_id']!r} is {w}x{h} after resizing, smaller than "
                f"crop_size {cfg.crop_size}"
            )
        pixels_change = (w, h) != (r["width"], r["height"]) or (
            cfg.crop_size > 0 and (w, h) != (cfg.crop_size, cfg.crop_size)
        )
        own = _own_codec(r, cfg)
        policy, like = cfg.format, None
        if cfg.format == "keep":
            encode, target = pixels_change, own
        elif cfg.format == "png":
            encode, target = True, ("PNG", None, None)
        elif cfg.format == "jpeg":
            encode, target = True, ("JPEG", cfg.quality, cfg.subsampling)
        elif cfg.format == "jpeg_sampled":
            drawn = _draw(real_jpegs, seed, r["image_id"])
            encode, target, like = True, _own_codec(drawn, cfg), drawn["image_id"]
        elif r["label"] == 0:  # per_pair, a real image
            encode = pixels_change or r["format"] not in ("JPEG", "PNG")
            target = own
        else:  # per_pair, a generated image
            like = pairs.get(r["image_id"])
            if like is None:
                if not reals:
                    raise ValueError("plan_rows: per_pair has an unpaired image and no real image")
                like, policy = _draw(reals, seed, r["image_id"])["image_id"], UNPAIRED
            real = by_id.get(like)
            if real is None or real["label"] != 0:
                why = "is not in the table" if real is None else "is not a real image (label 0)"
                raise ValueError(f"plan_rows: image {r['image_id']!r} is paired with {like!r}, which {why}")
            encode, target = True, _own_codec(real, cfg)
        to_format, quality, sampling = target if encode else (r["format"], r["jpeg_quality"], r["subsampling"])
        plans.append(
            {
                "image_id": r["image_id"],
                "policy": policy,
                "encode": encode,
                "from_format": r["format"],
                "to_format": to_format,
                "quality": quality,
                "subsampling": sampling,
                "encoded_like": like,
                "width": r["width"],  # as decoded (upright), before any resize or crop
                "height": r["height"],
                **size,
            }
        )
    return plans


def _encode(img: Any, fmt: str, quality: int | None, subsampling: str | None) -> bytes:
    from aigi.manifests.imagebytes import encode_png

    if fmt == "PNG":
        return encode_png(img)
    if fmt != "JPEG":
        raise ValueError(f"cannot encode to {fmt!r} (JPEG or PNG)")
    buf = io.BytesIO()
    # No exif= / icc_profile=: nothing of the original's metadata is carried over.
    img.save(buf, format="JPEG", quality=int(quality), subsampling=subsampling, optimize=False)
    return buf.getvalue()


def normalize_image(data: bytes, plan: dict, seed: int) -> tuple[bytes, dict]:
    """Apply one plan to one image: (new bytes, NORMALIZED record). `seed` places a random crop."""
    from PIL import Image

    from aigi.manifests.imagebytes import decode_rgb

    record = {
        "image_id": plan["image_id"],
        "policy": plan["policy"],
        "from_format": plan["from_format"],
        "to_format": plan["to_format"],
        "quality": plan["quality"],
        "subsampling": plan["subsampling"],
        "resized": False,
        "crop_box": None,
        "original_sha256": sha256_bytes(data),
        "encoded_like": plan["encoded_like"],
        "seed": int(seed),
    }
    if not plan["encode"]:
        size = {"width": plan["width"], "height": plan["height"]}
        return data, {**record, "sha256": record["original_sha256"], **size}

    img = decode_rgb(data)
    w, h = _resized_size(img.width, img.height, plan["short_side"])
    if (w, h) != img.size:
        shrink = w < img.width
        img = img.resize((w, h), Image.Resampling.LANCZOS if shrink else Image.Resampling.BICUBIC)
        record["resized"] = True
    cs = plan["crop_size"]
    if plan["crop"] != "none":
        if min(w, h) < cs:
            raise ValueError(f"image {plan['image_id']!r} is {w}x{h}, smaller than crop_size {cs}")
        if plan["crop"] == "centre":
            left, top = (w - cs) // 2, (h - cs) // 2
        else:
            rng = np.random.default_rng(seed)
            left, top = int(rng.integers(w - cs + 1)), int(rng.integers(h - cs + 1))
        box = (left, top, left + cs, top + cs)
        img = img.crop(box)
        record["crop_box"] = ",".join(map(str, box))
    out = _encode(img, plan["to_format"], plan["quality"], plan["subsampling"])
    return out, {**record, "sha256": sha256_bytes(out), "width": img.width, "height": img.height}


def normalize_rows(
    images: pa.Table, plans: list[dict], seeds: list[int]
) -> tuple[pa.Table, pa.Table]:
    """(IMAGES table with the new bytes, NORMALIZED table), both in row order.

    `plans` and `seeds` are aligned with the rows (plans from `plan_rows`, seeds from
    `normalize_seed`). The new rows keep image_id and every other column; image, sha256, format,
    jpeg_quality, width and height describe the new bytes. image.path is kept where the bytes are
    unchanged and set to null where they are new (the `origin` column still names the source item).
    The input table is not modified.
    """
    missing = [c for c in IMAGES.arrow.names if c not in images.column_names]
    if missing:
        raise ValueError(f"normalize_rows: input lacks IMAGES column(s) {missing}")
    if not len(plans) == len(seeds) == images.num_rows:
        raise ValueError(
            f"normalize_rows: {images.num_rows} rows but {len(plans)} plans and {len(seeds)} seeds"
        )
    table = images.select(IMAGES.arrow.names).cast(IMAGES.arrow)
    ids = table.column("image_id").to_pylist()
    old = table.column("image").to_pylist()
    keep_cols = ("sha256", "format", "jpeg_quality", "width", "height")
    before = {c: table.column(c).to_pylist() for c in keep_cols}
    records: list[dict] = []
    after: dict[str, list] = {c: [] for c in ("image", *keep_cols)}
    for i, (image_id, image, plan, seed) in enumerate(zip(ids, old, plans, seeds, strict=True)):
        if plan["image_id"] != image_id:
            raise ValueError(f"normalize_rows: plan for {plan['image_id']!r} given for row {image_id!r}")
        if not image or not image["bytes"]:
            raise ValueError(f"normalize_rows: image {image_id!r} has no bytes")
        try:
            data, rec = normalize_image(image["bytes"], plan, seed)
        except Exception as exc:
            raise ValueError(f"normalize_rows: cannot normalize image {image_id!r}: {exc}") from exc
        records.append(rec)
        if not plan["encode"]:  # the stored row already describes these bytes
            after["image"].append(image)
            for c in keep_cols:
                after[c].append(before[c][i])
            continue
        after["image"].append({"bytes": data, "path": None})
        after["sha256"].append(rec["sha256"])
        after["format"].append(rec["to_format"])
        after["jpeg_quality"].append(rec["quality"] if rec["to_format"] == "JPEG" else None)
        after["width"].append(rec["width"])
        after["height"].append(rec["height"])
    for name, values in after.items():
        field = IMAGES.arrow.field(name)
        table = table.set_column(table.schema.get_field_index(name), field, pa.array(values, field.type))
    return table, pa.Table.from_pylist(records, schema=NORMALIZED.arrow)
