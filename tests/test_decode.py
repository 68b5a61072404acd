"""The one decoder (manifests.imagebytes.decode): every stored mode to the right 8-bit RGB.

Expected pixels come from independent computations in the tests (numpy shifts, rotations, alpha
blends written here, Pillow's raw decode of the stored mode, `datasets`' view of the image).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from aigi.manifests.imagebytes import DEFAULT_MAX_PIXELS, BadImage, decode, decode_rgb


def encode(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb_array(h: int = 40, w: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def pil(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(arr)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_by_hand(w: int, h: int, depth: int, color: int, rows: bytes) -> bytes:
    """A PNG written without Pillow (filter 0 on every row), for what Pillow cannot write."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(rows)) + png_chunk(b"IEND", b""))  # fmt: skip


def pixels(d) -> np.ndarray:
    assert d.rgb.mode == "RGB" and (d.width, d.height) == d.rgb.size
    return np.asarray(d.rgb)


def gray3(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=-1)


# ---------------------------------------------------------------- 16 bit


def gradient16(h: int = 32, w: int = 64) -> np.ndarray:
    # Every high byte 0..255 and non-zero low bytes: clipping or >>8 errors both show.
    return (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 65535 // (h * w - 1)).astype(np.uint16)


def test_16bit_gray_png_is_scaled_not_clipped() -> None:
    from PIL import Image

    arr = gradient16()
    data = encode(pil(arr), "PNG")
    d = decode(data)
    assert (d.format, d.mode, d.frames) == ("PNG", "I;16", 1)
    assert d.conversion == "mode=I;16 scaled 16->8 bit"
    assert np.array_equal(pixels(d), gray3((arr >> 8).astype(np.uint8)))
    assert np.array_equal(np.asarray(decode_rgb(data)), pixels(d))
    # Pillow's plain convert clips: most of the gradient comes out white. That is the bug fixed.
    with Image.open(io.BytesIO(data)) as im:
        assert (np.asarray(im.convert("RGB")) == 255).mean() > 0.9


def test_16bit_ppm_mode_i_is_scaled() -> None:
    arr = gradient16(8, 16)
    d = decode(encode(pil(arr), "PPM"))  # Pillow opens 16-bit PGM as mode "I"
    assert (d.format, d.mode, d.conversion) == ("PPM", "I", "mode=I scaled 16->8 bit")
    assert np.array_equal(pixels(d), gray3((arr >> 8).astype(np.uint8)))


def test_16bit_rgb_png() -> None:
    arr = np.stack([gradient16(16, 32), gradient16(16, 32)[::-1], gradient16(16, 32)[:, ::-1]], -1)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in arr)
    d = decode(png_by_hand(32, 16, 16, 2, rows))
    assert (d.format, d.mode) == ("PNG", "RGB")
    assert d.conversion == "mode=RGB 16-bit scaled 16->8 bit"
    assert np.array_equal(pixels(d), (arr >> 8).astype(np.uint8))


# ---------------------------------------------------------------- EXIF orientation

# The EXIF orientations as numpy operations on the stored (H, W, 3) pixels.
ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # 90° clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),  # 90° counter-clockwise
}


def exif_jpeg(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(pil(rgb_array(40, 60)), "JPEG", quality=90, exif=exif)


def stored_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def datasets_view(data: bytes) -> np.ndarray:
    import datasets

    return np.asarray(datasets.Image().decode_example({"bytes": data, "path": None}).convert("RGB"))


@pytest.mark.parametrize("orientation", sorted(ORIENT))
def test_exif_orientation_applied_as_datasets_shows_it(orientation: int) -> None:
    data = exif_jpeg(orientation)
    d = decode(data)
    expected = ORIENT[orientation](stored_pixels(data))
    assert np.array_equal(pixels(d), expected)
    assert np.array_equal(pixels(d), datasets_view(data))
    assert d.conversion == f"exif_orientation={orientation}"
    swapped = orientation >= 5
    assert (d.width, d.height) == ((40, 60) if swapped else (60, 40))


def test_exif_orientation_1_is_plain() -> None:
    data = exif_jpeg(1)
    d = decode(data)
    assert d.conversion is None and (d.width, d.height) == (60, 40)
    assert np.array_equal(pixels(d), stored_pixels(data))
    assert np.array_equal(pixels(d), datasets_view(data))


# ---------------------------------------------------------------- colour modes


def test_plain_rgb_png_is_unchanged() -> None:
    arr = rgb_array()
    d = decode(encode(pil(arr), "PNG"))
    assert (d.format, d.mode, d.frames, d.conversion) == ("PNG", "RGB", 1, None)
    assert np.array_equal(pixels(d), arr)


def test_cmyk_jpeg() -> None:
    from PIL import Image

    data = encode(pil(rgb_array()).convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "CMYK"
        cmyk = np.asarray(im).astype(np.float64)
    # Naive CMYK -> RGB: channel = (255 - ink) * (255 - black) / 255.
    expected = (255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255
    d = decode(data)
    assert (d.format, d.mode, d.conversion) == ("JPEG", "CMYK", "mode=CMYK->RGB")
    assert np.abs(pixels(d) - expected).max() <= 1


def over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255
    return np.floor(rgb * a + 255 * (1 - a) + 0.5).astype(np.uint8)


def test_palette_png_with_transparency() -> None:
    from PIL import Image

    palette = np.random.default_rng(1).integers(0, 256, (256, 3), dtype=np.uint8)
    idx = np.random.default_rng(2).integers(0, 8, (24, 32), dtype=np.uint8)
    im = Image.frombytes("P", (32, 24), idx.tobytes())
    im.putpalette(palette.ravel().tolist())
    d = decode(encode(im, "PNG", transparency=0))
    expected = palette[idx]
    expected[idx == 0] = 255
    assert (d.format, d.mode) == ("PNG", "P")
    assert d.conversion == "mode=P transparency flattened on white"
    assert np.array_equal(pixels(d), expected)
    # Without transparency: the palette colours themselves.
    d = decode(encode(im, "PNG"))
    assert d.conversion == "mode=P palette->RGB" and np.array_equal(pixels(d), palette[idx])


def test_rgba_flattened_on_white() -> None:
    from PIL import Image

    arr = rgb_array()
    alpha = np.random.default_rng(3).integers(0, 256, arr.shape[:2], dtype=np.uint8)
    d = decode(encode(Image.fromarray(np.dstack([arr, alpha])), "PNG"))
    assert (d.mode, d.conversion) == ("RGBA", "mode=RGBA alpha flattened on white")
    assert np.array_equal(pixels(d), over_white(arr, alpha))
    opaque = decode(encode(Image.fromarray(np.dstack([arr, np.full_like(alpha, 255)])), "PNG"))
    assert opaque.conversion == "mode=RGBA alpha dropped (opaque)"
    assert np.array_equal(pixels(opaque), arr)


def test_la_flattened_on_white() -> None:
    from PIL import Image

    gray = rgb_array()[..., 0]
    alpha = np.random.default_rng(4).integers(0, 256, gray.shape, dtype=np.uint8)
    d = decode(encode(Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)]), "PNG"))
    assert (d.mode, d.conversion) == ("LA", "mode=LA alpha flattened on white")
    assert np.array_equal(pixels(d), over_white(gray3(gray), alpha))


def test_gray_and_bilevel() -> None:
    gray = rgb_array()[..., 1]
    d = decode(encode(pil(gray), "PNG"))
    assert (d.mode, d.conversion) == ("L", "mode=L gray->RGB")
    assert np.array_equal(pixels(d), gray3(gray))
    bits = gray > 127
    d = decode(encode(pil(gray).point(lambda v: 255 if v > 127 else 0).convert("1"), "PNG"))
    assert (d.mode, d.conversion) == ("1", "mode=1 bilevel->RGB")
    assert np.array_equal(pixels(d), gray3(np.where(bits, 255, 0).astype(np.uint8)))


# ---------------------------------------------------------------- frames and containers


def test_animated_gif_first_frame() -> None:
    from PIL import Image

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (30, 20), c) for c in colours]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)
    d = decode(data)
    assert (d.format, d.frames) == ("GIF", 3)
    assert d.conversion == "mode=P palette->RGB; frames=3 first used"
    assert (pixels(d) == np.array(colours[0], np.uint8)).all()


def test_multipage_tiff_first_page() -> None:
    pages = [rgb_array(seed=s) for s in (5, 6)]
    data = encode(pil(pages[0]), "TIFF", save_all=True, append_images=[pil(pages[1])])
    d = decode(data)
    assert (d.format, d.mode, d.frames, d.conversion) == ("TIFF", "RGB", 2, "frames=2 first used")
    assert np.array_equal(pixels(d), pages[0])


def test_apng_first_frame() -> None:
    frames = [rgb_array(seed=s) for s in (7, 8)]
    d = decode(encode(pil(frames[0]), "PNG", save_all=True, append_images=[pil(frames[1])]))
    assert (d.format, d.frames, d.conversion) == ("PNG", 2, "frames=2 first used")
    assert np.array_equal(pixels(d), frames[0])


def test_mpo_is_jpeg() -> None:
    arr = rgb_array()
    data = encode(pil(arr), "MPO", save_all=True, append_images=[pil(rgb_array(seed=9))])
    d = decode(data)
    assert (d.format, d.frames, d.conversion) == ("JPEG", 2, "frames=2 first used")
    assert d.quantization  # tables kept for the quality estimate
    assert np.array_equal(pixels(d), stored_pixels(data))


def test_bmp() -> None:
    arr = rgb_array()
    d = decode(encode(pil(arr), "BMP"))
    assert (d.format, d.mode, d.conversion) == ("BMP", "RGB", None)
    assert np.array_equal(pixels(d), arr)


# ---------------------------------------------------------------- refusals


def test_bomb_header_refused_before_decoding() -> None:
    # 45 bytes claiming 100,000 x 100,000 pixels: refused by its header, nothing inflated.
    data = png_by_hand(100_000, 100_000, 8, 2, b"")
    with pytest.raises(BadImage) as info:
        decode(data)
    assert info.value.reason.startswith("decompression bomb: 100000 x 100000 pixels > limit ")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_over_default_limit() -> None:
    assert 10_000 * 10_000 > DEFAULT_MAX_PIXELS
    with pytest.raises(BadImage) as info:
        decode(png_by_hand(10_000, 10_000, 8, 2, b""))
    assert info.value.reason == f"decompression bomb: 10000 x 10000 pixels > limit {DEFAULT_MAX_PIXELS}"


def test_max_pixels_lowered() -> None:
    data = encode(pil(rgb_array(40, 60)), "PNG")
    with pytest.raises(BadImage) as info:
        decode(data, max_pixels=60 * 40 - 1, origin="x.png")
    assert info.value.reason == "decompression bomb: 60 x 40 pixels > limit 2399"
    assert str(info.value).startswith("x.png: ")
    assert decode(data, max_pixels=60 * 40).width == 60


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"plain text, not an image" * 4, "cannot decode: not a recognized image format"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "cannot decode: corrupt or truncated PNG header"),
    ],
)
def test_bad_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(BadImage) as info:
        decode(data)
    assert info.value.reason == reason


def test_float_tiff_refused_with_reason() -> None:
    data = encode(pil(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)), "TIFF")
    with pytest.raises(BadImage, match=r"mode F"):
        decode(data)
