"""Feature-store size: aigi's Parquet encoding vs pyarrow's defaults, on real extractor output.

For each feature, the extractor's own output on the same images is written four ways: pyarrow's
default (zstd over dictionary/plain pages: what a plain `pq.write_table(..., compression="zstd")`
does), and aigi's writer with float16 byte-stream-split off (the default, readable by DuckDB) and
on; float32 storage is shown for scale. Reported: bytes per image and the ratio to the plain
write. Values are compared after reading back.

    python benchmarks/feature_store.py                 # tiny models (CPU, seconds)
    python benchmarks/feature_store.py --size real     # released-size random-weight models

Random-weight models do not produce the statistics of real features; the figures say what the
encodings do to such tensors (squared errors, activations), not what a real corpus will weigh.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

FLOAT_FEATURES = ("lare", "code", "clip_rn50", "dnf")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "real"), default="tiny")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--features", default=",".join(FLOAT_FEATURES))
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from aigi.features.registry import get
    from aigi.features.store import read_features, write_features
    from features import build, encoded_images  # benchmarks/features.py

    images = [Image.open(io.BytesIO(b)).convert("RGB") for b in encoded_images(args.n, 256)]
    rows = [{"class_name": "tench"}] * args.n
    seeds = list(range(args.n))
    ids = [f"{i:08d}" for i in seeds]
    results = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.features.split(","):
            cfg = build(name, tmp / f"model-{name}", args.size)
            if name == "dnf":
                cfg = dataclasses.replace(cfg, encoding="clean")  # the float form of DNF
            sizes = {}
            for storage in ("float16", "float32"):
                ex = get(name)(dataclasses.replace(cfg, storage_dtype=storage))
                ex.load("cpu")
                out = ex.extract(images, rows, seeds)
                plain = {"image_id": pa.array(ids), "seed": pa.array(seeds, pa.int64())}
                for c, a in out.items():
                    flat = pa.array(a.reshape(-1))
                    plain[c] = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(a.shape[1:]))) if a.ndim > 1 else flat
                path = tmp / f"{name}-{storage}-plain.parquet"
                pq.write_table(pa.table(plain), path, compression="zstd")
                sizes[f"{storage}_pyarrow_zstd"] = path.stat().st_size
                for split in (False, True) if storage == "float16" else (False,):
                    path = tmp / f"{name}-{storage}-{split}.parquet"
                    write_features(path, ids, seeds, out, ex, "bench", split_float16=split)
                    for c, a in out.items():
                        np.testing.assert_array_equal(read_features([path], c)[1], a)
                    key = f"{storage}_aigi" + ("_split" if split else "") if storage == "float16" else "float32_aigi_split"
                    sizes[key] = path.stat().st_size
            per_image = {k: round(v / args.n) for k, v in sizes.items()}
            base = sizes["float16_pyarrow_zstd"]
            results[name] = {
                "bytes_per_image": per_image,
                "float16_split_vs_pyarrow": round(sizes["float16_aigi_split"] / base, 3),
                "float16_default_vs_pyarrow": round(sizes["float16_aigi"] / base, 3),
                "float32_split_vs_pyarrow": round(sizes["float32_aigi_split"] / sizes["float32_pyarrow_zstd"], 3),
            }
            r = results[name]
            print(f"{name:<10} f16 pyarrow {per_image['float16_pyarrow_zstd']:>8} B  aigi {per_image['float16_aigi']:>8} B  "
                  f"aigi+split {per_image['float16_aigi_split']:>8} B ({r['float16_split_vs_pyarrow']:.3f}x)   "
                  f"f32 pyarrow {per_image['float32_pyarrow_zstd']:>8} B  aigi+split {per_image['float32_aigi_split']:>8} B "
                  f"({r['float32_split_vs_pyarrow']:.3f}x)", flush=True)
    print(json.dumps({"benchmark": "feature_store", "size": args.size, "n": args.n, "features": results}))


if __name__ == "__main__":
    main()
