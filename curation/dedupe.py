"""Exact duplicates: images whose decoded pixels are identical (same `pixel_sha256`).

Score, then decide: this only annotates. Every input row gets a DUPLICATES row; the rows not kept
say which image they duplicate. Nothing is deleted.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from aigi.manifests.schema import DUPLICATES

DROP_PREFIX = "exact_duplicate_of:"
GROUP_CHARS = 16


def exact_duplicates(hashes: pa.Table) -> pa.Table:
    """Group a HASHES table by pixel_sha256 and keep one image per group (DUPLICATES schema).

    The kept image is chosen from the data alone: a real image (label 0) before a generated one,
    then the smallest image_id, so the choice does not depend on row order or sharding. A real
    photo that a generator reproduced exactly stays a real photo. Output rows are in input order.
    """
    for col in ("image_id", "label", "pixel_sha256"):
        if col not in hashes.column_names:
            raise ValueError(f"exact_duplicates: input lacks column {col!r}")
        if hashes.column(col).null_count:
            raise ValueError(f"exact_duplicates: column {col!r} has null values")
    n = hashes.num_rows
    if pc.count_distinct(hashes.column("image_id")).as_py() != n:
        raise ValueError("exact_duplicates: image_id values are not unique")
    if n == 0:
        return DUPLICATES.arrow.empty_table()

    t = hashes.select(["image_id", "label", "pixel_sha256"]).combine_chunks()
    order = pc.sort_indices(
        t,
        sort_keys=[("pixel_sha256", "ascending"), ("label", "ascending"), ("image_id", "ascending")],
    )
    pix = t.column("pixel_sha256").take(order).combine_chunks()
    ids = t.column("image_id").take(order).combine_chunks()

    # On sorted values, dictionary codes are non-decreasing run ids: one int per group, no loops.
    codes = pix.dictionary_encode().indices.to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    sizes = np.bincount(codes)
    keep = np.zeros(n, dtype=bool)
    keep[starts] = True

    kept_id = ids.take(pa.array(starts[codes]))
    reason = pc.binary_join_element_wise(DROP_PREFIX, kept_id, "")
    reason = pc.if_else(pa.array(keep), pa.nulls(n, pa.string()), reason)

    sorted_out = pa.Table.from_arrays(
        [
            ids,
            pc.utf8_slice_codeunits(pix, 0, GROUP_CHARS),
            pa.array(sizes[codes].astype(np.int32)),
            pa.array(keep),
            reason,
        ],
        schema=DUPLICATES.arrow,
    )
    # Undo the sort so row i of the output describes row i of the input.
    inverse = np.empty(n, dtype=np.int64)
    inverse[order.to_numpy()] = np.arange(n)
    return sorted_out.take(pa.array(inverse))
