"""Arrow schemas of every table aigi writes. Schemas are code: versioned, checked on read."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa

IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@dataclass(frozen=True)
class Schema:
    """A named, versioned Arrow schema.

    `image_columns` are struct<bytes, path> columns marked as Hugging Face `Image` features, so
    `datasets.load_dataset("parquet", ...)` decodes them to PIL images.
    """

    name: str
    version: int
    arrow: pa.Schema
    image_columns: tuple[str, ...] = ()
    uncompressed: tuple[str, ...] = field(default=())

    def hf_metadata(self) -> bytes | None:
        if not self.image_columns:
            return None
        features = {}
        for f in self.arrow:
            if f.name in self.image_columns:
                features[f.name] = {"_type": "Image"}
            else:
                features[f.name] = {"_type": "Value", "dtype": _hf_dtype(f.type)}
        return json.dumps({"info": {"features": features}}).encode()


def _hf_dtype(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_binary(t):
        return "binary"
    if pa.types.is_floating(t):
        return {16: "float16", 32: "float32", 64: "float64"}[t.bit_width]
    if pa.types.is_integer(t):
        return str(t)  # int8, int16, uint64, ... are spelled the same in Arrow and `datasets`
    raise TypeError(f"no Hugging Face dtype for Arrow type {t}")


IMAGES = Schema(
    name="aigi.images",
    version=4,
    arrow=pa.schema(
        [
            ("image_id", pa.string()),
            ("image", IMAGE_STRUCT),
            ("label", pa.int8()),
            ("source", pa.string()),
            ("sha256", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("format", pa.string()),
            ("jpeg_quality", pa.int16()),
            ("prompt_id", pa.string()),
            ("prompt", pa.string()),
            ("class_id", pa.int32()),
            ("class_name", pa.string()),
            # generation provenance (null for real images)
            ("model", pa.string()),
            ("revision", pa.string()),
            ("pipeline", pa.string()),
            ("scheduler", pa.string()),
            ("scheduler_config", pa.string()),  # hash of the scheduler's config
            ("steps", pa.int32()),
            ("guidance", pa.float64()),  # the value used, exactly
            ("seed", pa.int64()),
            ("dtype", pa.string()),
            ("negative_prompt", pa.string()),
            ("safety_checker", pa.bool_()),  # whether a safety checker ran (it can blank images)
            # real images: where the item came from, relative to its source root
            ("origin", pa.string()),
            # how the stored bytes were decoded to RGB when not plainly (EXIF rotation, 16-bit
            # scaling, alpha flattening, first of several frames, ...); null when plain
            ("conversion", pa.string()),
            # aligned fakes: the image_id of the real image this one was made from
            ("parent_id", pa.string()),
            ("aligned_mode", pa.string()),  # vae_roundtrip, regenerate, inpaint, img2img
            ("strength", pa.float32()),
            # the inpainting mask (PNG, white = repainted); for a real image, the mask its source
            # supplies (e.g. a COCO object), which `inpaint` with mask = "source" uses
            ("mask", IMAGE_STRUCT),
            ("mask_area", pa.float32()),  # share of the image repainted
            ("psnr", pa.float32()),  # change against the parent (fitted to the fake's size)
            ("ssim", pa.float32()),
            ("lpips", pa.float32()),  # null: LPIPS weights are not available offline
        ]
    ),
    image_columns=("image", "mask"),
    uncompressed=("image.bytes",),
)

PROMPTS = Schema(
    name="aigi.prompts",
    version=1,
    arrow=pa.schema(
        [
            ("prompt_id", pa.string()),
            ("prompt", pa.string()),
            ("class_id", pa.int32()),
            ("class_name", pa.string()),
            ("source", pa.string()),
        ]
    ),
)

HASHES = Schema(
    name="aigi.hashes",
    version=1,
    arrow=pa.schema(
        [
            ("image_id", pa.string()),
            ("source", pa.string()),
            ("label", pa.int8()),
            ("sha256", pa.string()),
            ("pixel_sha256", pa.string()),
            ("phash", pa.uint64()),
            ("dhash", pa.uint64()),
        ]
    ),
)

DUPLICATES = Schema(
    name="aigi.duplicates",
    version=2,
    arrow=pa.schema(
        [
            ("image_id", pa.string()),
            ("dup_group", pa.string()),  # image_id of the group's centre (or representative)
            ("group_size", pa.int32()),
            ("keep", pa.bool_()),
            ("drop_reason", pa.string()),
            ("nearest_real", pa.string()),  # generated rows: nearest real image within the radius
            ("nearest_real_distance", pa.int16()),
        ]
    ),
)

NEAR_PAIRS = Schema(
    name="aigi.near_pairs",
    version=1,
    arrow=pa.schema(
        [("image_id_a", pa.string()), ("image_id_b", pa.string()), ("distance", pa.int16())]
    ),
)

MEASURES = Schema(
    name="aigi.measures",
    version=1,
    arrow=pa.schema(
        [
            ("image_id", pa.string()),
            ("source", pa.string()),
            ("label", pa.int8()),
            ("format", pa.string()),
            ("jpeg_quality", pa.int16()),
            ("subsampling", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("aspect", pa.float32()),  # width / height
            ("n_bytes", pa.int64()),
            ("bits_per_pixel", pa.float32()),
            ("has_exif", pa.bool_()),
            ("has_icc", pa.bool_()),
            ("hf_energy", pa.float32()),  # share of block-DCT AC energy at u + v >= 8
        ]
    ),
)

NORMALIZE_PLAN = Schema(
    name="aigi.normalize_plan",
    version=1,
    arrow=pa.schema(
        [
            ("image_id", pa.string()),
            ("policy", pa.string()),
            ("encode", pa.bool_()),  # false: the bytes are kept as they are
            ("from_format", pa.string()),
            ("to_format", pa.string()),
            ("quality", pa.int16()),
            ("subsampling", pa.string()),
            ("encoded_like", pa.string()),  # the real whose encoding is copied
            ("width", pa.int32()),  # as decoded, before resize or crop
            ("height", pa.int32()),
            ("short_side", pa.int32()),
            ("crop", pa.string()),
            ("crop_size", pa.int32()),
        ]
    ),
)

NORMALIZED = Schema(
    name="aigi.normalized",
    version=1,
    arrow=pa.schema(
        [
            ("image_id", pa.string()),
            ("policy", pa.string()),
            ("from_format", pa.string()),
            ("to_format", pa.string()),
            ("quality", pa.int16()),
            ("subsampling", pa.string()),
            ("resized", pa.bool_()),
            ("crop_box", pa.string()),  # "l,t,r,b" in the (resized) image; null when not cropped
            ("original_sha256", pa.string()),
            ("sha256", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("encoded_like", pa.string()),  # image_id of the real whose encoding was copied
            ("seed", pa.int64()),
        ]
    ),
)

BIAS_AUDIT = Schema(
    name="aigi.bias_audit",
    version=1,
    arrow=pa.schema(
        [
            ("when", pa.string()),  # e.g. "before", "after"
            ("source", pa.string()),  # null on the classifier row over all sources
            ("label", pa.int8()),
            ("property", pa.string()),
            ("kind", pa.string()),  # numeric, categorical, classifier
            ("n", pa.int64()),  # non-null values (property rows); images (classifier rows)
            ("mean", pa.float64()),
            ("p05", pa.float64()),
            ("p50", pa.float64()),
            ("p95", pa.float64()),
            ("value_counts", pa.string()),  # JSON {value: count}; null is "null"
            ("ks_stat", pa.float64()),
            ("ks_pvalue", pa.float64()),
            ("tv_distance", pa.float64()),
            ("chi2_pvalue", pa.float64()),
            ("auc", pa.float64()),
        ]
    ),
)

FREQUENCY_PARITY = Schema(
    name="aigi.frequency_parity",
    version=1,
    arrow=pa.schema(
        [
            ("when", pa.string()),  # before / after normalization
            ("source", pa.string()),  # the generator
            ("mode", pa.string()),  # its aligned mode
            ("n_pairs", pa.int64()),
            ("n_missing", pa.int64()),  # pairs without an hf_energy on one side
            ("ratio_p05", pa.float64()),  # hf_energy(fake) / hf_energy(parent)
            ("ratio_p50", pa.float64()),
            ("ratio_p95", pa.float64()),
            ("share_outside", pa.float64()),  # |ratio - 1| > tolerance
            ("tolerance", pa.float64()),
        ]
    ),
)

PAIRS = Schema(
    name="aigi.pairs",
    version=1,
    arrow=pa.schema(
        [
            ("image_id", pa.string()),
            ("label", pa.int8()),
            ("pair_by", pa.string()),  # parent, caption or class; null when unpaired
            ("pair_id", pa.string()),  # a fake's (first) real; a linked real's own id
            ("reals", pa.list_(pa.string())),  # every real a fake is paired with
            ("pair_group", pa.string()),  # connected component of the links
        ]
    ),
)

SPLITS = Schema(
    name="aigi.splits",
    version=1,
    arrow=pa.schema(
        [
            ("image_id", pa.string()),
            ("source", pa.string()),
            ("label", pa.int8()),
            ("group", pa.string()),
            ("split", pa.string()),
        ]
    ),
)

SPLIT_AUDIT = Schema(
    name="aigi.split_audit",
    version=1,
    arrow=pa.schema(
        [
            ("image_id_a", pa.string()),
            ("image_id_b", pa.string()),
            ("distance", pa.int16()),  # pHash Hamming distance
            ("split_a", pa.string()),
            ("split_b", pa.string()),
            ("straddles", pa.bool_()),
        ]
    ),
)

PERTURBATIONS = Schema(
    name="aigi.perturbations",
    version=1,
    arrow=pa.schema(
        [
            ("image_id", pa.string()),  # the perturbed copy's id
            ("original_id", pa.string()),
            ("variant", pa.string()),  # jpeg75, resize0.5, blur1, crop0.9, ...
            ("seed", pa.int64()),
        ]
    ),
)

QUARANTINE = Schema(
    name="aigi.quarantine",
    version=1,
    arrow=pa.schema(
        [
            ("stage", pa.string()),
            ("unit", pa.string()),
            ("item", pa.string()),
            ("reason", pa.string()),
        ]
    ),
)

PREDICTIONS = Schema(
    name="aigi.predictions",
    version=1,
    arrow=pa.schema(
        [
            ("image_id", pa.string()),
            ("source", pa.string()),
            ("label", pa.int8()),
            ("split", pa.string()),
            ("score", pa.float64()),
        ]
    ),
)

_METRIC_FIELDS = [
    ("n_real", pa.int64()),
    ("n_fake", pa.int64()),
    ("acc", pa.float64()),  # at threshold 0.5
    ("real_acc", pa.float64()),
    ("fake_acc", pa.float64()),
    ("balanced_acc", pa.float64()),
    ("ap", pa.float64()),
    ("auroc", pa.float64()),
    ("tpr_at_1fpr", pa.float64()),
    ("oracle_acc", pa.float64()),  # the best accuracy over thresholds: never the headline
    # bootstrap 95% intervals (reals and fakes resampled separately)
    ("acc_low", pa.float64()),
    ("acc_high", pa.float64()),
    ("ap_low", pa.float64()),
    ("ap_high", pa.float64()),
    ("auroc_low", pa.float64()),
    ("auroc_high", pa.float64()),
    ("tpr_at_1fpr_low", pa.float64()),
    ("tpr_at_1fpr_high", pa.float64()),
]

METRICS = Schema(
    name="aigi.metrics",
    version=2,
    arrow=pa.schema(
        [
            ("detector", pa.string()),
            ("feature", pa.string()),
            ("split", pa.string()),
            ("generator", pa.string()),
            *_METRIC_FIELDS,
        ]
    ),
)

CROSS_METRICS = Schema(
    name="aigi.cross_metrics",
    version=1,
    arrow=pa.schema(
        [
            ("detector", pa.string()),
            ("protocol", pa.string()),  # cross_generator, leave_one_out, chronological, ...
            ("train", pa.string()),  # what the model was trained on (a generator, "all but X", ...)
            ("generator", pa.string()),  # what it was tested on
            *_METRIC_FIELDS,
        ]
    ),
)


ANOMALY_SCORES = Schema(
    name="aigi.anomaly_scores",
    version=1,
    arrow=pa.schema(
        [
            ("generator", pa.string()),
            ("n_real", pa.int64()),
            ("n_generated", pa.int64()),
            ("anomaly_score", pa.float64()),  # the 2-D KS statistic D (AS, CVPR 2024)
            ("p_value", pa.float64()),
            ("mean_as_i", pa.float64()),
            ("n_nonfinite", pa.int64()),  # generated images left out: C or V not finite
        ]
    ),
)


def feature_schema(extractor: str, version: int, columns: dict[str, tuple[tuple[int, ...], str]]) -> Schema:
    """Schema of a feature shard: image_id, the per-image seed, one fixed-size list per tensor.

    `columns` maps a column name to (shape, dtype). Tensors are stored flat (row-major) as
    fixed-size lists, readable by pyarrow, `datasets`, DuckDB and polars; the shape lives in the
    file metadata (see aigi.features.store). Scalar features (shape `()`) are plain columns.
    """
    fields = [("image_id", pa.string()), ("seed", pa.int64())]
    for col, (shape, dtype) in columns.items():
        value = pa.from_numpy_dtype(dtype)
        if not shape:  # a scalar per image: a plain column, not a list of one
            fields.append((col, value))
            continue
        n = 1
        for s in shape:
            n *= int(s)
        fields.append((col, pa.list_(value, n)))
    return Schema(name=f"aigi.features.{extractor}", version=version, arrow=pa.schema(fields))


REGISTRY: dict[str, Schema] = {
    s.name: s for s in (IMAGES, PROMPTS, HASHES, DUPLICATES, NEAR_PAIRS, MEASURES, NORMALIZE_PLAN, NORMALIZED, BIAS_AUDIT, FREQUENCY_PARITY, PAIRS, SPLITS, SPLIT_AUDIT, PERTURBATIONS, QUARANTINE, PREDICTIONS, METRICS, CROSS_METRICS, ANOMALY_SCORES)
}
