"""The "imagefolder" source: image files under a folder, a unit per `unit_size` files.

A unit's identity is its files' relative names and sizes: a replaced file is new input, a copied
folder is not. Files that are not images (a caption sidecar, notes) are items too, read as an
error starting with "skipped", so the stage records them instead of passing over them silently. With `class_from_folder`, the parent folder names the class exactly as
`curation.ingest.ingest_file` does (`folder_class`: ImageNet synsets and names get their id).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from aigi.curation.sources.base import RawItem, Source, SourceUnit


class ImageFolderSource(Source):
    kind = "imagefolder"

    def units(self, unit_size: int | None = None) -> list[SourceUnit]:
        from aigi.curation.ingest import list_files

        size = self._unit_size(unit_size)
        root = Path(self.config.path)
        images, skipped = list_files(root, recursive=self.config.recursive)
        entries = sorted([(rel, None) for rel in images] + [(rel, f"skipped: {why}") for rel, why in skipped])
        out = []
        for a in range(0, len(entries), size):
            chunk = entries[a : a + size]
            listing = {"files": [[rel, _size(root / rel), why] for rel, why in chunk]}
            key = f"files[{a}:{a + len(chunk)}]"
            out.append(SourceUnit(key, len(chunk), listing, (str(root), tuple(chunk))))
        return out

    def read(self, unit: SourceUnit) -> Iterator[RawItem]:
        from aigi.curation.ingest import folder_class

        root, entries = unit.payload
        for rel, skipped in entries:
            if skipped is not None:
                yield RawItem(rel, None, error=skipped)
                continue
            name, class_id = folder_class(rel) if self.config.class_from_folder else (None, None)
            try:
                data = (Path(root) / rel).read_bytes()
            except OSError as e:  # vanished or unreadable since listing
                reason = f"unreadable: {e.strerror or e}"
                yield RawItem(rel, None, class_name=name, class_id=class_id, error=reason)
                continue
            yield RawItem(rel, data, class_name=name, class_id=class_id)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # a broken link or an entry that vanished: listed, with its reason
        return -1
