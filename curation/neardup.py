"""Near-duplicate search over 64-bit perceptual hashes (pHash), and clustering of what it finds.

Search: every pair of hashes within Hamming distance r, exactly, without comparing all pairs.
Multi-index hashing (pigeonhole, Norouzi et al., CVPR 2012): split the 64 bits into m disjoint
blocks; a pair at distance d <= r differs in at most floor(r/m) bits in at least one block, since
the block distances add up to d. For each block a dense table maps a block value to the range
[start, end) of an argsort of the block values (a counting sort); for every mask of at most
s = floor(r/m) bits inside the block, each hash looks up (its block value XOR mask), and the
candidates it finds are verified on all 64 bits. A pair found in several blocks is reported only
by the first block where it differs in at most s bits, so every pair comes out once, with i < j.
m is chosen by an estimated cost, m * masks(b, s) * (n + n^2 / 2^b) plus the table sizes, with
tables capped at 2^24 entries; where that estimate exceeds all pairs (tiny n, huge r), the index
compares all pairs in chunks instead. Candidates are verified in chunks of bounded size, so memory
is the tables (~30 bytes per hash per block) plus a constant. `HashIndex.query` searches new hashes
against a built index (the incremental mode: a new shard against an existing corpus, without
re-searching the corpus). On CUDA, `brute_force_pairs` compares all pairs as a matrix product
of sign vectors (dot product = 64 - 2 * distance) on the tensor cores.

Clustering: "within r" is not transitive. A~B and B~C with A and C up to 2r apart is common
(a chain of crops or re-encodes), and connected components merge whole chains into one group.
- "centre" (the default): visit items by ascending priority (lower = preferred); an item not yet
  assigned becomes a centre and captures every unassigned neighbour. Every member is within r of
  its centre and the kept centres are pairwise more than r apart: no chaining.
- "components": connected components of the within-r graph; the representative is the member with
  the lowest priority. A~B~C with A and C 2r apart end in one component, and C's distance to its
  representative can exceed r: use it where any link should keep images together (split audit).

`near_duplicates` turns a HASHES table into one decision row per image (score, then decide:
nothing is deleted). Exact duplicates (equal pixel_sha256) always share a group, across labels
too (identical pixels under both labels are a label conflict; the real one is kept, as in
`dedupe.exact_duplicates`). Near duplicates only drop images of the same label: a generated image
that nearly copies a real one is kept and flagged by `nearest_real` (memorization).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aigi.manifests.schema import DUPLICATES, NEAR_PAIRS

HASH_BITS = 64
MAX_TABLE_BITS = 24  # a dense table of 2^24 int64 starts is 128 MiB
CHUNK = 1 << 22  # candidate pairs verified at once (~50 bytes each while verified)
AUTO_CUDA_MIN = 100_000  # device="auto": below this, MIH on CPU is faster than a GPU start-up
DROP_EXACT = "exact_duplicate_of:"
DROP_NEAR = "near_duplicate_of:"
METHODS = ("centre", "components")

_M1, _M2, _M4 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F


# ---------------------------------------------------------------- popcount and inputs


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array (np.bitwise_count on numpy >= 2)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return swar_popcount64(x)


def swar_popcount64(x: np.ndarray) -> np.ndarray:
    """The numpy < 2 fallback: SWAR popcount on uint64 (no multiply, so nothing overflows)."""
    u = np.uint64
    x = np.asarray(x, dtype=np.uint64)
    x = x - ((x >> u(1)) & u(_M1))
    x = (x & u(_M2)) + ((x >> u(2)) & u(_M2))
    x = (x + (x >> u(4))) & u(_M4)
    x = x + (x >> u(8))
    x = x + (x >> u(16))
    x = x + (x >> u(32))
    return (x & u(0x7F)).astype(np.uint8)


def _as_hashes(hashes: object, what: str = "hashes") -> np.ndarray:
    a = np.asarray(hashes)
    if a.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of 64-bit hashes, got shape {a.shape}")
    if a.dtype == np.uint64:
        return np.ascontiguousarray(a)
    if a.size == 0:
        return a.astype(np.uint64)
    if a.dtype.kind in "iu" and int(a.min()) >= 0:
        return a.astype(np.uint64)
    raise TypeError(f"{what}: expected non-negative 64-bit hashes (np.uint64), got {a.dtype}")


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)):
        raise TypeError(f"radius must be an int, got {type(radius).__name__}")
    if not 0 <= radius <= HASH_BITS:
        raise ValueError(f"radius must be in 0..{HASH_BITS}, got {radius}")
    return int(radius)


# ---------------------------------------------------------------- multi-index hashing


def block_widths(m: int) -> list[int]:
    """Bits per block when 64 bits are cut into m blocks (the first 64 % m get one more)."""
    base, extra = divmod(HASH_BITS, m)
    return [base + (k < extra) for k in range(m)]


def n_masks(bits: int, s: int) -> int:
    """Lookups per hash and block: masks of at most s set bits among `bits`."""
    return sum(math.comb(bits, k) for k in range(min(s, bits) + 1))


def estimate_cost(m: int, radius: int, n_query: int, n_index: int) -> float:
    """Estimated work of MIH with m blocks (m = 0: all pairs), on uniformly spread hashes."""
    if m == 0:
        return float(n_query) * n_index
    s = radius // m
    return sum(
        n_masks(b, s) * (n_query + n_query * n_index / 2.0**b) + n_index + 2.0**b
        for b in block_widths(m)
    )


def choose_blocks(radius: int, n_query: int, n_index: int) -> int:
    """The m of least estimated cost, tables <= 2^24; 0 when comparing all pairs is cheaper."""
    radius = _check_radius(radius)
    m_min = math.ceil(HASH_BITS / MAX_TABLE_BITS)
    costs = {m: estimate_cost(m, radius, n_query, n_index) for m in range(m_min, HASH_BITS + 1)}
    costs[0] = estimate_cost(0, radius, n_query, n_index)
    return min(costs, key=lambda m: (costs[m], m))


def _masks_by_top_bit(bits: int, s: int) -> list[list[int]]:
    """Non-zero masks of at most s bits, grouped by their highest set bit."""
    out: list[list[int]] = []
    for t in range(bits):
        group = [
            (1 << t) | sum(1 << b for b in low)
            for k in range(min(s - 1, t) + 1)
            for low in itertools.combinations(range(t), k)
        ]
        out.append(group if s >= 1 else [])
    return out


class _Block:
    """One block's dense table: hashes sorted by block value, and each value's [start, end)."""

    def __init__(self, hashes: np.ndarray, offset: int, width: int, s: int):
        self.offset, self.width, self.s = offset, width, s
        self.mask = (1 << width) - 1
        vals = self.values(hashes)
        counts = np.bincount(vals, minlength=1 << width)
        self.start = np.zeros((1 << width) + 1, dtype=np.int64)
        np.cumsum(counts, out=self.start[1:])
        self.order = np.argsort(vals, kind="stable")
        self.sorted_hashes = hashes[self.order]
        self.sorted_vals = vals[self.order]

    def values(self, hashes: np.ndarray) -> np.ndarray:
        return ((hashes >> np.uint64(self.offset)) & np.uint64(self.mask)).astype(np.int64)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo = self.start[keys]
        return lo, self.start[keys + 1] - lo


def _expand(
    q: np.ndarray, lo: np.ndarray, cnt: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Candidate pairs (q[k], lo[k] + 0..cnt[k]-1), in chunks of about CHUNK pairs."""
    hit = cnt > 0
    if not hit.all():
        q, lo, cnt = q[hit], lo[hit], cnt[hit]
    if q.size == 0:
        return
    ends = np.cumsum(cnt)
    a = 0
    while a < q.size:
        before = int(ends[a - 1]) if a else 0
        b = max(int(np.searchsorted(ends, before + CHUNK, side="right")), a + 1)
        c, e = cnt[a:b], ends[a:b] - before
        yield np.repeat(q[a:b], c), np.arange(int(e[-1])) + np.repeat(lo[a:b] - (e - c), c)
        a = b


class HashIndex:
    """Exact Hamming-radius search over 64-bit hashes by multi-index hashing.

    `HashIndex(hashes, radius)` builds the block tables once; `self_pairs()` finds every pair of
    indexed hashes within `radius`; `query(new)` finds indexed hashes within `radius` of new ones.
    `blocks` forces the number of blocks m (0: compare all pairs); by default the cost model picks
    it for self-search, or for `expected_queries` new hashes per query call when given.
    """

    def __init__(
        self,
        hashes: np.ndarray,
        radius: int,
        blocks: int | None = None,
        expected_queries: int | None = None,
    ):
        self.hashes = _as_hashes(hashes)
        self.radius = _check_radius(radius)
        n = self.hashes.size
        if blocks is None:
            n_query = n if expected_queries is None else expected_queries
            blocks = choose_blocks(self.radius, n_query, n)
        if not 0 <= blocks <= HASH_BITS:
            raise ValueError(f"blocks must be in 0..{HASH_BITS}, got {blocks}")
        if blocks and max(block_widths(blocks)) > MAX_TABLE_BITS:
            raise ValueError(f"blocks={blocks} gives tables over 2^{MAX_TABLE_BITS} entries")
        self.blocks = blocks
        self.widths = block_widths(blocks) if blocks else []
        offsets = np.cumsum([0, *self.widths])[:-1]
        s = self.radius // blocks if blocks else 0
        self._tables = [
            _Block(self.hashes, int(o), w, s) for o, w in zip(offsets, self.widths, strict=True)
        ]

    def __len__(self) -> int:
        return self.hashes.size

    def _first_block(self, x: np.ndarray, k: int) -> np.ndarray:
        """True where block k is the first block with <= s differing bits (report once)."""
        ok = np.ones(x.size, dtype=bool)
        for t in self._tables[:k]:
            ok &= popcount64((x >> np.uint64(t.offset)) & np.uint64(t.mask)) > t.s
        return ok

    def _verify(self, k, qh, th) -> tuple[np.ndarray, np.ndarray]:
        x = qh ^ th
        d = popcount64(x)
        ok = d <= self.radius
        if k:
            ok[ok] = self._first_block(x[ok], k)
        return ok, d

    def self_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, dist): every pair of indexed hashes within the radius, once, i < j, sorted."""
        if not self.blocks:
            return _numpy_brute(self.hashes, None, self.radius)
        found = []
        for k, t in enumerate(self._tables):
            for q, lo, cnt in _self_lookups(t):
                for a, b in _expand(q, lo, cnt):
                    ok, d = self._verify(k, t.sorted_hashes[a], t.sorted_hashes[b])
                    found.append((t.order[a[ok]], t.order[b[ok]], d[ok]))
        return _finish(found, ordered=False)

    def query(self, new_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(qi, j, dist): new hash qi is within the radius of indexed hash j; each pair once."""
        new = _as_hashes(new_hashes, "new_hashes")
        if not self.blocks:
            return _numpy_brute(new, self.hashes, self.radius)
        found = []
        for k, t in enumerate(self._tables):
            vals = t.values(new)
            qorder = np.argsort(vals, kind="stable")  # sorted lookups touch less memory
            vals = vals[qorder]
            masks = [0, *itertools.chain.from_iterable(_masks_by_top_bit(t.width, t.s))]
            for m in masks:
                for a, b in _expand(qorder, *t.lookup(vals ^ m)):
                    ok, d = self._verify(k, new[a], t.sorted_hashes[b])
                    found.append((a[ok], t.order[b[ok]], d[ok]))
        return _finish(found, ordered=True)


def _self_lookups(t: _Block) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(positions, start, count) per mask, for self-search in one block (lazily: each is O(n))."""
    n = t.sorted_vals.size
    pos = np.arange(n, dtype=np.int64)
    # Mask 0: the pairs inside one bucket, each once (later positions only).
    yield pos, pos + 1, t.start[t.sorted_vals + 1] - pos - 1
    # A non-zero mask links values v and v^M; look up only from the one whose top mask bit is
    # 0, so each such pair is looked up once.
    for bit, masks in enumerate(_masks_by_top_bit(t.width, t.s)):
        if not masks:
            continue
        sel = np.flatnonzero(((t.sorted_vals >> bit) & 1) == 0)
        vals = t.sorted_vals[sel]
        for m in masks:
            yield (sel, *t.lookup(vals ^ m))


def _finish(found: list, ordered: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int16)
    i = np.concatenate([f[0] for f in found]).astype(np.int64)
    j = np.concatenate([f[1] for f in found]).astype(np.int64)
    d = np.concatenate([f[2] for f in found]).astype(np.int16)
    if not ordered:
        i, j = np.minimum(i, j), np.maximum(i, j)
    o = np.lexsort((j, i))
    return i[o], j[o], d[o]


def _numpy_brute(q: np.ndarray, h: np.ndarray | None, radius: int):
    """All pairs in chunks: (i, j, d) with i < j when h is None, else (qi, j, d)."""
    ref = q if h is None else h
    rows = max(1, CHUNK // max(ref.size, 1))
    found = []
    for a in range(0, q.size, rows):
        first = a if h is None else 0  # self-search: only columns >= row, then i < j below
        d = popcount64(q[a : a + rows, None] ^ ref[None, first:])
        r, c = np.nonzero(d <= radius)
        i, j = r + a, c + first
        keep = i < j if h is None else slice(None)
        found.append((i[keep], j[keep], d[r, c][keep]))
    return _finish(found, ordered=True)


# ---------------------------------------------------------------- torch brute force


def brute_force_pairs(
    hashes: np.ndarray, radius: int, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, dist) for all pairs within radius, compared all against all as a matrix product.

    Each hash becomes a vector of 64 signs (+1 for a set bit, -1 for a clear one); the dot
    product of two such vectors is 64 - 2 * Hamming distance, so a block of rows against all
    columns is one matrix multiply (tensor cores on CUDA, in float16: every value involved is a
    small integer, exact in float16 with float32 accumulation). Meant for CUDA; runs on any torch
    device (float32 elsewhere), so it is tested on CPU against the index.
    """
    import torch

    h_np = _as_hashes(hashes)
    radius = _check_radius(radius)
    n = h_np.size
    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    bits = np.unpackbits(h_np.view(np.uint8).reshape(n, 8), axis=1)  # bit order is irrelevant
    signs = torch.from_numpy(bits).to(device=device, dtype=dtype).mul_(2).sub_(1)
    least = HASH_BITS - 2 * radius  # dot product at distance = radius
    rows = max(1, (CHUNK * 8) // max(n, 1))
    found = []
    with torch.no_grad():
        for a in range(0, n, rows):
            b = min(n, a + rows)
            dot = signs[a:b] @ signs[a:].T
            hit = dot >= least
            # only columns right of the diagonal: i < j
            cols = torch.arange(a, n, device=signs.device)
            hit &= cols[None, :] > cols[: b - a, None]
            r, c = hit.nonzero(as_tuple=True)
            dist = ((HASH_BITS - dot[r, c].float()) / 2).round().to(torch.int16)
            found.append(((r + a).cpu().numpy(), (c + a).cpu().numpy(), dist.cpu().numpy()))
    return _finish(found, ordered=True)


def near_pairs(
    hashes: np.ndarray, radius: int, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, dist), i < j, every pair within radius. "cpu": multi-index hashing; "cuda[:k]":
    torch brute force; "auto": CUDA when available and n >= AUTO_CUDA_MIN. Same results."""
    h = _as_hashes(hashes)
    if device == "auto":
        device = "cpu"
        if h.size >= AUTO_CUDA_MIN:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return HashIndex(h, radius).self_pairs()
    if not device.startswith("cuda"):
        raise ValueError(f"near_pairs: device must be 'cpu', 'cuda[:k]' or 'auto', got {device!r}")
    return brute_force_pairs(h, radius, device)


# ---------------------------------------------------------------- clustering


def cluster(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    dist: np.ndarray,
    priority: np.ndarray,
    method: str = "centre",
) -> tuple[np.ndarray, np.ndarray]:
    """(group, kept): group[x] is the index of x's centre (or representative); kept marks them.

    `i, j` are the neighbour pairs (within r); `priority` orders items, lower first (ties: lower
    index). "centre" and "components" are described in the module docstring. `dist` is accepted
    for symmetry with the search output; grouping only needs who neighbours whom.
    """
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    priority = np.asarray(priority)
    if method not in METHODS:
        raise ValueError(f"cluster: method must be one of {METHODS}, got {method!r}")
    if priority.shape != (n,):
        raise ValueError(f"cluster: priority has shape {priority.shape}, expected ({n},)")
    if i.shape != j.shape or np.shape(dist) != i.shape:
        raise ValueError("cluster: i, j and dist must have the same length")
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n):
        raise ValueError(f"cluster: pair indices outside 0..{n - 1}")
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort((np.arange(n), priority))] = np.arange(n)
    group = np.arange(n, dtype=np.int64)
    if method == "components":
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        graph = coo_matrix((np.ones(i.size, dtype=np.int8), (i, j)), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        best = np.full(comp.max() + 1 if n else 0, n, dtype=np.int64)
        np.minimum.at(best, comp, rank)
        by_rank = np.argsort(rank)
        group = by_rank[best[comp]]
    else:
        # Symmetric adjacency (CSR); only items with a neighbour need the greedy loop.
        src, dst = np.concatenate([i, j]), np.concatenate([j, i])
        o = np.argsort(src, kind="stable")
        src, dst = src[o], dst[o]
        ptr = np.searchsorted(src, np.arange(n + 1))
        linked = np.unique(src)
        assigned = np.zeros(n, dtype=bool)
        for c in linked[np.argsort(rank[linked])].tolist():
            if assigned[c]:
                continue
            assigned[c] = True
            nb = dst[ptr[c] : ptr[c + 1]]
            nb = nb[~assigned[nb]]
            assigned[nb] = True
            group[nb] = c
    return group, group == np.arange(n)


# ---------------------------------------------------------------- tables


_NEED = ("image_id", "label", "pixel_sha256", "phash", "dhash")


def _check_table(table: pa.Table, who: str) -> None:
    for col in _NEED:
        if col not in table.column_names:
            raise ValueError(f"{who}: input lacks column {col!r}")
        if table.column(col).null_count:
            raise ValueError(f"{who}: column {col!r} has null values")
    if pc.count_distinct(table.column("image_id")).as_py() != table.num_rows:
        raise ValueError(f"{who}: image_id values are not unique")
    labels = set(pc.unique(table.column("label")).to_pylist())
    if not labels <= {0, 1}:
        raise ValueError(f"{who}: label must be 0 (real) or 1 (generated), found {sorted(labels)}")


def _u64(table: pa.Table, col: str) -> np.ndarray:
    return table.column(col).combine_chunks().cast(pa.uint64()).to_numpy(zero_copy_only=False)


def _table_pairs(table: pa.Table, rows: np.ndarray, radius: int, confirm_dhash, device):
    """Pairs among `rows` of the table (row indices), pHash within radius (+ dHash confirm)."""
    phash = _u64(table, "phash")[rows]
    i, j, d = near_pairs(phash, radius, device)
    i, j = rows[i], rows[j]
    if confirm_dhash is not None:
        dh = _u64(table, "dhash")
        ok = popcount64(dh[i] ^ dh[j]) <= confirm_dhash
        i, j, d = i[ok], j[ok], d[ok]
    return i, j, d


def pairs_table(
    table: pa.Table, radius: int, confirm_dhash: int | None = None, device: str = "cpu"
) -> pa.Table:
    """NEAR_PAIRS: every pair of rows whose pHash is within radius (any labels, exact duplicates
    included), image_id_a < image_id_b, sorted; for the split audit."""
    _check_table(table, "pairs_table")
    n = table.num_rows
    i, j, d = _table_pairs(table, np.arange(n), radius, confirm_dhash, device)
    ids = table.column("image_id").combine_chunks()
    a, b = ids.take(pa.array(i)), ids.take(pa.array(j))
    swap = pc.greater(a, b)
    out = pa.table(
        {
            "image_id_a": pc.if_else(swap, b, a),
            "image_id_b": pc.if_else(swap, a, b),
            "distance": pa.array(d, type=pa.int16()),
        },
        schema=NEAR_PAIRS.arrow,
    )
    return out.sort_by([("image_id_a", "ascending"), ("image_id_b", "ascending")])


def near_duplicates(
    table: pa.Table,
    radius: int,
    method: str = "centre",
    confirm_dhash: int | None = None,
    device: str = "cpu",
) -> pa.Table:
    """DUPLICATES for a HASHES table: one row per input row, in input order.

    Priority (who is kept): real (label 0) before generated, then the smaller image_id, so the
    result does not depend on row order. Exact duplicates (equal pixel_sha256) join their
    representative's group and are dropped as `exact_duplicate_of:<id>`; the search runs on one
    row per pixel content. Near duplicates of the same label are clustered by `method` and the
    non-centres dropped as `near_duplicate_of:<id> (phash hamming d)`. For generated rows,
    `nearest_real` is the nearest real image within radius (ties: smaller image_id).
    """
    _check_table(table, "near_duplicates")
    radius = _check_radius(radius)
    if confirm_dhash is not None and not 0 <= confirm_dhash <= HASH_BITS:
        raise ValueError(f"near_duplicates: confirm_dhash must be in 0..{HASH_BITS}")
    n = table.num_rows
    if n == 0:
        return DUPLICATES.arrow.empty_table()
    t = table.select(list(_NEED)).combine_chunks()
    label = t.column("label").to_numpy(zero_copy_only=False).astype(np.int8)
    by_prio = pc.sort_indices(t, [("label", "ascending"), ("image_id", "ascending")]).to_numpy()
    prio = np.empty(n, dtype=np.int64)
    prio[by_prio] = np.arange(n)

    # Exact duplicates: one representative per pixel content, the lowest priority.
    pixels = t.column("pixel_sha256").combine_chunks()
    codes = pixels.dictionary_encode().indices.to_numpy().astype(np.int64)
    best = np.full(codes.max() + 1, n, dtype=np.int64)
    np.minimum.at(best, codes, prio)
    rep = by_prio[best[codes]]
    reps = np.flatnonzero(rep == np.arange(n))

    i, j, d = _table_pairs(t, reps, radius, confirm_dhash, device)
    same = label[i] == label[j]
    pos = np.full(n, -1, dtype=np.int64)
    pos[reps] = np.arange(reps.size)
    g, _ = cluster(reps.size, pos[i[same]], pos[j[same]], d[same], prio[reps], method)
    centre = rep.copy()
    centre[reps] = reps[g]
    centre = centre[rep]  # exact copies follow their representative's centre

    # nearest_real: over cross-label pairs among representatives, then copied to exact copies.
    near = np.full(n, -1, dtype=np.int64)
    near_d = np.full(n, -1, dtype=np.int16)
    gen, real, dd = np.where(label[i] == 1, i, j), np.where(label[i] == 1, j, i), d
    cross = ~same
    gen, real, dd = gen[cross], real[cross], dd[cross]
    o = np.lexsort((prio[real], dd, gen))
    first = o[np.r_[True, gen[o][1:] != gen[o][:-1]]] if o.size else o
    near[gen[first]], near_d[gen[first]] = real[first], dd[first]
    copies = rep != np.arange(n)
    real_rep = copies & (label[rep] == 0)
    near[copies], near_d[copies] = near[rep[copies]], near_d[rep[copies]]
    near[real_rep], near_d[real_rep] = rep[real_rep], 0
    near[label == 0], near_d[label == 0] = -1, -1

    ids = t.column("image_id").combine_chunks()
    phash = _u64(t, "phash")
    dist_c = popcount64(phash ^ phash[centre]).astype(np.int16)
    keep = centre == np.arange(n)
    exact_reason = pc.binary_join_element_wise(DROP_EXACT, ids.take(pa.array(rep)), "")
    near_reason = pc.binary_join_element_wise(
        DROP_NEAR, ids.take(pa.array(centre)), " (phash hamming ",
        pc.cast(pa.array(dist_c), pa.string()), ")", "",
    )
    reason = pc.if_else(pa.array(copies), exact_reason, near_reason)
    reason = pc.if_else(pa.array(keep), pa.nulls(n, pa.string()), reason)
    has_near = near >= 0
    return pa.Table.from_arrays(
        [
            ids,
            ids.take(pa.array(centre)),
            pa.array(np.bincount(centre, minlength=n)[centre].astype(np.int32)),
            pa.array(keep),
            reason,
            ids.take(pa.array(np.where(has_near, near, 0), mask=~has_near)),
            pa.array(near_d, mask=~has_near, type=pa.int16()),
        ],
        schema=DUPLICATES.arrow,
    )
