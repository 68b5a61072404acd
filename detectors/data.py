"""What a detector trains on: the cached features of a set of images, read lazily from the store.

A `FeatureSet` names its images (ids, labels 1 = generated, sources) and the columns it can
serve, each as "<feature>.<column>" (e.g. "lare.lare", "clip_rn50.layer3"). Small heads take a
column whole (`array`); heads that train by gradient stream it (`batches`): shards are visited in
a seeded order a few at a time and rows shuffled within that buffer, so memory stays bounded
whatever the corpus size. Tests and protocols build sets from arrays (`from_arrays`) or cut them
(`subset`).

Heads that train on the images themselves (EGRE end to end) read the column "image" (`IMAGE`, no
dot): `fs.with_images(curated_shards)` adds it from the run's curated IMAGES shards (their
struct<bytes, path> "image" column, any number of shards, in any order; every id of the set must be
in one of them). Such shards store compressed bytes, which are read per streaming buffer and decoded
with `aigi.manifests.imagebytes.decode_rgb` one batch at a time, so `batches` yields, and `array`
returns, a (B,) object array of RGB `PIL.Image`s of the images' own sizes. In memory,
`from_arrays({"image": uint8 (N, H, W, 3)})` is served as given (uint8 arrays).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Shards read at a time when streaming: rows are shuffled within them.
BUFFER_SHARDS = 8
#: The column of the images themselves (served from IMAGES shards by `with_images`).
IMAGE = "image"


@dataclass
class FeatureSet:
    ids: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64, 1 = generated
    sources: np.ndarray  # (N,) str: generator or real source name
    #: column -> the shards holding it, in order; or, in memory, column -> (N, *shape) array
    shards: dict[str, list[Path]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    #: rows of this set within each shard: shard -> (rows in the shard, positions in this set)
    _where: dict[Path, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids).astype(str)
        self.labels = np.asarray(self.labels).astype(np.int64)
        self.sources = np.asarray(self.sources).astype(str)
        if not len(self.ids) == len(self.labels) == len(self.sources):
            raise ValueError("FeatureSet: ids, labels and sources must have equal length")
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError("FeatureSet: labels must be 0 (real) or 1 (generated)")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def columns(self) -> list[str]:
        return sorted({*self.shards, *self.arrays})

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], labels: np.ndarray, ids: np.ndarray | None = None,
        sources: np.ndarray | None = None,
    ) -> FeatureSet:
        n = len(labels)
        for name, arr in arrays.items():
            if len(arr) != n:
                raise ValueError(f"FeatureSet: column {name!r} has {len(arr)} rows, labels {n}")
        ids = np.array([f"img{i}" for i in range(n)]) if ids is None else ids
        sources = np.where(np.asarray(labels) == 1, "generated", "real") if sources is None else sources
        return cls(ids, labels, sources, arrays=dict(arrays))

    @classmethod
    def from_store(
        cls, shards: dict[str, list[Path]], ids: list[str], labels: np.ndarray, sources: np.ndarray
    ) -> FeatureSet:
        """The images `ids` (in that order) of feature stores whose shards are `shards[column]`;
        every id must be in every column's shards (a missing one is an error naming it)."""
        from aigi.manifests.shards import read_table

        fs = cls(np.asarray(ids), labels, sources, shards={k: [Path(p) for p in v] for k, v in shards.items()})
        position = {i: k for k, i in enumerate(fs.ids.tolist())}
        for column, paths in fs.shards.items():
            seen = np.zeros(len(fs), dtype=bool)
            for p in paths:
                shard_ids = read_table(p, columns=["image_id"]).column("image_id").to_pylist()
                rows = [(r, position[i]) for r, i in enumerate(shard_ids) if i in position]
                if rows:
                    r, pos = (np.array(v, dtype=np.int64) for v in zip(*rows, strict=True))
                    fs._where.setdefault(p, (r, pos))
                    seen[pos] = True
            if not seen.all():
                missing = fs.ids[~seen][0]
                raise RuntimeError(f"{(~seen).sum()} images have no cached {column} (e.g. {missing})")
        return fs

    def with_images(self, shards: list[Path]) -> FeatureSet:
        """This set with the column `IMAGE` served from IMAGES shards (e.g. the run's curated
        shards, `curated_shards(ctx)`): records which rows of which shard hold each id (the first
        shard listed wins for an id stored twice); an id in none of them is an error naming it."""
        from aigi.manifests.schema import IMAGES
        from aigi.manifests.shards import read_shard

        paths = [Path(p) for p in shards]
        out = FeatureSet(self.ids, self.labels, self.sources, shards={**self.shards, IMAGE: paths},
                         arrays={k: v for k, v in self.arrays.items() if k != IMAGE})
        out._where = {p: w for p, w in self._where.items() if p not in paths}
        position = {i: k for k, i in enumerate(out.ids.tolist())}
        seen = np.zeros(len(out), dtype=bool)
        for p in paths:
            shard_ids = read_shard(p, IMAGES, columns=["image_id"]).column("image_id").to_pylist()
            rows = [(r, position[i]) for r, i in enumerate(shard_ids) if i in position and not seen[position[i]]]
            if rows:
                r, pos = (np.array(v, dtype=np.int64) for v in zip(*rows, strict=True))
                out._where[p] = (r, pos)
                seen[pos] = True
        if not seen.all():
            raise RuntimeError(f"{(~seen).sum()} images are in none of the {len(paths)} image shards (e.g. {out.ids[~seen][0]})")
        return out

    def subset(self, mask: np.ndarray) -> FeatureSet:
        """The rows where `mask` is true (a boolean mask or integer positions), in order."""
        pos = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask, dtype=np.int64)
        out = FeatureSet(self.ids[pos], self.labels[pos], self.sources[pos], shards=dict(self.shards),
                         arrays={k: v[pos] for k, v in self.arrays.items()})
        new = np.full(len(self), -1, dtype=np.int64)
        new[pos] = np.arange(len(pos))
        for p, (rows, old) in self._where.items():
            keep = new[old] >= 0
            if keep.any():
                out._where[p] = (rows[keep], new[old][keep])
        return out

    def array(self, column: str) -> np.ndarray:
        """The whole column, (N, *shape), in this set's order (loads it into memory)."""
        if column in self.arrays:
            return self.arrays[column]
        self._check(column)
        parts, order = [], []
        for p in self.shards[column]:
            if p in self._where:
                rows, pos = self._where[p]
                parts.append(_read_rows(p, column, rows))
                order.append(pos)
        data = np.concatenate(parts)
        out = np.empty_like(data)
        out[np.concatenate(order)] = data
        return _decode(out) if column == IMAGE else out

    def batches(
        self, columns: list[str], batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
        """(column -> (B, *shape), labels (B,), positions (B,)) batches over the whole set.

        Without `shuffle`, rows come in this set's order. With it, shards are visited in a seeded
        order `BUFFER_SHARDS` at a time and rows shuffled within that buffer (the same seed gives
        the same batches)."""
        for c in columns:
            self._check(c)
        rng = np.random.default_rng(seed)
        if all(c in self.arrays for c in columns):
            order = rng.permutation(len(self)) if shuffle else np.arange(len(self))
            for lo in range(0, len(order), batch_size):
                pos = order[lo : lo + batch_size]
                yield {c: self.arrays[c][pos] for c in columns}, self.labels[pos], pos
            return
        # Streamed: grouped by the shards of the first column; other columns are read for the
        # same positions (a feature group writes its features' shards for the same images).
        lead = next(c for c in columns if c not in self.arrays)
        shards = [p for p in self.shards[lead] if p in self._where]
        if shuffle:
            shards = [shards[i] for i in rng.permutation(len(shards))]
        else:
            shards = sorted(shards, key=lambda p: int(self._where[p][1].min()))
        for lo in range(0, len(shards), BUFFER_SHARDS):
            pos = np.sort(np.concatenate([self._where[p][1] for p in shards[lo : lo + BUFFER_SHARDS]]))
            loaded = {c: self._rows(c, pos) for c in columns}  # each shard read once per buffer
            local = rng.permutation(len(pos)) if shuffle else np.arange(len(pos))
            for blo in range(0, len(local), batch_size):
                take = local[blo : blo + batch_size]
                yield (
                    {c: _decode(v[take]) if c == IMAGE and c in self.shards else v[take] for c, v in loaded.items()},
                    self.labels[pos[take]],
                    pos[take],
                )

    def _rows(self, column: str, positions: np.ndarray) -> np.ndarray:
        if column in self.arrays:
            return self.arrays[column][positions]
        want = {int(q): k for k, q in enumerate(positions)}
        out: np.ndarray | None = None
        for p in self.shards[column]:
            if p not in self._where:
                continue
            rows, pos = self._where[p]
            hit = np.isin(pos, positions)
            if not hit.any():
                continue
            data = _read_rows(p, column, rows[hit])
            if out is None:
                out = np.empty((len(positions), *data.shape[1:]), dtype=data.dtype)
            out[[want[int(q)] for q in pos[hit]]] = data
        assert out is not None
        return out

    def _check(self, column: str) -> None:
        if column not in self.arrays and column not in self.shards:
            raise KeyError(f"FeatureSet: no column {column!r} (has {self.columns})")


def _read_rows(path: Path, column: str, rows: np.ndarray) -> np.ndarray:
    """Rows of one column of a feature shard as (len(rows), *shape) (store column "<f>.<c>"); for
    `IMAGE`, the stored bytes of an IMAGES shard's rows as a (len(rows),) object array."""
    import pyarrow as pa

    if column == IMAGE:
        from aigi.manifests.schema import IMAGES
        from aigi.manifests.shards import read_shard

        images = read_shard(path, IMAGES, columns=[IMAGE]).column(IMAGE).take(pa.array(rows)).combine_chunks()
        out = np.empty(len(rows), dtype=object)
        out[:] = images.field("bytes").to_pylist()
        return out

    from aigi.features.store import feature_meta
    from aigi.manifests.shards import read_shard

    name = column.split(".", 1)[1] if "." in column else column
    meta = feature_meta(path)
    shape, dtype = meta["shapes"][name], meta["dtypes"][name]
    values = read_shard(path, meta["schema"], columns=[name]).column(name).take(pa.array(rows)).combine_chunks()
    flat = (values.flatten() if shape else values).to_numpy(zero_copy_only=False)
    return flat.astype(np.dtype(dtype), copy=False).reshape(len(rows), *shape)


def _decode(data: np.ndarray) -> np.ndarray:
    """Stored image bytes -> (N,) object array of RGB PIL images (the pipeline's one decoder)."""
    from aigi.manifests.imagebytes import decode_rgb

    out = np.empty(len(data), dtype=object)
    out[:] = [decode_rgb(b) for b in data]
    return out
