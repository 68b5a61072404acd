"""`aigi export RUN --out DIR`: a run's curated corpus as a Hugging Face dataset folder.

Layout of DIR::

    README.md                                   dataset card (YAML front matter + prose and tables)
    data/<split>/<source>-NNNNN.parquet         one row per image; split = train / val / test
                                                (and `dropped` with include_dropped)

Rows are the curated images: the normalized bytes when the run normalizes (the originals
otherwise), only the rows duplicates.parquet keeps unless `include_dropped`. Each file carries the
Hugging Face features in its "huggingface" key (`image` and `mask` are `Image`, `label` is a
`ClassLabel` ["real", "generated"]), so `datasets.load_dataset(DIR)` returns PIL images; the card's
`configs` give a `default` config (every source) and one config per source. Row groups are cut by
bytes (at most ~128 MB), the page index is written, and every column but the image bytes is zstd.
The folder is written beside DIR and renamed into place, so DIR is either the old export or the
new one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aigi.manifests.ids import fingerprint, sha256_file
from aigi.manifests.rundir import RunDir
from aigi.manifests.schema import (
    DUPLICATES,
    IMAGES,
    NORMALIZE_PLAN,
    PAIRS,
    SPLITS,
    Schema,
    _hf_dtype,
)
from aigi.manifests.shards import (
    KEY_EXTRA,
    KEY_HF,
    KEY_PRODUCER,
    KEY_SCHEMA,
    KEY_VERSION,
    _leaf_paths,
    read_shard,
)

EXPORT_VERSION = 1
LABEL_NAMES = ["real", "generated"]
SPLIT_ORDER = ("train", "val", "test")
DROPPED_SPLIT = "dropped"  # with include_dropped: rows the dedupe dropped (they have no split)
ROW_GROUP_BYTES = 128 * 1024 * 1024
FILE_BYTES = 512 * 1024 * 1024
CARD_MARKER = "<!-- aigi export -->"

# IMAGES columns, then the curation columns; label becomes the ClassLabel's int64.
CURATION_FIELDS = [
    ("dup_group", pa.string()),
    ("keep", pa.bool_()),
    ("drop_reason", pa.string()),
    ("pair_id", pa.string()),
    ("pair_by", pa.string()),
    ("split_group", pa.string()),
    ("split", pa.string()),
]
EXPORT = Schema(
    name="aigi.export",
    version=EXPORT_VERSION,
    arrow=pa.schema(
        [pa.field(f.name, pa.int64() if f.name == "label" else f.type) for f in IMAGES.arrow]
        + [pa.field(n, t) for n, t in CURATION_FIELDS]
    ),
    image_columns=IMAGES.image_columns,
    uncompressed=("image.bytes", "mask.bytes"),
)


def hf_features() -> dict[str, Any]:
    """The `datasets` Features of an exported row, as `Features.to_dict()` spells them."""
    out: dict[str, Any] = {}
    for f in EXPORT.arrow:
        if f.name in EXPORT.image_columns:
            out[f.name] = {"_type": "Image"}
        elif f.name == "label":
            out[f.name] = {"names": list(LABEL_NAMES), "_type": "ClassLabel"}
        else:
            out[f.name] = {"dtype": _hf_dtype(f.type), "_type": "Value"}
    return out


def _card_features() -> list[dict[str, Any]]:
    """`dataset_info.features` of the card's YAML."""
    out: list[dict[str, Any]] = []
    for f in EXPORT.arrow:
        if f.name in EXPORT.image_columns:
            out.append({"name": f.name, "dtype": "image"})
        elif f.name == "label":
            out.append({"name": f.name, "dtype": {"class_label": {"names": {str(i): n for i, n in enumerate(LABEL_NAMES)}}}})
        else:
            out.append({"name": f.name, "dtype": _hf_dtype(f.type)})
    return out


@dataclass
class _FileInfo:
    path: str  # relative to the export folder
    split: str
    source: str
    rows: int = 0
    row_groups: int = 0
    size: int = 0
    nbytes: int = 0  # the rows' Arrow size, as `datasets` counts a split's num_bytes
    sha256: str = ""


@dataclass
class _Writer:
    """Files of one (split, source): row groups cut at `group_bytes`, files at `file_bytes`."""

    root: Path
    split: str
    source: str
    meta: dict[bytes, bytes]
    group_bytes: int
    file_bytes: int
    files: list[_FileInfo] = field(default_factory=list)
    _pending: list[pa.Table] = field(default_factory=list)
    _pending_bytes: int = 0
    _writer: pq.ParquetWriter | None = None
    _file_written: int = 0

    def add(self, table: pa.Table, row_bytes: list[int]) -> None:
        start = 0
        for i, b in enumerate(row_bytes):
            if self._pending_bytes and self._pending_bytes + b > self.group_bytes:
                self._pending.append(table.slice(start, i - start))
                start = i
                self._flush()
            self._pending_bytes += b
        if start < table.num_rows:
            self._pending.append(table.slice(start))

    def _open(self) -> None:
        rel = f"data/{self.split}/{self.source}-{len(self.files):05d}.parquet"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        compression = {c: "zstd" for c in _leaf_paths(EXPORT.arrow)}
        compression.update({c: "NONE" for c in EXPORT.uncompressed})
        self._writer = pq.ParquetWriter(path, EXPORT.arrow.with_metadata(self.meta),
                                        compression=compression, write_page_index=True)
        self.files.append(_FileInfo(rel, self.split, self.source))
        self._file_written = 0

    def _flush(self) -> None:
        table = pa.concat_tables(self._pending).combine_chunks() if self._pending else None
        self._pending, n_bytes, self._pending_bytes = [], self._pending_bytes, 0
        if table is None or table.num_rows == 0:
            return
        if self._writer is not None and self._file_written and self._file_written + n_bytes > self.file_bytes:
            self._close_file()
        if self._writer is None:
            self._open()
        assert self._writer is not None
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._file_written += n_bytes
        info = self.files[-1]
        info.rows += table.num_rows
        info.row_groups += 1
        info.nbytes += table.nbytes

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        self._flush()
        self._close_file()


def _row_bytes(table: pa.Table) -> list[int]:
    """Approximate stored size of each row: its image and mask bytes plus a little metadata."""
    sizes = [256] * table.num_rows
    for col in EXPORT.image_columns:
        b = pc.binary_length(pc.struct_field(table.column(col), "bytes")).fill_null(0).to_pylist()
        sizes = [s + n for s, n in zip(sizes, b, strict=True)]
    return sizes


def _lookup(keys: pa.ChunkedArray | pa.Array, table: pa.Table, column: str) -> pa.Array:
    where = pc.index_in(keys, value_set=table.column("image_id"))
    return table.column(column).take(where)


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, include_dropped: bool = False,
               *, row_group_bytes: int = ROW_GROUP_BYTES, file_bytes: int = FILE_BYTES) -> Path:
    """Write the run's curated corpus to `out_dir` as a Hugging Face dataset folder; return it.

    `out_dir` may not exist, be empty, or hold an earlier export (it is then replaced); anything
    else is refused."""
    from aigi.pipeline.stage import RunContext
    from aigi.pipeline.stages.common import curated_shards, normalizing

    rd = RunDir(Path(run_dir))
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not _is_export(out):
        raise FileExistsError(f"{out}: exists and is not an aigi export; choose an empty or new folder")
    config, run_info = _load_config(rd)
    ctx = RunContext(config, rd)
    normalized = normalizing(config)
    shards = curated_shards(ctx)
    cur = rd.curation
    dups = read_shard(cur / "duplicates.parquet", DUPLICATES)

    producer = fingerprint(["export", EXPORT_VERSION, include_dropped, run_info.get("config_fingerprint"),
                            [str(s.relative_to(rd.root)) for s in shards]])
    meta = {
        KEY_SCHEMA: EXPORT.name.encode(),
        KEY_VERSION: str(EXPORT.version).encode(),
        KEY_PRODUCER: producer.encode(),
        KEY_EXTRA: json.dumps({"normalized": normalized, "include_dropped": include_dropped}).encode(),
        KEY_HF: json.dumps({"info": {"features": hf_features()}}).encode(),
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        writers: dict[tuple[str, str], _Writer] = {}
        exported_ids: list[str] = []
        revisions: dict[str, set[str]] = defaultdict(set)
        for rows in export_rows(run_dir, include_dropped):
            exported_ids += rows.column("image_id").to_pylist()
            for src, rev in zip(rows.column("source").to_pylist(), rows.column("revision").to_pylist(), strict=True):
                if rev:
                    revisions[src].add(rev)
            for (s, src), idx in _groups(rows).items():
                part = rows.take(pa.array(idx, pa.int64()))
                w = writers.get((s, src))
                if w is None:
                    # close the previous source's writers: one source's buffers in memory at once
                    for key in [k for k in writers if k[1] != src]:
                        writers[key].close()
                    w = writers[(s, src)] = _Writer(tmp, s, src, meta, row_group_bytes, file_bytes)
                w.add(part, _row_bytes(part))
        for w in writers.values():
            w.close()
        files = [f for w in writers.values() for f in w.files]
        for f in files:
            p = tmp / f.path
            f.size = p.stat().st_size
            f.sha256 = sha256_file(p)
        files.sort(key=lambda f: (_split_rank(f.split), f.source, f.path))
        card = _card(rd, config, run_info, files, dups, set(exported_ids), normalized, include_dropped,
                     revisions)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _load_config(rd: RunDir) -> tuple[Any, dict[str, Any]]:
    from aigi.pipeline.config import load_run_config

    return load_run_config(rd.root)


def export_rows(run_dir: str | os.PathLike, include_dropped: bool = False) -> Iterable[pa.Table]:
    """The rows an export writes, one table (EXPORT schema) per curated shard, grouped by source:
    the curated images (normalized when the run normalizes) with their curation columns, only the
    rows the dedupe keeps unless `include_dropped` (those get split `dropped`)."""
    from aigi.pipeline.stage import RunContext
    from aigi.pipeline.stages.common import curated_shards

    rd = RunDir(Path(run_dir))
    config, _ = _load_config(rd)
    cur = rd.curation
    dups = read_shard(cur / "duplicates.parquet", DUPLICATES)
    pairs = read_shard(cur / "pairs.parquet", PAIRS, columns=["image_id", "pair_id", "pair_by"])
    splits = read_shard(cur / "splits.parquet", SPLITS, columns=["image_id", "group", "split"])
    for shard in _by_source(curated_shards(RunContext(config, rd))):
        images = read_shard(shard, IMAGES)
        ids = images.column("image_id")
        keep = _lookup(ids, dups, "keep").fill_null(False)
        split = _lookup(ids, splits, "split")
        if include_dropped:
            split = pc.if_else(pc.invert(keep), pa.scalar(DROPPED_SPLIT), split)
        rows = images.append_column("dup_group", _lookup(ids, dups, "dup_group"))
        rows = rows.append_column("keep", keep)
        rows = rows.append_column("drop_reason", _lookup(ids, dups, "drop_reason"))
        rows = rows.append_column("pair_id", _lookup(ids, pairs, "pair_id"))
        rows = rows.append_column("pair_by", _lookup(ids, pairs, "pair_by"))
        rows = rows.append_column("split_group", _lookup(ids, splits, "group"))
        rows = rows.append_column("split", split)
        # a row without a split is a dropped one (or, with include_dropped, one the split left out)
        rows = rows.filter(pc.is_valid(rows.column("split")))
        if not include_dropped:
            rows = rows.filter(rows.column("keep"))
        yield rows.select(EXPORT.arrow.names).cast(EXPORT.arrow)


def _is_export(path: Path) -> bool:
    card = path / "README.md"
    return card.is_file() and CARD_MARKER in card.read_text(encoding="utf-8", errors="replace")


def _by_source(shards: list[Path]) -> list[Path]:
    """Shards grouped by source folder (stable), so a source's writers can close before the next."""
    order: dict[str, int] = {}
    for s in shards:
        order.setdefault(s.parent.name, len(order))
    return sorted(shards, key=lambda s: order[s.parent.name])


def _groups(rows: pa.Table) -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(rows.column("split").to_pylist(), rows.column("source").to_pylist(), strict=True)):
        out[key].append(i)
    return dict(sorted(out.items(), key=lambda kv: (kv[0][1], _split_rank(kv[0][0]))))


def _split_rank(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


# ---------------------------------------------------------------- the dataset card


def _table(header: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        if v is None or v == "":
            return "–"
        if isinstance(v, float):
            return f"{v:g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return out


def _config_name(source: str, taken: set[str]) -> str:
    name = source if source != "default" else "source-default"
    while name in taken:
        name += "_"
    return name


def _card(rd: RunDir, config: Any, run_info: dict[str, Any], files: list[_FileInfo], dups: pa.Table,
          exported: set[str], normalized: bool, include_dropped: bool,
          revisions: dict[str, set[str]]) -> str:
    import yaml

    from aigi.core.configtools import to_dict

    splits = sorted({f.split for f in files}, key=_split_rank)
    sources = list(dict.fromkeys([g.name for g in config.generators] + [r.name for r in config.reals]))
    sources += sorted({f.source for f in files} - set(sources))
    counts: Counter[tuple[str, str]] = Counter()
    for f in files:
        counts[(f.source, f.split)] += f.rows

    configs: list[dict[str, Any]] = [{
        "config_name": "default", "default": True,
        "data_files": [{"split": s, "path": f"data/{s}/*.parquet"} for s in splits],
    }]
    taken = {"default"}
    for src in sources:
        have = [s for s in splits if counts[(src, s)]]
        if not have:
            continue
        name = _config_name(src, taken)
        taken.add(name)
        # the five-digit class keeps `a` from selecting the files of a source named `a-b`
        configs.append({"config_name": name, "data_files": [
            {"split": s, "path": f"data/{s}/{src}-[0-9][0-9][0-9][0-9][0-9].parquet"} for s in have]})

    gens = run_info.get("config", {}).get("generators") or [to_dict(g) for g in config.generators]
    licenses = {g["name"]: g.get("license", "") for g in gens}
    distinct = {v for v in licenses.values() if v}
    front: dict[str, Any] = {
        "license": distinct.pop() if len(distinct) == 1 and all(licenses.values()) else "other",
        "task_categories": ["image-classification"],
        "tags": ["ai-generated-image-detection", "aigi"],
        "configs": configs,
        "dataset_info": {
            "features": _card_features(),
            "splits": [{"name": s, "num_bytes": sum(f.nbytes for f in files if f.split == s),
                        "num_examples": sum(f.rows for f in files if f.split == s)} for s in splits],
            "download_size": sum(f.size for f in files),
            "dataset_size": sum(f.nbytes for f in files),
        },
    }
    out = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "", CARD_MARKER, ""]
    title = rd.root.resolve().name
    n_rows = sum(f.rows for f in files)
    out += [f"# {title}: real and generated images", "",
            f"Exported by `aigi export` from the run `{title}` (config fingerprint "
            f"`{run_info.get('config_fingerprint', 'unknown')}`): {n_rows} images, one row each, with "
            "`label` 0 = real, 1 = generated (a `ClassLabel`), the image (a `datasets` `Image`), its "
            "provenance (generator model, revision, pipeline, scheduler, steps, guidance, seed, dtype, "
            "prompt, class, origin, aligned parent and mode) and its curation (`dup_group`, "
            "`pair_id`/`pair_by`, `split_group`, `split`).", ""]
    out += ["```python", "from datasets import load_dataset",
            'ds = load_dataset("path/to/this/folder")            # every source',
            f'ds = load_dataset("path/to/this/folder", "{configs[-1]["config_name"]}")  # one source\'s rows',
            "```", ""]
    if include_dropped:
        out += [f"Rows the deduplication dropped are included, in the split `{DROPPED_SPLIT}` "
                "(`keep` is false and `drop_reason` says why).", ""]
    else:
        out += ["Only the rows the deduplication kept are included.", ""]

    out += ["## Counts per source and split", ""]
    out += _table(["source", "label", *splits, "total"],
                  [[s, _label_of(s, config), *[counts[(s, sp)] for sp in splits],
                    sum(counts[(s, sp)] for sp in splits)] for s in sources])
    out += ["", "## Generators", ""]
    keys = ["family", "model", "revision", "mode", "steps", "guidance", "size", "scheduler", "dtype",
            "images_per_prompt", "release_date"]
    rows = []
    for g in gens:
        rec = dict(g)
        if not rec.get("revision"):  # the resolved commit or weights hash its rows record
            rec["revision"] = ", ".join(sorted(revisions.get(g["name"], ())))
        rows.append([g["name"], *[_short(rec.get(k)) for k in keys]])
    out += _table(["generator", *keys], rows) if rows else ["No generators."]
    out += ["", "Per-image values actually used (drawn per image when a setting is a list or a range) "
            "are in each row's `steps`, `guidance`, `scheduler`, `seed` columns.", "", "### Licenses", ""]
    for name, lic in licenses.items():
        out.append(f"- **{name}**: {lic or 'not recorded in the run config; check the model card'}")
    if config.reals:
        out += ["", "Real images keep the license of their source: " + ", ".join(
            f"`{r.name}` ({r.source}: {Path(r.path).name})" for r in config.reals) + "."]

    out += ["", "## Image bytes and normalization", ""]
    policy = to_dict(config.curation.normalize)
    if normalized:
        out += ["The images are the **normalized** bytes (`curation/normalized/` of the run): the same "
                "codec and size treatment was applied to real and generated images, so format does not "
                "give the label away. Policy: `" + json.dumps(policy, sort_keys=True) + "`.", ""]
        plan_path = rd.curation / "normalize_plan.parquet"
        if plan_path.exists():
            plan = read_shard(plan_path, NORMALIZE_PLAN, columns=["image_id", "policy", "encode", "to_format"])
            c: Counter[tuple[str, bool, str]] = Counter()
            for r in plan.to_pylist():
                if r["image_id"] in exported:
                    c[(r["policy"], r["encode"], r["to_format"])] += 1
            out += _table(["policy", "re-encoded", "to format", "images"],
                          [[p, "yes" if e else "no", t, n] for (p, e, t), n in sorted(c.items(), key=str)])
    else:
        out += ["The images are the **original** bytes as generated (PNG) or ingested: the run did not "
                "normalize (policy `" + json.dumps(policy, sort_keys=True) + "`). Codec and size may "
                "differ between real and generated images; see the bias audit below."]

    out += ["", "## Bias audit (format-only classifier)", ""]
    audit = rd.curation / "bias_audit.md"
    table = _auc_table(audit.read_text(encoding="utf-8")) if audit.exists() else []
    if table:
        out += ["AUC of a classifier that sees only codec, JPEG quality, chroma subsampling, width and "
                "height (0.5: the format says nothing about the label; 1.0: it gives it away). From the "
                "run's `curation/bias_audit.md`.", "", *table]
    else:
        out += ["The run has no bias audit (`curation/bias_audit.md`)."]

    out += ["", "## Deduplication", ""]
    d = dups.select(["image_id", "keep", "drop_reason"]).to_pylist()
    kept = sum(1 for r in d if r["keep"])
    reasons = Counter((r["drop_reason"] or "unknown").split(":")[0] for r in d if not r["keep"])
    out += [f"{len(d)} images hashed; {kept} kept, {len(d) - kept} dropped "
            f"({'included here in the `dropped` split' if include_dropped else 'not included here'}). "
            "Near duplicates share `dup_group`.", ""]
    out += _table(["drop reason", "images"], sorted(reasons.items())) if reasons else ["Nothing was dropped."]

    out += ["", "## Files", ""]
    out += _table(["file", "split", "source", "rows", "row groups", "bytes"],
                  [[f.path, f.split, f.source, f.rows, f.row_groups, f.size] for f in files])
    out += ["", "### sha256", "", "`aigi verify` checks these (`sha256sum data/*/*.parquet` does too).", ""]
    out += _table(["file", "sha256"], [[f.path, f.sha256] for f in files])
    return "\n".join(out) + "\n"


def _label_of(source: str, config: Any) -> str:
    if source in {g.name for g in config.generators}:
        return "generated"
    if source in {r.name for r in config.reals}:
        return "real"
    return "?"


def _short(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return "×".join(str(x) for x in v) if all(isinstance(x, int) for x in v) else ", ".join(map(str, v))
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


def _auc_table(markdown: str) -> list[str]:
    """The format-only AUC table of a bias_audit.md, as it is there."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| format-only AUC |"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            return lines[i:j]
    return []


def card_counts(card: str) -> dict[tuple[str, str], int]:
    """(source, split) → rows, read back from a card's counts table (tests, `aigi verify`)."""
    rows = _first_table(card.split("## Counts per source and split", 1)[1])
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    splits = header[2:-1]
    out = {}
    for ln in rows[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        for sp, n in zip(splits, cells[2:-1], strict=True):
            if int(n):
                out[(cells[0], sp)] = int(n)
    return out


def card_files(card: str) -> dict[str, str]:
    """file path → sha256, read back from a card's files table."""
    out = {}
    for ln in _first_table(card.split("### sha256", 1)[1])[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        out[cells[0].strip("`")] = cells[-1].strip("`")
    return out


def _first_table(text: str) -> list[str]:
    """The lines of the first Markdown table in `text`."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("|")), len(lines))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]
