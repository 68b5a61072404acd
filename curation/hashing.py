"""Content hashes of images: bytes, decoded pixels, and perceptual hashes (pHash, dHash).

`sha256` names the stored file; `pixel_sha256` names the picture, so a PNG and a lossless WEBP of
the same pixels are recognized as exact duplicates; `phash`/`dhash` feed near-duplicate search.
Pixels come from `aigi.manifests.imagebytes.decode`, the decoder the feature stage uses: a photo
and its copy with the rotation baked in (instead of an EXIF tag) hash alike, as they look alike.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

from aigi.manifests.ids import sha256_bytes
from aigi.manifests.imagebytes import decode
from aigi.manifests.schema import HASHES

_HASH_BITS = 64


def _to_uint64(h: object) -> int:
    value = int(str(h), 16)
    if value >= 1 << _HASH_BITS:
        raise ValueError(f"perceptual hash wider than {_HASH_BITS} bits: {h}")
    return value


def hash_image(data: bytes) -> dict:
    """sha256 of the bytes, sha256 of the decoded RGB pixels (with their shape), pHash, dHash.

    BadImage (a ValueError) if the bytes do not decode.
    """
    import imagehash

    rgb = decode(data, verify=False).rgb  # stored bytes: checked when they were ingested
    # The shape goes into the digest so the same byte run in two shapes cannot collide.
    pixels = hashlib.sha256(f"{rgb.height}x{rgb.width}x3:".encode())
    pixels.update(rgb.tobytes())
    # Perceptual hashes are taken on the same RGB pixels, so equal pixel_sha256 implies equal
    # phash/dhash whatever the source mode (P, RGBA, L) was.
    return {
        "sha256": sha256_bytes(data),
        "pixel_sha256": pixels.hexdigest(),
        "phash": _to_uint64(imagehash.phash(rgb)),
        "dhash": _to_uint64(imagehash.dhash(rgb)),
    }


def hash_rows(table: pa.Table) -> pa.Table:
    """A HASHES table for an IMAGES table (needs columns image_id, image, label, source)."""
    from aigi.curation.per_image import per_image_table

    return per_image_table(table, hash_image, HASHES, "hash_rows")
