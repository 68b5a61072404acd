"""The config of a real-image source: one frozen dataclass for every kind, validated at load.

Field names match the run config's `[real]` table. Keys that only one kind uses are errors when
set for another kind, so a typo'd or misplaced key never silently does nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from aigi.core.configtools import check, to_dict
from aigi.generators.base import NAME_RE
from aigi.manifests.imagebytes import DEFAULT_MAX_PIXELS

SourceKind = Literal["imagefolder", "parquet", "webdataset", "hf"]
_TABLE_KINDS = ("parquet", "hf")


@dataclass(frozen=True)
class RealSourceConfig:
    """Where real images come from and how their columns map to image rows.

    path: a folder (imagefolder, hf), a file / folder / glob of Parquet files, or a file / folder /
    brace-or-glob pattern of tar shards (webdataset).
    class_id_names: how an integer class without its own names (not a ClassLabel) gets a name:
    "imagenet" maps 0..999 to the bundled ImageNet-1k names, "none" keeps only the id.
    """

    path: str
    name: str = "real"
    source: SourceKind = "imagefolder"
    recursive: bool = True
    class_from_folder: bool = False
    unit_size: int = 256
    image_column: str = "image"
    caption_column: str = ""
    class_column: str = ""
    id_column: str = ""
    #: an object mask per image (image bytes, or a box [x, y, w, h]): inpainting with mask = "source"
    mask_column: str = ""
    split: str = "train"
    class_id_names: Literal["imagenet", "none"] = "imagenet"
    #: larger images are quarantined as decompression bombs (Pillow's own default limit)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        check(bool(self.path), "path", "required: where the real images are")
        check(bool(NAME_RE.match(self.name)), "name", f"{self.name!r} is not a valid source name")
        check(self.unit_size > 0, "unit_size", "must be > 0")
        check(self.max_pixels > 0, "max_pixels", "must be > 0")
        tables = self.source in _TABLE_KINDS
        for key in ("caption_column", "class_column", "id_column", "mask_column"):
            check(tables or not getattr(self, key), key, 'only used by source = "parquet" or "hf"')
        check(
            tables or self.image_column == "image",
            "image_column",
            'only used by source = "parquet" or "hf"',
        )
        check(bool(self.image_column), "image_column", "must name the image column")
        check(
            self.source == "imagefolder" or not self.class_from_folder,
            "class_from_folder",
            'only used by source = "imagefolder"',
        )
        check(self.source == "hf" or self.split == "train", "split", 'only used by source = "hf"')
        check(bool(self.split), "split", "must name a split")
        check(self.source != "hf" or self.recursive, "recursive", 'not used by source = "hf"')
        keys = ("image_column", "caption_column", "class_column", "id_column")
        for i, key in enumerate(keys):
            value = getattr(self, key)
            for earlier in keys[:i]:
                check(
                    not value or value != getattr(self, earlier), key, f"same column as {earlier}"
                )

    def identity(self) -> dict[str, Any]:
        """What, besides the unit listings, decides the rows a source yields. No path: the same
        data in another folder is the same source; unit_size only moves unit boundaries."""
        out = to_dict(self)
        out.pop("path")
        out.pop("unit_size")
        return out
