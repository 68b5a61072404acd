"""Bad input never stops ingestion and is never lost: one folder holding every awkward case.

Every non-hidden file ends in exactly one place: an IMAGES row (with the right format, size and
conversion) or a reason (a BadImage from ingestion, or a `list_files` skip). Pixel hashes are
checked against pixels computed independently here.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from aigi.curation.hashing import hash_image, hash_rows
from aigi.curation.ingest import BadImage, folder_class, ingest_file, list_files, list_images
from aigi.manifests.schema import IMAGES, QUARANTINE
from aigi.manifests.shards import read_shard, write_shard

H, W = 24, 32  # every ordinary test image
LIMIT = 10_000  # the lowered pixel limit: 24 x 32 passes, 120 x 100 does not
ODD = "odd dir ü/naïve ‘q’ \"dq\" 'sq' #1 50% 日本.png"


def encode(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb_array(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))  # fmt: skip


def gradient16() -> np.ndarray:
    return (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 65535 // (H * W - 1)).astype(np.uint16)


def exif_jpeg() -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(rgb_array(6)), "JPEG", quality=90, exif=exif)


# relpath -> (format, (width, height), conversion) for what must ingest.
GOOD = {
    "plain.png": ("PNG", (W, H), None),
    "photo.jpg": ("JPEG", (W, H), None),
    "really_png.jpg": ("PNG", (W, H), None),
    "cmyk.jpg": ("JPEG", (W, H), "mode=CMYK->RGB"),
    "deep16.png": ("PNG", (W, H), "mode=I;16 scaled 16->8 bit"),
    "palette.png": ("PNG", (W, H), "mode=P transparency flattened on white"),
    "rgba.png": ("PNG", (W, H), "mode=RGBA alpha flattened on white"),
    "gray.png": ("PNG", (W, H), "mode=L gray->RGB"),
    "rotated.jpg": ("JPEG", (H, W), "exif_orientation=6"),
    "anim.gif": ("GIF", (W, H), "mode=P palette->RGB; frames=2 first used"),
    "pages.tiff": ("TIFF", (W, H), "frames=2 first used"),
    "bitmap.bmp": ("BMP", (W, H), None),
    "n01440764/fish.JPEG": ("JPEG", (W, H), None),
    "great_white_shark/shark.png": ("PNG", (W, H), None),
    "my_own_class/x.webp": ("WEBP", (W, H), None),
    ODD: ("PNG", (W, H), None),
}
# relpath -> reason (exact, or the prefix before "...") for what ingestion refuses.
BAD = {
    "empty.png": "empty file",
    "trunc.png": "truncated",
    "trunc.jpg": "truncated",
    "garbage.jpg": "cannot decode: not a recognized image format",
    "bomb.png": "decompression bomb: 100000 x 100000 pixels > limit ...",
    "huge.png": f"decompression bomb: 120 x 100 pixels > limit {LIMIT}",
    "vanished.png": "unreadable: No such file or directory",
}
# relpath -> reason for what listing leaves out (never read).
SKIPPED = {
    "notes.txt": "not an image file (.txt)",
    "README": "not an image file (no extension)",
    "raw/IMG_0001.CR2": "unsupported image format (.cr2)",
    "dangling.png": "unreadable: broken symbolic link",
}
HIDDEN = [".DS_Store", ".hidden.png", ".cache/e.png"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("bad") / "real"
    png = encode(Image.fromarray(rgb_array(0)), "PNG")
    jpg = encode(Image.fromarray(rgb_array(1)), "JPEG", quality=85)
    palette = Image.fromarray(rgb_array(2)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    rgba = np.dstack([rgb_array(3), np.random.default_rng(3).integers(0, 256, (H, W), np.uint8)])
    gif_frames = [Image.new("RGB", (W, H), c) for c in ((250, 0, 0), (0, 0, 250))]
    files = {
        "plain.png": png,
        "photo.jpg": jpg,
        "really_png.jpg": png,
        "cmyk.jpg": encode(Image.fromarray(rgb_array(4)).convert("CMYK"), "JPEG"),
        "deep16.png": encode(Image.fromarray(gradient16()), "PNG"),
        "palette.png": encode(palette, "PNG", transparency=0),
        "rgba.png": encode(Image.fromarray(rgba), "PNG"),
        "gray.png": encode(Image.fromarray(rgb_array(5)[..., 0]), "PNG"),
        "rotated.jpg": exif_jpeg(),
        "anim.gif": encode(gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:]),
        "pages.tiff": encode(Image.fromarray(rgb_array(7)), "TIFF", save_all=True,
                             append_images=[Image.fromarray(rgb_array(8))]),
        "bitmap.bmp": encode(Image.fromarray(rgb_array(9)), "BMP"),
        "n01440764/fish.JPEG": jpg,
        "great_white_shark/shark.png": encode(Image.fromarray(rgb_array(10)), "PNG"),
        "my_own_class/x.webp": encode(Image.fromarray(rgb_array(11)), "WEBP", lossless=True),
        ODD: encode(Image.fromarray(rgb_array(12)), "PNG"),
        "empty.png": b"",
        "trunc.png": png[: len(png) // 2],
        "trunc.jpg": jpg[: len(jpg) // 2],
        "garbage.jpg": b"this is not a jpeg at all" * 10,
        "bomb.png": png_header(100_000, 100_000),
        "huge.png": encode(Image.fromarray(rgb_array(13, 100, 120)), "PNG"),
        "vanished.png": png,
        "notes.txt": b"not an image",
        "README": b"about",
        "raw/IMG_0001.CR2": b"II*\x00raw",
        **{h: png for h in HIDDEN},
    }  # fmt: skip
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.symlink(root / "no-such-target.png", root / "dangling.png")
    return root


def ingest_all(folder: Path) -> tuple[list[dict], dict[str, str], dict[str, str]]:
    images, skipped = list_files(folder)
    (folder / "vanished.png").unlink(missing_ok=True)  # gone between listing and reading
    rows, bad = [], {}
    for rel in images:
        try:
            rows.append(ingest_file(folder, rel, "real", class_from_folder=True, max_pixels=LIMIT))
        except BadImage as e:
            assert e.path == rel
            bad[rel] = e.reason
    return rows, bad, dict(skipped)


@pytest.fixture(scope="module")
def ingested(folder: Path) -> tuple[list[dict], dict[str, str], dict[str, str]]:
    return ingest_all(folder)


def test_every_file_is_a_row_or_a_reason(ingested) -> None:
    rows, bad, skipped = ingested
    got = [r["origin"] for r in rows]
    assert len(got) == len(set(got))
    assert set(got) == set(GOOD)
    assert set(bad) == set(BAD)
    assert set(skipped) == set(SKIPPED)
    # None missing, none twice: the three outcomes partition the non-hidden files.
    assert len(got) + len(bad) + len(skipped) == len(GOOD) + len(BAD) + len(SKIPPED)
    for name in [*got, *bad, *skipped]:
        assert not any(part.startswith(".") for part in name.split("/"))


def test_reasons(ingested) -> None:
    _, bad, skipped = ingested
    for rel, reason in BAD.items():
        if reason.endswith("..."):
            assert bad[rel].startswith(reason[:-3]), (rel, bad[rel])
        else:
            assert bad[rel] == reason, (rel, bad[rel])
    assert skipped == SKIPPED


def test_rows_record_format_size_conversion(folder: Path, ingested) -> None:
    rows, _, _ = ingested
    for row in rows:
        fmt, size, conversion = GOOD[row["origin"]]
        assert (row["format"], (row["width"], row["height"]), row["conversion"]) == (
            fmt, size, conversion), row["origin"]  # fmt: skip
        data = (folder / row["origin"]).read_bytes()
        assert row["image"] == {"bytes": data, "path": row["origin"]}
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert (row["jpeg_quality"] is not None) == (fmt == "JPEG")
    by = {r["origin"]: r for r in rows}
    assert by["photo.jpg"]["jpeg_quality"] in (84, 85, 86)


def test_classes_from_folders(ingested) -> None:
    rows, _, _ = ingested
    by = {r["origin"]: (r["class_name"], r["class_id"]) for r in rows}
    assert by["n01440764/fish.JPEG"] == ("tench", 0)
    assert by["great_white_shark/shark.png"] == ("great white shark", 2)
    assert by["my_own_class/x.webp"] == ("my_own_class", None)
    assert by[ODD] == ("odd dir ü", None)
    assert by["plain.png"] == (None, None)
    assert folder_class("n02123045/cat.jpg") == ("tabby", 281)


def test_rows_and_reasons_are_storable(ingested, tmp_path: Path) -> None:
    rows, bad, skipped = ingested
    path = write_shard(pa.Table.from_pylist(rows, schema=IMAGES.arrow), tmp_path / "i.parquet",
                       IMAGES, producer="test")  # fmt: skip
    assert ODD in read_shard(path, IMAGES).column("origin").to_pylist()
    q = [{"stage": "ingest/real", "unit": "u", "item": k, "reason": v}
         for k, v in {**bad, **skipped}.items()]  # fmt: skip
    back = read_shard(write_shard(pa.Table.from_pylist(q, schema=QUARANTINE.arrow),
                                  tmp_path / "q.parquet", QUARANTINE, producer="test"), QUARANTINE)
    assert dict(zip(back.column("item").to_pylist(), back.column("reason").to_pylist(),
                    strict=True)) == {**bad, **skipped}  # fmt: skip
    hashes = hash_rows(pa.Table.from_pylist(rows, schema=IMAGES.arrow))
    assert hashes.num_rows == len(rows)


def test_list_images_and_non_recursive(folder: Path) -> None:
    images, _ = list_files(folder)
    assert list_images(folder) == images == sorted(images)
    top, skipped = list_files(folder, recursive=False)
    assert all("/" not in rel for rel in top)
    assert {"n01440764/", "raw/", "odd dir ü/"} <= {rel for rel, _ in skipped}
    assert dict(skipped)["raw/"] == "folder not searched (recursive=false)"


def test_non_utf8_name_is_reported(tmp_path: Path) -> None:
    name = os.fsdecode(b"bad\xff.png")
    try:
        (tmp_path / name).write_bytes(b"x")
    except (OSError, UnicodeEncodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    images, skipped = list_files(tmp_path)
    assert images == [] and skipped == [("bad\\xff.png", "file name is not valid UTF-8")]


# ---------------------------------------------------------------- hashing sees the same pixels


def pixel_digest(arr: np.ndarray) -> str:
    h, w, _ = arr.shape
    return hashlib.sha256(f"{h}x{w}x3:".encode() + np.ascontiguousarray(arr).tobytes()).hexdigest()


def test_16bit_hash_is_of_scaled_pixels(folder: Path) -> None:
    import imagehash
    from PIL import Image

    expected = np.repeat((gradient16() >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    h = hash_image((folder / "deep16.png").read_bytes())
    assert h["pixel_sha256"] == pixel_digest(expected)
    assert h["phash"] == int(str(imagehash.phash(Image.fromarray(expected))), 16)


def test_exif_hash_is_of_rotated_pixels(folder: Path) -> None:
    from PIL import Image

    data = (folder / "rotated.jpg").read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        stored = np.asarray(im.convert("RGB"))
    assert hash_image(data)["pixel_sha256"] == pixel_digest(np.rot90(stored, -1))
    # The same picture stored upright (rotation baked into the pixels) is the same picture.
    upright = encode(Image.fromarray(np.rot90(stored, -1)), "PNG")
    assert hash_image(upright)["pixel_sha256"] == hash_image(data)["pixel_sha256"]


def test_a_run_over_the_folder_completes_and_accounts_for_every_file(folder: Path, tmp_path: Path, capsys) -> None:
    """Through `aigi run` (ingest and every curation stage): each non-hidden file is an image row
    or a quarantine row with its reason; the counts reach the console and `aigi status`."""
    import shutil

    import pyarrow.parquet as pq

    from aigi.pipeline.cli import main
    from aigi.pipeline.config import parse_config
    from aigi.pipeline.run import run

    copy = tmp_path / "real"
    shutil.copytree(folder, copy, symlinks=True)
    (copy / "vanished.png").unlink(missing_ok=True)  # another test removes it from the fixture
    cfg = parse_config({"run": {"out": str(tmp_path / "run")},
                        "real": {"path": str(copy), "class_from_folder": True, "max_pixels": LIMIT}})
    console = io.StringIO()
    report = run(cfg, serial=True, stream=console)
    assert [r.label for r in report.results][-1] == "split"  # the run went to the end
    rows = pq.read_table(tmp_path / "run" / "images").to_pylist()
    reasons = {r["item"]: r["reason"] for r in pq.read_table(tmp_path / "run" / "quarantine").to_pylist()}
    ingested = {r["origin"] for r in rows}
    expected = (set(GOOD) | set(BAD) | set(SKIPPED)) - {"vanished.png"}
    assert ingested == set(GOOD) and not ingested & set(reasons)
    assert ingested | set(reasons) == expected
    assert {k for k, v in reasons.items() if v.startswith("skipped: ")} == set(SKIPPED)
    n_bad = len(BAD) - 1
    assert f"{n_bad} quarantined, {len(SKIPPED)} skipped" in console.getvalue()
    assert main(["status", str(tmp_path / "run")]) == 0
    assert f"({n_bad} quarantined, {len(SKIPPED)} skipped)" in capsys.readouterr().out
    # the synset folder's image carries the ImageNet class, as generated images of it would
    fish = next(r for r in rows if r["origin"] == "n01440764/fish.JPEG")
    assert (fish["class_name"], fish["class_id"]) == ("tench", 0)
