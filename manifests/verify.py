"""`aigi verify`: check a run directory, or an exported dataset folder, and list every problem.

A run (`verify_run`): every Parquet file under images/, curation/, features/, detectors/,
quarantine/ and prompts/ opens, reads to its last page, carries aigi metadata, and has a schema
name and version this aigi reads; every output a stage planned (RUN/logs/plans/*.json) exists;
every image of the planned image shards decodes and its `sha256` column is the sha256 of its
bytes; image ids are unique (across the original shards; within the normalized shards; within the
perturbed ones); and the stages agree on counts: each planned hash shard holds the rows of its
image shard, splits.parquet has as many rows as duplicates.parquet keeps, and each planned feature
shard as many rows as the image shard it was computed from.

An export (`verify_export`): the `| file | sha256 |` table of DIR/README.md lists every data file
(DIR/data/**) with its sha256, and nothing else under data/; each listed file exists and hashes to
its row; each Parquet file reads; every image in it decodes (and matches a `sha256` column where
the table has one beside its `image` column).

Nothing stops at the first problem: a check that cannot run (an unreadable file) is itself one
problem, and the others go on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigi.manifests.ids import sha256_file
from aigi.manifests.imagebytes import BadImage, decode
from aigi.manifests.schema import REGISTRY
from aigi.manifests.shards import KEY_HF, ManifestError, check_shard, shard_meta

#: Folders of a run whose Parquet files are checked (models/ and inputs/ are not the run's data).
RUN_FOLDERS = ("prompts", "images", "curation", "features", "detectors", "quarantine")
FEATURE_PREFIX = "aigi.features."
IMAGES_NAME = "aigi.images"
#: Plans whose image shards are the corpus's originals: their image ids must be unique together.
ORIGINAL_STAGES = ("generate/", "aligned/", "ingest/")
BATCH_ROWS = 64


@dataclass(frozen=True)
class Problem:
    """One thing wrong: `path` relative to the folder checked (or absolute outside it), `what` says what."""

    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


def format_problems(problems: list[Problem]) -> str:
    """One line per problem, under a count; "no problems found" when there are none."""
    if not problems:
        return "no problems found"
    n = len(problems)
    lines = [f"{n} problem{'s' if n != 1 else ''}:"]
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- a run


def verify_run(run_dir: str | os.PathLike, workers: int | None = None) -> list[Problem]:
    """Every problem of the run directory `run_dir` (empty: it verifies), sorted by path."""
    root = Path(run_dir)
    if not root.is_dir():
        return [Problem(str(root), "not a directory")]
    v = _RunVerifier(root)
    v.check_files()
    v.check_plans()
    v.check_images(workers or min(8, os.cpu_count() or 1))
    v.check_counts()
    return sorted(set(v.problems), key=lambda p: (p.path, p.what))


class _RunVerifier:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []
        self.meta: dict[Path, dict[str, Any]] = {}  # readable aigi files with a known schema
        self.bad: set[Path] = set()  # files that did not read
        self.plans: list[dict[str, Any]] = []
        self.ids: dict[Path, list[str]] = {}  # image ids per checked image shard

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def add(self, path: Path, what: str) -> None:
        self.problems.append(Problem(self.rel(path), what))

    # every Parquet file: opens, reads, carries a schema this aigi reads
    def check_files(self) -> None:
        running = (self.root / ".aigi.lock").exists()  # a run is writing: its temporaries are live
        for folder in RUN_FOLDERS:
            base = self.root / folder
            if not base.is_dir():
                continue
            if not running:
                for path in sorted(base.rglob(".*.tmp")):
                    self.add(path, "partial file of an interrupted write (the stage's next run removes it)")
            for path in sorted(base.rglob("*.parquet")):
                if path.name.startswith(".") or not path.is_file():  # a write in progress
                    continue
                self.check_file(path)

    def check_file(self, path: Path) -> None:
        try:
            meta = shard_meta(path)
        except ManifestError:
            self.add(path, "no aigi metadata (schema name and version): not written by aigi")
            return
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            self.bad.add(path)
            self.add(path, f"unreadable: {_short(e)}")
            return
        name = meta["schema"]
        if name in REGISTRY:
            try:
                check_shard(path, name)
            except ManifestError as e:
                self.add(path, _strip(str(e), path))
                return
        elif name.startswith(FEATURE_PREFIX):
            what = _feature_version_problem(name[len(FEATURE_PREFIX):], meta["version"])
            if what:
                self.add(path, what)
                return
        else:
            self.add(path, f"schema {name!r} (version {meta['version']}) is not one this aigi reads")
            return
        if name != IMAGES_NAME:  # image shards are read to the end by check_images
            try:
                _read_all(path)
            except Exception as e:  # noqa: BLE001
                self.bad.add(path)
                self.add(path, f"unreadable: {_short(e)}")
                return
        self.meta[path] = meta

    # every planned output exists
    def check_plans(self) -> None:
        folder = self.root / "logs" / "plans"
        files = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if not files:
            self.add(self.root / "logs" / "plans", "no recorded plans: not a run directory, or never run")
            return
        for f in files:
            try:
                plan = json.loads(f.read_text(encoding="utf-8"))
                units = plan["units"]
                stage = plan.get("stage", f.stem.replace("__", "/"))
            except Exception as e:  # noqa: BLE001
                self.add(f, f"unreadable plan: {_short(e)}")
                continue
            outputs = []
            for u in units:
                for out in [u["output"], *u.get("also", [])]:
                    path = self.root / out
                    outputs.append(path)
                    if not path.exists():
                        self.add(path, f"missing: planned output of stage {stage} (unit {u.get('key', '?')})")
            self.plans.append({"stage": stage, "outputs": outputs})

    def planned(self, stage_prefix: str = "", exact: str | None = None) -> list[Path]:
        out = []
        for p in self.plans:
            if (exact is not None and p["stage"] == exact) or (exact is None and p["stage"].startswith(stage_prefix)):
                out += p["outputs"]
        return out

    def image_shards(self) -> dict[str, list[Path]]:
        """Planned image shards (readable, schema aigi.images), grouped for the unique-id check."""
        groups: dict[str, list[Path]] = {}
        seen: set[Path] = set()
        for p in self.plans:
            group = "originals" if p["stage"].startswith(ORIGINAL_STAGES) else p["stage"]
            for path in p["outputs"]:
                if path in seen or self.meta.get(path, {}).get("schema") != IMAGES_NAME:
                    continue
                seen.add(path)
                groups.setdefault(group, []).append(path)
        return groups

    # every image decodes and hashes to its sha256; ids unique
    def check_images(self, workers: int) -> None:
        groups = self.image_shards()
        shards = [s for g in groups.values() for s in g]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(_check_image_shard, shards))
        for shard, (ids, problems) in zip(shards, results, strict=True):
            for what in problems:
                self.add(shard, what)
            if ids is None:
                self.bad.add(shard)
            else:
                self.ids[shard] = ids
        for group, members in groups.items():
            first: dict[str, Path] = {}
            for shard in members:
                for image_id in self.ids.get(shard, []):
                    if image_id in first:
                        where = "twice in this file" if first[image_id] == shard else f"also in {self.rel(first[image_id])}"
                        self.add(shard, f"image_id {image_id} is not unique ({where}; {group})")
                    else:
                        first[image_id] = shard

    # stages agree on counts
    def check_counts(self) -> None:
        by_name: dict[tuple[str, str], Path] = {}
        for members in self.image_shards().values():
            for shard in members:
                by_name[(shard.parent.name, shard.name)] = shard
        for path in self.planned(exact="hash"):
            image = by_name.get((path.parent.name, path.name))
            if image is None or not self.readable(path) or image not in self.ids:
                continue
            got = _column(path, "image_id")
            want = self.ids[image]
            if sorted(got) != sorted(want):
                self.add(path, f"hashes {len(got)} rows, its image shard {self.rel(image)} has {len(want)}"
                         if len(got) != len(want) else
                         f"hash rows are not the image rows of {self.rel(image)} ({len(set(got) ^ set(want))} ids differ)")
        # items that failed and were not retried yet: each retry shard covers its rows and its failures
        for members in self.image_shards().values():
            failed: dict[Path, int] = {}
            for shard in members:
                n = len(self.meta.get(shard, {}).get("extra", {}).get("failed") or [])
                base = shard.with_name(shard.name.split("-retry-")[0].removesuffix(".parquet") + ".parquet")
                failed[base] = failed.get(base, 0) + n
                if "-retry-" in shard.name and shard in self.ids:
                    failed[base] = failed.get(base, 0) - len(self.ids[shard]) - n
            for base, n in failed.items():
                if n > 0:
                    self.add(base, f"{n} items of {base.parent.name} failed and are not retried yet (errors in the "
                             "shard's metadata, `failed`); re-run to retry them")
        splits = self.root / "curation" / "splits.parquet"
        dups = self.root / "curation" / "duplicates.parquet"
        if self.readable(splits) and self.readable(dups):
            kept = sum(1 for k in _column(dups, "keep") if k)
            n = _num_rows(splits)
            if n != kept:
                self.add(splits, f"{n} rows, but duplicates.parquet keeps {kept}")
        for path in self.planned("features/"):
            image = by_name.get((path.parent.name, path.name))
            if image is None or not self.readable(path) or image not in self.ids:
                continue
            n, want = _num_rows(path), len(self.ids[image])
            if n != want:
                self.add(path, f"{n} feature rows, its image shard {self.rel(image)} has {want}")

    def readable(self, path: Path) -> bool:
        return path in self.meta and path not in self.bad


def _check_image_shard(path: Path) -> tuple[list[str] | None, list[str]]:
    """(image ids or None when the file did not read, problems) of one image shard."""
    import pyarrow.parquet as pq

    ids: list[str] = []
    problems: list[str] = []
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        columns = [c for c in ("image_id", "image", "sha256", "mask") if c in names]
        row = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            cols = batch.to_pydict()
            for i in range(batch.num_rows):
                image_id = cols["image_id"][i]
                ids.append(image_id)
                problems += _image_problems(image_id, row, cols["image"][i], cols.get("sha256", [None] * batch.num_rows)[i],
                                            "sha256" in cols)
                mask = cols["mask"][i] if "mask" in cols else None
                if mask is not None and mask.get("bytes") is not None:
                    try:
                        decode(mask["bytes"], max_pixels=None, origin=image_id)
                    except BadImage as e:
                        problems.append(f"image {image_id} (row {row}): mask does not decode: {e.reason}")
                row += 1
    except Exception as e:  # noqa: BLE001
        return None, [*problems, f"unreadable: {_short(e)}"]
    return ids, problems


def _image_problems(image_id: str, row: int, image: dict | None, sha: str | None, has_sha: bool) -> list[str]:
    data = None if image is None else image.get("bytes")
    if not data:
        return [f"image {image_id} (row {row}): no image bytes"]
    out = []
    if has_sha:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha:
            out.append(f"image {image_id} (row {row}): sha256 of its bytes is {digest[:16]}..., "
                       f"the sha256 column says {str(sha)[:16]}...")
    try:
        decode(data, max_pixels=None, origin=image_id)
    except BadImage as e:
        out.append(f"image {image_id} (row {row}): does not decode: {e.reason}")
    return out


def _feature_version_problem(name: str, version: int) -> str | None:
    from aigi.features.registry import get, names

    if name not in names():
        return f"feature {name!r} is not one this aigi has (features: {', '.join(names())})"
    try:
        want = get(name).version
    except ImportError:  # this environment lacks the feature's dependencies: no version to compare
        return None
    if version != want:
        return f"aigi.features.{name} version {version}, this aigi reads version {want}"
    return None


def _read_all(path: Path) -> None:
    import pyarrow.parquet as pq

    for _ in pq.ParquetFile(path).iter_batches(batch_size=4096):
        pass


def _column(path: Path, name: str) -> list[Any]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=[name]).column(name).to_pylist()


def _num_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _strip(message: str, path: Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# ------------------------------------------------------------------------------------ an export

CARD = "README.md"


def parse_card_table(text: str) -> tuple[dict[str, str], list[str]]:
    """The `| file | sha256 |` table of a dataset card: ({file: sha256}, problems with it)."""
    lines = text.splitlines()
    rows: dict[str, str] = {}
    problems: list[str] = []
    start = None
    for i, line in enumerate(lines):
        if [c.lower() for c in _cells(line)] == ["file", "sha256"]:
            start = i + 1
            break
    if start is None:
        return rows, ["no `| file | sha256 |` table"]
    if start < len(lines) and set("".join(_cells(lines[start]))) <= set("-: "):
        start += 1  # the separator row
    for line in lines[start:]:
        if not line.strip().startswith("|"):
            break
        cells = _cells(line)
        if len(cells) != 2 or not cells[0]:
            problems.append(f"malformed row in the file table: {line.strip()!r}")
            continue
        name, sha = cells[0].strip("`"), cells[1].strip("`").lower()
        if name in rows:
            problems.append(f"{name} is listed twice in the file table")
        rows[name] = sha
    return rows, problems


def _cells(line: str) -> list[str]:
    s = line.strip()
    if not s.startswith("|") or not s.endswith("|") or len(s) < 2:
        return []
    return [c.strip() for c in s[1:-1].split("|")]


def verify_export(export_dir: str | os.PathLike) -> list[Problem]:
    """Every problem of an export folder (DIR/data/**, listed with its sha256 in DIR/README.md)."""
    root = Path(export_dir)
    if not root.is_dir():
        return [Problem(str(root), "not a directory")]
    problems: list[Problem] = []
    card = root / CARD
    listed: dict[str, str] = {}
    if not card.is_file():
        problems.append(Problem(CARD, "missing: the dataset card lists the data files and their sha256"))
    else:
        listed, card_problems = parse_card_table(card.read_text(encoding="utf-8"))
        problems += [Problem(CARD, what) for what in card_problems]
    data = root / "data"
    present = sorted(
        p.relative_to(root).as_posix() for p in data.rglob("*") if p.is_file() and not p.name.startswith(".")
    ) if data.is_dir() else []
    if not present:
        problems.append(Problem("data", "no data files"))
    for rel, sha in listed.items():
        path = root / rel
        if not _inside(path, root):
            problems.append(Problem(rel, "listed in README.md outside the export folder"))
        elif not path.is_file():
            problems.append(Problem(rel, "listed in README.md but missing"))
        else:
            digest = sha256_file(path)
            if digest != sha:
                problems.append(Problem(rel, f"sha256 is {digest}, README.md says {sha}"))
    for rel in present:
        if rel not in listed:
            problems.append(Problem(rel, "data file not listed in README.md"))
        if rel.endswith(".parquet"):
            problems += [Problem(rel, what) for what in _check_export_parquet(root / rel)]
    return sorted(set(problems), key=lambda p: (p.path, p.what))


def _check_export_parquet(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    problems: list[str] = []
    try:
        pf = pq.ParquetFile(path)
        image_cols = _image_columns(pf.schema_arrow)
        names = pf.schema_arrow.names
        id_col = "image_id" if "image_id" in names else None
        has_sha = "image" in image_cols and "sha256" in names
        row = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            cols = batch.to_pydict()
            for i in range(batch.num_rows):
                label = cols[id_col][i] if id_col else f"#{row}"
                for col in image_cols:
                    value = cols[col][i]
                    if col == "image":
                        problems += _image_problems(label, row, value, cols["sha256"][i] if has_sha else None, has_sha)
                    elif value is not None and value.get("bytes") is not None:
                        try:
                            decode(value["bytes"], max_pixels=None, origin=str(label))
                        except BadImage as e:
                            problems.append(f"image {label} (row {row}): {col} does not decode: {e.reason}")
                row += 1
    except Exception as e:  # noqa: BLE001
        problems.append(f"unreadable: {_short(e)}")
    return problems


def _image_columns(schema: Any) -> list[str]:
    """Columns marked as Hugging Face `Image` features; else every struct<bytes, path> column."""
    md = schema.metadata or {}
    if KEY_HF in md:
        try:
            info = json.loads(md[KEY_HF])
            feats = info.get("info", info).get("features", {})
            marked = [n for n, f in feats.items() if isinstance(f, dict) and f.get("_type") == "Image"]
            if marked:
                return [n for n in marked if n in schema.names]
        except (ValueError, AttributeError):
            pass
    import pyarrow as pa

    return [
        f.name for f in schema
        if pa.types.is_struct(f.type) and {c.name for c in f.type} >= {"bytes", "path"}
    ]


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def export_card_rows(files: Iterable[tuple[str, str]]) -> str:
    """The `| file | sha256 |` table for (relative path, sha256) pairs, as verify_export reads it."""
    lines = ["| file | sha256 |", "|---|---|"]
    lines += [f"| {name} | {sha} |" for name, sha in files]
    return "\n".join(lines) + "\n"
