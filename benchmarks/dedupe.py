"""Near-duplicate throughput: hashing images, and Hamming-radius search over 64-bit hashes.

1. Hashing: `aigi.curation.hashing.hash_image` (sha256 of the bytes and of the decoded pixels,
   pHash, dHash) vs a plain imagehash loop (decode, `imagehash.phash`, `imagehash.dhash`) on the
   same small synthetic PNGs; reported in hashes/s and as a ratio.
2. Copies: pHash distance between synthetic images and perturbed copies (resize, JPEG, blur,
   centred and one-sided crops of several sizes): the share found at the radius, per kind.
3. Search: random 64-bit hashes plus planted neighbours at every distance 0..r (and at r+1, which
   must not be found). aigi's multi-index hashing (`HashIndex.self_pairs`) is timed and its recall
   on the planted pairs measured, against a plain numpy all-pairs loop (chunked XOR + popcount)
   where that is run (n <= --baseline-max, default 10^5; null otherwise, never extrapolated), and
   against faiss `IndexBinaryMultiHash.range_search` when faiss is importable (it is not an aigi
   dependency), and against aigi's torch brute force on CUDA when a GPU is present. Where two
   methods run, their pair sets are compared.

    python benchmarks/dedupe.py                     # n = 10^5 and 10^6, radius 8
    python benchmarks/dedupe.py --n 10000000        # one n only

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def synthetic_pngs(count: int, size: int = 128, seed: int = 0) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        low = rng.random((8, 8, 3)) * 255
        img = Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def bench_hashing(count: int) -> dict:
    import imagehash
    from PIL import Image

    from aigi.curation.hashing import hash_image

    images = synthetic_pngs(count)
    hash_image(images[0])  # imports and warm-up outside the timing

    t = time.perf_counter()
    for data in images:
        hash_image(data)
    aigi_s = time.perf_counter() - t

    t = time.perf_counter()
    for data in images:
        with Image.open(io.BytesIO(data)) as im:
            imagehash.phash(im)
            imagehash.dhash(im)
    plain_s = time.perf_counter() - t
    return {
        "images": count,
        "size": 128,
        "aigi_hashes_per_s": round(count / aigi_s, 1),
        "plain_imagehash_per_s": round(count / plain_s, 1),
        "aigi_over_plain": round(plain_s / aigi_s, 3),
    }


def bench_perturbations(count: int, radius: int) -> dict:
    """pHash distance of perturbed copies to their original: recall at the radius, per kind.

    Crops remove a fraction of width and height in total: centred (half a side) or one-sided
    (from the right and bottom edges, which shifts the content).
    """
    from PIL import Image, ImageFilter

    from aigi.curation.hashing import hash_image

    def png(img, fmt="PNG", **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    def scale(img, f, resample):
        return img.resize((round(img.width * f), round(img.height * f)), resample)

    def centred(img, f):
        w, h = img.size
        cx, cy = round(w * f / 2), round(h * f / 2)
        return img.crop((cx, cy, w - cx, h - cy))

    def one_sided(img, f):
        w, h = img.size
        return img.crop((0, 0, w - round(w * f), h - round(h * f)))

    kinds = {
        "resize0.5": lambda im: png(scale(im, 0.5, Image.BILINEAR)),
        "resize1.5": lambda im: png(scale(im, 1.5, Image.BICUBIC)),
        "jpeg60": lambda im: png(im, "JPEG", quality=60),
        "blur1": lambda im: png(im.filter(ImageFilter.GaussianBlur(1))),
        **{f"crop{p}_centred": (lambda im, p=p: png(centred(im, p / 100))) for p in (3, 4, 5, 8)},
        **{f"crop{p}_one_sided": (lambda im, p=p: png(one_sided(im, p / 100))) for p in (3, 5)},
    }
    from aigi.curation.synthetic import natural_image

    images = [natural_image(k) for k in range(count)]
    orig = np.array([hash_image(png(im))["phash"] for im in images], dtype=np.uint64)
    between = np.bitwise_count(orig[:, None] ^ orig[None, :])
    np.fill_diagonal(between, 64)
    out: dict = {"images": count, "size": 200, "radius": radius,
                 "min_distance_between_originals": int(between.min())}
    for name, make in kinds.items():
        d = np.bitwise_count(
            np.array([hash_image(make(im))["phash"] for im in images], dtype=np.uint64) ^ orig
        )
        out[name] = {"recall": round(float((d <= radius).mean()), 3), "max": int(d.max()),
                     "mean": round(float(d.mean()), 2)}
    return out


def planted_hashes(n: int, radius: int, seed: int = 0):
    """n hashes: random ones, then 2% planted copies of random originals at distances 0..r+1.

    Returns (hashes, src, dst, dist) where (src, dst) are the planted pairs, at exact distance.
    """
    rng = np.random.default_rng(seed)
    k = max(radius + 2, n // 50)
    base = rng.integers(0, 2**64, n - k, dtype=np.uint64)
    src = rng.integers(0, n - k, k)
    dist = np.arange(k) % (radius + 2)  # every distance 0..r+1, evenly
    planted = base[src].copy()
    step = 50_000
    for a in range(0, k, step):
        d = dist[a : a + step]
        # d distinct bit positions per row: the first d of a random permutation of 0..63
        perm = np.argsort(rng.random((d.size, 64)), axis=1).astype(np.uint64)
        bits = np.where(np.arange(64)[None, :] < d[:, None], np.uint64(1) << perm, np.uint64(0))
        planted[a : a + step] ^= np.bitwise_or.reduce(bits, axis=1)
    return np.concatenate([base, planted]), src, np.arange(n - k, n), dist


def pair_keys(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    lo, hi = np.minimum(i, j).astype(np.int64), np.maximum(i, j).astype(np.int64)
    return np.unique(lo * n + hi)


def recall(keys: np.ndarray, src, dst, dist, radius: int, n: int) -> tuple[float, int]:
    """Share of planted pairs within radius that were found; planted pairs at r+1 found."""
    inside = pair_keys(src[dist <= radius], dst[dist <= radius], n)
    outside = pair_keys(src[dist > radius], dst[dist > radius], n)
    found_in = np.isin(inside, keys).sum()
    return float(found_in / inside.size), int(np.isin(outside, keys).sum())


def numpy_all_pairs(h: np.ndarray, radius: int, chunk: int = 1 << 22):
    """The plain baseline: every pair, XOR + popcount, in row chunks (upper triangle only)."""
    rows = max(1, chunk // h.size)
    out_i, out_j = [], []
    for a in range(0, h.size, rows):
        d = np.bitwise_count(h[a : a + rows, None] ^ h[None, a:])
        r, c = np.nonzero(d <= radius)
        keep = c > r
        out_i.append(r[keep] + a)
        out_j.append(c[keep] + a)
    return np.concatenate(out_i), np.concatenate(out_j)


def faiss_pairs(h: np.ndarray, radius: int, m: int):
    import faiss

    width = 64 // m
    index = faiss.IndexBinaryMultiHash(64, m, width)  # m tables of 64//m bits (pigeonhole)
    index.nflip = radius // m
    codes = h.view(np.uint8).reshape(-1, 8)
    index.add(codes)
    lims, _, found = index.range_search(codes, radius + 1)  # faiss's radius is strict (<)
    q = np.repeat(np.arange(h.size), np.diff(lims.astype(np.int64)))
    found = found.astype(np.int64)
    keep = q < found
    return q[keep], found[keep]


def bench_search(
    n: int, radius: int, baseline_max: int, with_faiss: bool, with_cuda: bool
) -> dict:
    from aigi.curation.neardup import HashIndex

    h, src, dst, dist = planted_hashes(n, radius)
    row: dict = {"n": n, "radius": radius, "planted_pairs_within_r": int((dist <= radius).sum())}

    HashIndex(h[:1000], radius).self_pairs()  # first-call costs (imports, allocator) untimed
    t = time.perf_counter()
    index = HashIndex(h, radius)
    build_s = time.perf_counter() - t
    i, j, d = index.self_pairs()
    total_s = time.perf_counter() - t
    keys = pair_keys(i, j, n)
    rec, outside = recall(keys, src, dst, dist, radius, n)
    row["aigi"] = {
        "blocks": index.blocks,
        "build_s": round(build_s, 2),
        "total_s": round(total_s, 2),
        "pairs": int(i.size),
        "recall": rec,
        "planted_r_plus_1_found": outside,
        "max_distance": int(d.max()) if d.size else None,
    }

    row["numpy_all_pairs"] = None
    if n <= baseline_max:
        t = time.perf_counter()
        bi, bj = numpy_all_pairs(h, radius)
        base_s = time.perf_counter() - t
        row["numpy_all_pairs"] = {
            "total_s": round(base_s, 2),
            "pairs": int(bi.size),
            "same_pairs_as_aigi": bool(np.array_equal(pair_keys(bi, bj, n), keys)),
            "aigi_speedup": round(base_s / total_s, 1),
        }

    row["torch_cuda_brute_force"] = None
    if with_cuda:
        from aigi.curation.neardup import brute_force_pairs

        brute_force_pairs(h[:1000], radius, "cuda")  # CUDA context start-up untimed
        t = time.perf_counter()
        ci, cj, _ = brute_force_pairs(h, radius, "cuda")
        cuda_s = time.perf_counter() - t
        row["torch_cuda_brute_force"] = {
            "total_s": round(cuda_s, 2),
            "same_pairs_as_aigi": bool(np.array_equal(pair_keys(ci, cj, n), keys)),
            "aigi_speedup": round(cuda_s / total_s, 2),
        }

    row["faiss_multihash"] = None
    if with_faiss:
        m = max(index.blocks, 3)
        t = time.perf_counter()
        fi, fj = faiss_pairs(h, radius, m)
        faiss_s = time.perf_counter() - t
        fkeys = pair_keys(fi, fj, n)
        row["faiss_multihash"] = {
            "nhash": m,
            "threads": __import__("faiss").omp_get_max_threads(),
            "total_s": round(faiss_s, 2),
            "pairs": int(fkeys.size),
            "recall": recall(fkeys, src, dst, dist, radius, n)[0],
            "same_pairs_as_aigi": bool(np.array_equal(fkeys, keys)),
            "aigi_speedup": round(faiss_s / total_s, 2),
        }
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None, help="one n (default: 10^5 and 10^6)")
    p.add_argument("--radius", type=int, default=8)
    p.add_argument("--baseline-max", type=int, default=100_000)
    p.add_argument("--images", type=int, default=300, help="images for the hashing benchmark")
    p.add_argument("--perturbed", type=int, default=100, help="originals for the copy recall")
    p.add_argument("--no-faiss", action="store_true")
    p.add_argument("--no-cuda", action="store_true", help="skip the torch CUDA brute force")
    args = p.parse_args()

    try:
        import faiss  # noqa: F401

        with_faiss = not args.no_faiss
    except ImportError:
        with_faiss = False

    import torch

    with_cuda = torch.cuda.is_available() and not args.no_cuda
    result: dict = {"hashing": bench_hashing(args.images), "search": []}
    print(json.dumps(result["hashing"]), flush=True)
    result["perturbations"] = bench_perturbations(args.perturbed, args.radius)
    print(json.dumps(result["perturbations"]), flush=True)
    for n in [args.n] if args.n else [100_000, 1_000_000]:
        row = bench_search(n, args.radius, args.baseline_max, with_faiss, with_cuda)
        print(json.dumps(row), flush=True)
        result["search"].append(row)
    result["faiss_available"] = with_faiss
    result["cuda_available"] = with_cuda
    result["cpu_count"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
