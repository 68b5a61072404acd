"""Table rows to items: how the image, caption, class and id columns of a Parquet file or a
Hugging Face dataset become `RawItem`s, shared by both table sources.

Images are taken as stored (a struct<bytes, path> Hugging Face Image cell, plain binary, or a
path string), never decoded. A cell stored only by path is read from the table's own folder: a
path with a `..` component, or an absolute one outside that folder, is quarantined with the
reason, never read (a table from a stranger must not make aigi read the machine's other files). Class values: a string is a class name; an ImageNet-1k name or
WordNet id ("n01440764") becomes that class's name and index (`prompts.classes.lookup_class`, as
image folders do), so real and generated rows of one class share class_id. An int goes through
the column's own names when it has them (a ClassLabel), else through ImageNet-1k names when
`class_id_names = "imagenet"`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from aigi.curation.sources.base import RawItem, SourceError
from aigi.curation.sources.config import RealSourceConfig


def class_fields(
    value: Any, names: Sequence[str] | None, id_names: str
) -> tuple[str | None, int | None, str | None]:
    """(class_name, class_id, error) for one class value; error when the value cannot be mapped."""
    if value is None:
        return None, None, None
    if isinstance(value, str):
        from aigi.prompts.classes import lookup_class

        found = lookup_class(value) if id_names == "imagenet" else None
        return (found[1], found[0], None) if found else (value, None, None)
    if isinstance(value, bool) or not isinstance(value, int):
        return None, None, f"class value {value!r} is neither an int nor a string"
    if names is not None:
        if value == -1:  # the Hugging Face ClassLabel convention for "no label"
            return None, None, None
        if 0 <= value < len(names):
            return names[value], value, None
        return None, None, f"class {value} out of range of its {len(names)} class names"
    if id_names == "none":
        return None, value, None
    from aigi.prompts.classes import imagenet_classes

    table = imagenet_classes()
    if 0 <= value < len(table):
        return table[value], value, None
    return (
        None,
        None,
        (
            f"class id {value} is not an ImageNet-1k id (0..{len(table) - 1}); "
            'set class_id_names = "none" to keep ids without names'
        ),
    )


def _image_kind(t: pa.DataType) -> str | None:
    if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
        return "struct"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "path"
    return None


def _is_box(t: pa.DataType) -> bool:
    list_like = pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t)
    return list_like and (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type))


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):  # e.g. a pandas categorical column
        return _is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


@dataclass(frozen=True)
class Columns:
    """The configured columns of one table, checked against its schema."""

    image: str
    caption: str = ""
    cls: str = ""
    id: str = ""
    mask: str = ""
    class_names: tuple[str, ...] | None = None
    id_names: str = "imagenet"

    @classmethod
    def for_schema(
        cls,
        cfg: RealSourceConfig,
        schema: pa.Schema,
        where: str,
        class_names: Sequence[str] | None = None,
    ) -> Columns:
        """Check the configured columns exist with usable types; errors name the key and `where`."""

        def need(key: str, col: str, ok: Callable[[pa.DataType], bool], expect: str) -> None:
            if not col:
                return
            if col not in schema.names:
                raise SourceError(
                    f"{where}: {key} = {col!r}: no such column (columns: {', '.join(schema.names)})"
                )
            t = schema.field(col).type
            if not ok(t):
                raise SourceError(f"{where}: {key} = {col!r} has type {t}, expected {expect}")

        need(
            "image_column",
            cfg.image_column,
            lambda t: _image_kind(t) is not None,
            "struct<bytes, path> (an Image), binary, or a path string",
        )
        need("caption_column", cfg.caption_column, _is_text, "string")
        need(
            "class_column",
            cfg.class_column,
            lambda t: pa.types.is_integer(t) or _is_text(t),
            "an integer or a string",
        )
        need(
            "id_column",
            cfg.id_column,
            lambda t: pa.types.is_integer(t) or _is_text(t),
            "an integer or a string",
        )
        need(
            "mask_column",
            cfg.mask_column,
            lambda t: _image_kind(t) in ("struct", "binary") or _is_box(t),
            "an image (struct<bytes, path> or binary) or a box list [x, y, w, h]",
        )
        return cls(
            image=cfg.image_column,
            caption=cfg.caption_column,
            cls=cfg.class_column,
            id=cfg.id_column,
            mask=cfg.mask_column,
            class_names=tuple(class_names) if class_names is not None else None,
            id_names=cfg.class_id_names,
        )

    def needed(self) -> list[str]:
        return [c for c in (self.image, self.caption, self.cls, self.id, self.mask) if c]

    def items(
        self,
        table: pa.Table | pa.RecordBatch,
        first_row: int,
        origin_of: Callable[[int], str],
        base_dirs: Sequence[Path],
    ) -> Iterator[RawItem]:
        """One item per row; `origin_of(row index)` names rows when there is no id column."""
        n = table.num_rows

        def col(name: str) -> list[Any]:
            return table.column(name).to_pylist() if name else [None] * n

        images, captions, classes, ids, masks = (
            col(self.image),
            col(self.caption),
            col(self.cls),
            col(self.id),
            col(self.mask),
        )
        for i in range(n):
            origin, error = origin_of(first_row + i), None
            if self.id:
                if ids[i] is None:
                    error = f"null value in id column {self.id!r}"
                else:
                    origin = str(ids[i])
            data, image_error = image_cell(images[i], base_dirs)
            name, class_id, class_error = class_fields(classes[i], self.class_names, self.id_names)
            error = error or image_error or class_error
            mask = masks[i]["bytes"] if isinstance(masks[i], dict) else masks[i]
            yield RawItem(origin, None if error else data, captions[i], name, class_id, error, mask)


def image_cell(value: Any, base_dirs: Sequence[Path]) -> tuple[bytes | None, str | None]:
    """(bytes, None) or (None, reason) for one image cell; a path-only cell reads that file."""
    path = None
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"]), None
        path = value.get("path")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    elif isinstance(value, str):
        path = value
    if not path:
        return None, "null image cell"
    if ".." in Path(path).parts:
        return None, f"image path {path!r} has a '..' component: refused (paths must stay inside the source folder)"
    if Path(path).is_absolute():
        # absolute paths are what `datasets` stores for a local image folder: inside it, they are read
        if not any(_inside(path, d) for d in base_dirs):
            return None, f"image path {path!r} is outside the source folder: refused"
        candidates = [Path(path)]
    else:
        candidates = [d / path for d in base_dirs]
    for c in candidates:
        if c.is_file():
            try:
                return c.read_bytes(), None
            except OSError as e:
                return None, f"image stored by path {path!r}: unreadable: {e}"
    return None, f"image stored only by path and the file is not found: {path!r}"


def _inside(path: str, folder: Path) -> bool:
    """Whether absolute `path` lies under `folder`, by name (normalised, symlinks not followed:
    a folder's own links are its owner's choice; Hugging Face caches link every file)."""
    root = os.path.normpath(os.path.abspath(folder))
    return os.path.normpath(path).startswith(root.rstrip(os.sep) + os.sep)
