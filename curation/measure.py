"""Per-image codec and size measurements: the properties a detector can learn as a shortcut.

GenImage's reals are JPEG and its fakes PNG, so a detector can learn the codec instead of the
generator ("Fake or JPEG?", 2024). Before and after normalization every image is measured from its
stored bytes (codec, JPEG quality and chroma subsampling, size, bytes per pixel, metadata chunks,
and how much block-DCT energy sits in high frequencies), and the bias audit compares the
distributions of real and generated images.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa

from aigi.manifests.schema import MEASURES

# (H, V) sampling factors of Y, Cb, Cr -> the usual J:a:b name. Pillow's get_sampling knows the
# first three; 4:1:1 (DV, some old cameras) and 4:4:0 are read from the frame header directly.
_SAMPLING_NAMES = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
_RAW_SAMPLING_NAMES = {(4, 1, 1, 1, 1, 1): "4:1:1", (1, 2, 1, 1, 1, 1): "4:4:0"}

BLOCK = 8
HF_MIN_DIAGONAL = 8  # coefficient (u, v) is "high frequency" when u + v >= 8
# A block enters the average only if its AC energy (sum of squared deviations from the block mean,
# grey levels 0..255) is >= 64, i.e. its RMS contrast is >= 1 grey level. Flatter blocks hold
# mostly the rounding noise of the 8-bit decode, whose flat spectrum would read as "sharp".
HF_MIN_AC_ENERGY = 64.0
_STRIP_BLOCKS = 64  # block rows per DCT batch: bounded memory on 50-megapixel photos

_HF_MASK = np.add.outer(np.arange(BLOCK), np.arange(BLOCK)) >= HF_MIN_DIAGONAL


def subsampling_name(im: Any) -> str | None:
    """The chroma subsampling of an opened JPEG ("4:4:4", "4:2:2", "4:2:0", "4:1:1", "4:4:0"),
    "HxV,HxV,HxV" for any other layout, None for non-JPEG, grayscale or CMYK images."""
    from PIL import JpegImagePlugin

    code = JpegImagePlugin.get_sampling(im)
    if code in _SAMPLING_NAMES:
        return _SAMPLING_NAMES[code]
    layers = getattr(im, "layer", None)
    if not isinstance(im, JpegImagePlugin.JpegImageFile) or not layers or len(layers) != 3:
        return None
    raw = tuple(int(x) for layer in layers for x in layer[1:3])
    return _RAW_SAMPLING_NAMES.get(raw, ",".join(f"{raw[i]}x{raw[i + 1]}" for i in (0, 2, 4)))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma (the Y of JPEG's YCbCr), float64 in grey levels 0..255."""
    return np.dot(rgb, np.array([0.299, 0.587, 0.114]))


def hf_energy(rgb: np.ndarray) -> float | None:
    """Share of AC energy in the high-frequency bands of the 8x8 block DCT of the luminance.

    Y = 0.299 R + 0.587 G + 0.114 B of the decoded RGB at native size (upright: for an EXIF-rotated
    image whose stored size is not a multiple of 8 the grid is offset from the codec's), cut to
    whole 8x8 blocks from the top-left (a partial last row or column of blocks is left out). For each block b, C_b is its
    orthonormal 2-D DCT-II (scipy.fft.dctn(type=2, norm="ortho")) and

        AC_b = sum over (u, v) != (0, 0) of C_b[u, v]^2
        HF_b = sum over u + v >= 8       of C_b[u, v]^2      (28 of the 63 AC coefficients)
        hf_energy = mean over blocks with AC_b >= 64 of HF_b / AC_b

    0.0 when no block reaches AC_b >= 64 (a flat picture has no high frequencies); None when the
    image is smaller than one block. JPEG quantization zeroes high frequencies first, and blur
    attenuates them, so both lower it; white noise gives 28/63 ~ 0.44.
    """
    from scipy.fft import dctn

    y = luminance(rgb)
    nby, nbx = y.shape[0] // BLOCK, y.shape[1] // BLOCK
    if nby == 0 or nbx == 0:
        return None
    total, count = 0.0, 0
    for top in range(0, nby, _STRIP_BLOCKS):
        rows = min(_STRIP_BLOCKS, nby - top)
        strip = y[top * BLOCK : (top + rows) * BLOCK, : nbx * BLOCK]
        blocks = strip.reshape(rows, BLOCK, nbx, BLOCK).transpose(0, 2, 1, 3).reshape(-1, BLOCK, BLOCK)
        energy = dctn(blocks, type=2, norm="ortho", axes=(1, 2)) ** 2
        ac = energy.sum(axis=(1, 2)) - energy[:, 0, 0]
        hf = energy[:, _HF_MASK].sum(axis=1)
        keep = ac >= HF_MIN_AC_ENERGY
        total += float((hf[keep] / ac[keep]).sum())
        count += int(keep.sum())
    return total / count if count else 0.0


def measure(data: bytes) -> dict:
    """Codec and size properties of one encoded image (keys: the MEASURES columns after `label`).

    Pixels, width and height are those of `aigi.manifests.imagebytes.decode`, the decoder every
    stage uses (EXIF orientation applied, so they match the IMAGES columns and what normalization
    sees). Subsampling, EXIF and ICC are read from the file header (for PNG: chunks before the
    image data). Raises BadImage (a ValueError) for bytes that are not a usable image.
    """
    from PIL import Image

    from aigi.curation.ingest import estimate_jpeg_quality
    from aigi.manifests.imagebytes import decode

    decoded = decode(data, verify=False)  # stored bytes: checked when they were ingested
    is_jpeg = decoded.format == "JPEG"
    with Image.open(io.BytesIO(data)) as im:  # header only: no second pixel decode
        sampling = subsampling_name(im) if is_jpeg else None
        has_exif = bool(im.info.get("exif"))
        has_icc = bool(im.info.get("icc_profile"))
    width, height = decoded.width, decoded.height
    return {
        "format": decoded.format,
        "jpeg_quality": estimate_jpeg_quality(decoded) if is_jpeg else None,
        "subsampling": sampling,
        "width": width,
        "height": height,
        "aspect": width / height,
        "n_bytes": len(data),
        "bits_per_pixel": 8.0 * len(data) / (width * height),
        "has_exif": has_exif,
        "has_icc": has_icc,
        "hf_energy": hf_energy(np.asarray(decoded.rgb)),
    }


def measure_rows(images: pa.Table) -> pa.Table:
    """A MEASURES table for an IMAGES table (needs image_id, image, label, source), in row order."""
    from aigi.curation.per_image import per_image_table

    return per_image_table(images, measure, MEASURES, "measure_rows")
