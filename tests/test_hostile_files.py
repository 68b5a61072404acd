"""Hostile and damaged files (issue 11, item 7): a cut-short or damaged Parquet shard is an error
naming its path; a shard of another schema version names the path and both versions; a table's
image paths and a tar's member names that are absolute or climb out with `..` are quarantined
with the reason and never read."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from aigi.curation.sources import RealSourceConfig, open_source
from aigi.manifests.schema import PROMPTS
from aigi.manifests.shards import (
    ManifestError,
    UnreadableShard,
    check_shard,
    read_shard,
    read_shards,
    shard_meta,
    write_shard,
)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 10, 20)).save(buf, "PNG")
    return buf.getvalue()


def prompts_shard(path: Path, n: int = 200) -> Path:
    table = {
        "prompt_id": [f"p{i}" for i in range(n)], "prompt": [f"a photo number {i} " * 5 for i in range(n)],
        "class_id": list(range(n)), "class_name": ["x"] * n, "source": ["s"] * n,
    }
    return write_shard(table, path, PROMPTS, "producer")


# ------------------------------------------------------------------ aigi's own shards


def test_truncated_shard_is_an_error_naming_the_path(tmp_path: Path) -> None:
    path = prompts_shard(tmp_path / "prompts.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a full disk or an interrupted copy
    for read in (lambda: read_shard(path, PROMPTS), lambda: check_shard(path, PROMPTS),
                 lambda: shard_meta(path), lambda: read_shards([path], PROMPTS)):
        with pytest.raises(UnreadableShard) as e:
            read()
        assert str(e.value).startswith(f"{path}: unreadable Parquet file")
    # an OSError, so a unit whose output cannot be opened is redone, and not "not written by aigi"
    assert issubclass(UnreadableShard, OSError) and not issubclass(UnreadableShard, ManifestError)


def test_damaged_pages_under_an_intact_footer_name_the_path(tmp_path: Path) -> None:
    path = prompts_shard(tmp_path / "prompts.parquet")
    data = bytearray(path.read_bytes())
    data[4:400] = b"\x17" * 396
    path.write_bytes(bytes(data))
    assert shard_meta(path)["schema"] == PROMPTS.name  # the footer still reads
    with pytest.raises(UnreadableShard, match=f"^{path}: unreadable Parquet file"):
        read_shard(path, PROMPTS)


def test_stages_that_read_parquet_directly_name_the_damaged_file(tmp_path: Path) -> None:
    """The generation stage reads its prompts' row groups itself; a damaged page names the file."""
    from aigi.pipeline.stages.generate import read_items

    path = prompts_shard(tmp_path / "prompts.parquet")
    data = bytearray(path.read_bytes())
    data[4:400] = b"\x17" * 396
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableShard, match=f"^{path}: unreadable Parquet file"):
        read_items({"prompts": str(path), "lo": 0, "hi": 4, "per_prompt": 2})


def test_missing_shard_stays_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_shard(tmp_path / "absent.parquet", PROMPTS)


def _with_metadata(path: Path, **changes: bytes) -> None:
    table = pq.read_table(path)
    md = dict(table.schema.metadata)
    md.update({k.encode(): v for k, v in changes.items()})
    pq.write_table(table.replace_schema_metadata(md), path)


def test_wrong_schema_version_names_path_and_both_versions(tmp_path: Path) -> None:
    path = prompts_shard(tmp_path / "prompts.parquet")
    _with_metadata(path, **{"aigi.schema_version": b"99"})
    with pytest.raises(ManifestError) as e:
        read_shard(path, PROMPTS)
    assert str(e.value) == f"{path}: {PROMPTS.name} version 99, this aigi reads version {PROMPTS.version}"


@pytest.mark.parametrize("key, value", [("aigi.schema_version", b"two"), ("aigi.schema_version", b"\xff"),
                                        ("aigi.extra", b"{not json"), ("aigi.extra", b"[1]")])
def test_damaged_metadata_is_a_manifest_error_naming_the_path(tmp_path: Path, key: str, value: bytes) -> None:
    path = prompts_shard(tmp_path / "prompts.parquet")
    _with_metadata(path, **{key: value})
    with pytest.raises(ManifestError, match=f"^{path}: damaged aigi metadata"):
        read_shard(path, PROMPTS)


# ------------------------------------------------------------------ real sources from strangers


def read_items(cfg: RealSourceConfig) -> dict[str, tuple[bytes | None, str | None]]:
    source = open_source(cfg)
    return {it.origin: (it.data, it.error) for unit in source.units() for it in source.read(unit)}


def test_table_image_paths_outside_their_folder_are_quarantined_unread(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"  # a file the table's owner must not make aigi read
    secret.write_bytes(png(9))
    table_dir = tmp_path / "data"
    (table_dir / "img").mkdir(parents=True)
    (table_dir / "img" / "ok.png").write_bytes(png(1))
    paths = ["img/ok.png", str(table_dir / "img" / "ok.png"), "../secret.png", "img/../../secret.png",
             str(secret), str(table_dir / ".." / "secret.png")]
    pq.write_table(pa.table({"image": pa.array(paths, pa.string()), "id": [f"r{i}" for i in range(len(paths))]}),
                   table_dir / "t.parquet")
    cfg = RealSourceConfig(path=str(table_dir / "t.parquet"), source="parquet", id_column="id")
    items = read_items(cfg)
    assert items["r0"] == (png(1), None) and items["r1"] == (png(1), None)  # inside: read
    for key in ("r2", "r3", "r5"):
        data, error = items[key]
        assert data is None and "'..' component: refused" in error, (key, error)
    assert items["r4"][0] is None and "is outside the source folder: refused" in items["r4"][1]


def test_webdataset_member_names_absolute_or_with_dotdot_are_refused(tmp_path: Path) -> None:
    shard = tmp_path / "wds" / "s.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tf:
        for name, data in (("good.png", png(1)), ("../up.png", png(2)), ("a/../../up2.png", png(3)),
                           ("/abs/evil.png", png(4))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    items = read_items(RealSourceConfig(path=str(shard), source="webdataset"))
    assert items["s.tar/good"] == (png(1), None)
    refused = {k: v for k, v in items.items() if k != "s.tar/good"}
    assert set(refused) == {"s.tar//abs/evil.png", "s.tar/../up.png", "s.tar/a/../../up2.png"}
    for data, error in refused.values():
        assert data is None and "absolute or has a '..' component: refused" in error


def test_damaged_parquet_source_quarantines_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": pa.array([png(i) for i in range(5)], pa.binary())}), path)
    data = bytearray(path.read_bytes())
    data[4:200] = b"\x17" * 196  # the first page header, under an intact footer
    path.write_bytes(bytes(data))
    items = read_items(RealSourceConfig(path=str(path), source="parquet"))
    assert sorted(items) == [f"t.parquet:{i}" for i in range(5)]  # every row, none lost
    assert all(d is None and e.startswith("cannot read Parquet file: ") for d, e in items.values())
