"""Duplicates against an existing corpus (the incremental mode of near-duplicate search).

Within a run, `aigi.curation.neardup.near_duplicates` groups exact and near duplicates. This
module adds what a growing corpus needs: new images checked against the hashes of runs already
built, through an index of those runs, without searching them again.
"""

from __future__ import annotations

import pyarrow as pa

REFERENCE_PREFIX = "near_duplicate_of_reference:"


def against_reference(dups: pa.Table, hashes: pa.Table, reference: pa.Table, radius: int) -> pa.Table:
    """The incremental mode: `dups` (DUPLICATES for `hashes`) updated with matches in an existing
    corpus's HASHES `reference`, searched through an index of the reference only.

    A kept image within `radius` of a reference image of the same label is dropped with
    `near_duplicate_of_reference:<id> (phash hamming d)`; a generated image near a reference real
    gets it as `nearest_real` when that is nearer than what it had. Rows stay in input order.
    """
    from aigi.curation.neardup import HashIndex

    if dups.column("image_id").to_pylist() != hashes.column("image_id").to_pylist():
        raise ValueError("against_reference: dups and hashes must describe the same rows in the same order")
    index = HashIndex(reference.column("phash").to_numpy(zero_copy_only=False), radius,
                      expected_queries=hashes.num_rows)
    qi, j, d = index.query(hashes.column("phash").to_numpy(zero_copy_only=False))
    ref_ids = reference.column("image_id").to_pylist()
    ref_labels = reference.column("label").to_pylist()
    labels = hashes.column("label").to_pylist()
    rows = dups.to_pylist()
    # nearest first, then smaller id: the reported match does not depend on the index's order
    for q, r, dist in sorted(zip(qi.tolist(), j.tolist(), d.tolist(), strict=True), key=lambda t: (t[0], t[2], ref_ids[t[1]])):
        row = rows[q]
        if ref_labels[r] == labels[q]:
            if row["keep"]:
                row["keep"] = False
                row["drop_reason"] = f"{REFERENCE_PREFIX}{ref_ids[r]} (phash hamming {dist})"
        elif labels[q] == 1 and ref_labels[r] == 0:
            if row["nearest_real"] is None or dist < row["nearest_real_distance"]:
                row["nearest_real"], row["nearest_real_distance"] = ref_ids[r], dist
    return pa.Table.from_pylist(rows, schema=dups.schema)
