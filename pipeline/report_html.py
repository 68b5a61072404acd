"""`aigi report RUN`: one self-contained HTML page about a run.

The page (default `RUN/report.html`) needs nothing but itself: inline CSS, no script, no external
URL; every image is an inline `data:` URI (thumbnails at most `THUMB` pixels on the longest side).
Every string that comes from the run (prompts, paths, names) is HTML-escaped. Sections, each
shown only when the run has its data (else one line saying it is not in this run):

1. Run: name, config fingerprint, seed, aigi version, when run.json was written; the stages with
   their units and items done (`aigi status`).
2. Counts: images per source (real / generated) as generated or ingested, kept and dropped by the
   deduplication (with the reasons), and kept images per split.
3. Samples: per source up to `samples` curated images (the smallest image_ids kept), captioned with
   their prompt or class; aligned fakes beside the real image they were made from.
4. Bias audit: the format-only classifier's AUC per moment (table and plot), the per-property
   audit table, the frequency parity of aligned fakes.
5. Detectors: per `RUN/detectors/<key>/`, its metrics (test split, then the others), the protocol
   table when there is one, and every PNG plot of the folder.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections import Counter
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

THUMB = 128  # longest side of a thumbnail, pixels
CAPTION = 70  # characters of a caption before it is cut
SECTIONS = ("Run", "Counts", "Samples", "Bias audit", "Detectors")
LABELS = {0: "real", 1: "generated"}
SPLIT_ORDER = ("train", "val", "test")
MISSING = "—"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1150px;
padding:1em 1.5em;color:#1d1d1f;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin:.2em 0 .1em}h2{border-bottom:2px solid #ddd;padding-bottom:.15em;margin-top:1.6em}
h3{margin:1.1em 0 .4em;font-size:1.1em}
table{border-collapse:collapse;margin:.4em 0 .8em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.2em .55em;text-align:left;vertical-align:top}
th{background:#f2f2f4}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#666;font-size:.85em}
.info th{white-space:nowrap}
nav{font-size:.9em;margin:.3em 0}nav a{margin-right:1em;color:#2255aa}
tr.total td{font-weight:600;background:#fafafa}
.none{color:#777;font-style:italic}.note{color:#555;font-size:.88em}
.grid{display:flex;flex-wrap:wrap;gap:10px;margin:.3em 0 .8em}
figure{margin:0;font-size:.75em;color:#333}
figure.thumb{width:136px}
figure.thumb img{width:128px;height:128px;object-fit:contain;background:#eee;image-rendering:pixelated;
display:block;border:1px solid #ccc}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure.plotfig{max-width:100%}
figcaption{margin-top:2px;word-wrap:break-word;overflow-wrap:anywhere}
.pair{display:flex;gap:4px;padding:4px;border:1px solid #ddd;border-radius:4px;background:#fafafa}
.pair figure.thumb{width:128px}
.plot{max-width:100%;border:1px solid #ddd;margin:.3em 0}
details{margin:.3em 0 .8em}summary{cursor:pointer;color:#333}
code{background:#f4f4f4;padding:0 .2em}
"""


def build_report(run: str | os.PathLike, out: str | os.PathLike | None = None, samples: int = 8) -> Path:
    """Write the run's report as one self-contained HTML file (default RUN/report.html); return it."""
    from aigi.manifests.rundir import RunDir

    rd = RunDir(Path(run))
    if not rd.run_json.exists():
        raise FileNotFoundError(f"{rd.root} is not an aigi run directory (no run.json)")
    if samples < 0:
        raise ValueError(f"samples must be >= 0, got {samples}")
    info = json.loads(rd.run_json.read_text(encoding="utf-8"))
    data = _RunData(rd, info)
    name = rd.root.resolve().name
    body = [
        f"<h1>aigi report: {escape(name)}</h1>",
        f'<p class="note">{escape(str(rd.root.resolve()))}</p>',
        "<nav>" + "".join(f'<a href="#{_anchor(t)}">{escape(t)}</a>' for t in SECTIONS) + "</nav>",
        _section("Run", _run_section(data)),
        _section("Counts", _counts_section(data)),
        _section("Samples", _samples_section(data, samples)),
        _section("Bias audit", _audit_section(data)),
        _section("Detectors", _detectors_section(data)),
    ]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>aigi report: {escape(name)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    from aigi.core import atomic

    return atomic.write_text(Path(out) if out is not None else rd.root / "report.html", page)


# ---------------------------------------------------------------- reading the run


class _RunData:
    """What the sections read, loaded lazily; a missing piece is None."""

    def __init__(self, rd: Any, info: dict[str, Any]) -> None:
        self.rd, self.info = rd, info
        self.config = _load_config(rd, info)
        self._ctx = None
        if self.config is not None:
            from aigi.pipeline.stage import RunContext

            self._ctx = RunContext(self.config, rd)

    def _table(self, path: Path, schema: Any, columns: list[str] | None = None) -> Any:
        from aigi.manifests.shards import read_shard

        return read_shard(path, schema, columns=columns) if path.exists() else None

    def duplicates(self) -> Any:
        from aigi.manifests.schema import DUPLICATES

        return self._table(self.rd.curation / "duplicates.parquet", DUPLICATES, ["image_id", "keep", "drop_reason"])

    def splits(self) -> Any:
        from aigi.manifests.schema import SPLITS

        return self._table(self.rd.curation / "splits.parquet", SPLITS)

    def source_kinds(self) -> dict[str, str]:
        """Source name -> how its images were made: "real", "text" or the aligned mode."""
        if self.config is None:
            return {}
        kinds = {g.name: g.mode for g in self.config.generators}
        kinds.update({r.name: "real" for r in self.config.reals})
        return kinds

    def image_shards(self) -> list[Path]:
        """The original image shards the run planned, else those on disk."""
        if self._ctx is not None:
            from aigi.pipeline.stages.common import image_shards

            try:
                return [p for p in image_shards(self._ctx) if p.exists()]
            except FileNotFoundError:  # a stage not planned yet
                pass
        return self.rd.image_shards()

    def curated_shards(self) -> tuple[list[Path], bool]:
        """The images the later stages use (normalized when the run normalizes), and whether
        they are the normalized ones."""
        if self._ctx is not None:
            from aigi.pipeline.stages.common import curated_shards, normalizing

            try:
                shards = [p for p in curated_shards(self._ctx) if p.exists()]
                if shards:
                    return shards, normalizing(self.config)
            except FileNotFoundError:
                pass
        return self.image_shards(), False


def _load_config(rd: Any, info: dict[str, Any]) -> Any:
    """The run's config; None when it does not load (the report shows what it can)."""
    from aigi.pipeline.config import load_run_config

    try:
        return load_run_config(rd.root)[0]
    except Exception:  # a config this aigi no longer reads
        return None


# ---------------------------------------------------------------- HTML helpers


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")


def _section(title: str, content: str | None) -> str:
    inner = content if content else f'<p class="none">{escape(title)}: not in this run.</p>'
    return f'<section id="{_anchor(title)}">\n<h2>{escape(title)}</h2>\n{inner}\n</section>'


def _none(what: str) -> str:
    return f'<p class="none">{escape(what)}: not in this run.</p>'


def _cell(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return f'<td class="n">{MISSING}</td>'
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, int):
        return f'<td class="n">{v}</td>'
    if isinstance(v, float):
        return f'<td class="n">{v:.{digits}f}</td>'
    return f"<td>{escape(str(v))}</td>"


def _html_table(header: list[str], rows: list[list[Any]], attrs: str = "",
                row_attrs: list[str] | None = None) -> str:
    out = [f"<table{attrs}><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows):
        extra = row_attrs[i] if row_attrs else ""
        out.append(f"<tr{extra}>" + "".join(c if isinstance(c, _Raw) else _cell(c) for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


class _Raw(str):
    """A cell already rendered as HTML."""


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _thumbnail(data: bytes) -> str | None:
    """A data URI of the image at most THUMB pixels on its longest side (the smaller of PNG and
    JPEG q85); None when the bytes do not decode."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    except Exception:
        return None
    png, jpg = io.BytesIO(), io.BytesIO()
    im.save(png, "PNG", optimize=True)
    im.save(jpg, "JPEG", quality=85)
    if png.tell() <= jpg.tell():
        return _data_uri(png.getvalue(), "image/png")
    return _data_uri(jpg.getvalue(), "image/jpeg")


def _cut(text: str | None, n: int = CAPTION) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _png_figure(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return _data_uri(buf.getvalue(), "image/png")


# ---------------------------------------------------------------- 1. run


def _run_section(data: _RunData) -> str:
    from aigi.pipeline.runner import stage_status

    info, cfg = data.info, data.info.get("config") or {}
    written = datetime.fromtimestamp(data.rd.run_json.stat().st_mtime, tz=timezone.utc)
    rows = [
        ("run", data.rd.root.resolve().name),
        ("config fingerprint", info.get("config_fingerprint")),
        ("seed", (cfg.get("run") or {}).get("seed")),
        ("config file", info.get("config_file")),
        ("aigi version", (info.get("versions") or {}).get("aigi")),
        ("run.json written", written.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("generators", ", ".join(f"{g.get('name')} ({g.get('family')}, {g.get('mode', 'text')})"
                                 for g in cfg.get("generators") or [])),
        ("real sources", ", ".join(f"{r.get('name')} ({r.get('source')})" for r in cfg.get("reals") or [])),
    ]
    out = ['<table class="info"><tbody>']
    out += [f"<tr><th>{escape(k)}</th><td>{escape(MISSING if v in ('', None) else str(v))}</td></tr>"
            for k, v in rows]
    out.append("</tbody></table>")
    stages = stage_status(data.rd.logs) if data.rd.logs.exists() else []
    if not stages:
        out.append(_none("stages"))
        return "\n".join(out)
    out.append("<h3>Stages</h3>")
    table_rows, attrs = [], []
    for s in stages:
        items = f"{s['items_done']}/{s['items_total']} {s['item_name']}" if s["items_total"] else ""
        state = "done" if s["done"] == s["total"] else "incomplete"
        table_rows.append([s["stage"], f"{s['done']}/{s['total']}", items, state])
        attrs.append(f' data-stage="{escape(s["stage"])}"')
    out.append(_html_table(["stage", "units done", "items done", "state"], table_rows,
                           ' id="stages-table"', attrs))
    return "\n".join(out)


# ---------------------------------------------------------------- 2. counts


def _counts_section(data: _RunData) -> str | None:
    import pyarrow.compute as pc

    from aigi.manifests.schema import IMAGES
    from aigi.manifests.shards import read_shard

    shards = data.image_shards()
    if not shards:
        return None
    import pyarrow as pa

    kinds = data.source_kinds()
    images = pa.concat_tables([read_shard(s, IMAGES, columns=["image_id", "source", "label"])
                               .replace_schema_metadata(None) for s in shards])
    total: Counter[str] = Counter()
    label_of: dict[str, int] = {}
    for src, lab, n in _group_count(images, ["source", "label"]):
        total[src] += n
        label_of.setdefault(src, lab)
    sources = sorted(total, key=lambda s: (label_of[s], s))

    dups = data.duplicates()
    kept: Counter[str] = Counter()
    reasons: Counter[tuple[str, str]] = Counter()
    if dups is not None:
        keep_ids = dups.filter(dups.column("keep")).column("image_id")
        kept.update({src: n for src, n in _group_count(
            images.filter(pc.is_in(images.column("image_id"), value_set=keep_ids)), ["source"])})
        dropped = dups.filter(pc.invert(dups.column("keep")))
        where = pc.index_in(dropped.column("image_id"), value_set=images.column("image_id"))
        for src, reason in zip(images.column("source").take(where).to_pylist(),
                               dropped.column("drop_reason").to_pylist(), strict=True):
            # "exact_duplicate_of:<id>": the kind of reason, not the image it names
            reasons[(src or MISSING, (reason or "unknown").split(":")[0])] += 1

    splits = data.splits()
    by_split: dict[tuple[str, str], int] = {}
    split_names: list[str] = []
    if splits is not None:
        for src, sp, n in _group_count(splits, ["source", "split"]):
            by_split[(src, sp)] = n
        present = {sp for _, sp in by_split}
        split_names = [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))

    header = ["source", "label", "made by", "images"]
    if dups is not None:
        header += ["kept", "dropped"]
    header += split_names
    rows, attrs = [], []
    sums: Counter[str] = Counter()
    for src in sources:
        row: list[Any] = [src, LABELS.get(label_of[src], str(label_of[src])), kinds.get(src, MISSING),
                          _Raw(f'<td class="n" data-col="images">{total[src]}</td>')]
        sums["images"] += total[src]
        if dups is not None:
            row += [_Raw(f'<td class="n" data-col="kept">{kept[src]}</td>'),
                    _Raw(f'<td class="n" data-col="dropped">{total[src] - kept[src]}</td>')]
            sums["kept"] += kept[src]
            sums["dropped"] += total[src] - kept[src]
        for sp in split_names:
            n = by_split.get((src, sp), 0)
            row.append(_Raw(f'<td class="n" data-col="split-{escape(sp)}">{n}</td>'))
            sums[f"split-{sp}"] += n
        rows.append(row)
        attrs.append(f' data-source="{escape(src)}" data-label="{escape(LABELS.get(label_of[src], ""))}"')
    total_row: list[Any] = ["all", "", ""]
    for col in ["images"] + (["kept", "dropped"] if dups is not None else []) + [f"split-{s}" for s in split_names]:
        total_row.append(_Raw(f'<td class="n" data-col="{escape(col)}">{sums[col]}</td>'))
    rows.append(total_row)
    attrs.append(' class="total" data-source=""')
    out = ['<p class="note">Images as generated or ingested; <em>kept</em> and <em>dropped</em> by the '
           "deduplication; the split columns count the kept images in each split.</p>",
           _html_table(header, rows, ' id="counts-table"', attrs)]
    if splits is not None:
        by_label: dict[tuple[int, str], int] = {(lab, sp): n for lab, sp, n in _group_count(splits, ["label", "split"])}
        out.append("<h3>Per split and label</h3>")
        lrows = [[sp, *[by_label.get((lab, sp), 0) for lab in (0, 1)], sum(by_label.get((lab, sp), 0) for lab in (0, 1))]
                 for sp in split_names]
        out.append(_html_table(["split", "real", "generated", "all"], lrows, ' id="split-label-table"'))
    else:
        out.append(_none("splits"))
    if reasons:
        out.append("<h3>Dropped, by reason</h3>")
        out.append(_html_table(["source", "reason", "images"], [[s, r, n] for (s, r), n in sorted(reasons.items())]))
    return "\n".join(out)


def _group_count(table: Any, keys: list[str]) -> list[tuple]:
    g = table.group_by(keys).aggregate([([], "count_all")])
    cols = [g.column(k).to_pylist() for k in keys] + [g.column("count_all").to_pylist()]
    return list(zip(*cols, strict=True))


# ---------------------------------------------------------------- 3. samples


META = ["image_id", "source", "label", "prompt", "class_name", "parent_id", "aligned_mode"]


def _samples_section(data: _RunData, samples: int) -> str | None:
    import pyarrow.compute as pc

    from aigi.manifests.schema import IMAGES
    from aigi.manifests.shards import read_shard

    shards, normalized = data.curated_shards()
    if not shards:
        return None
    if samples == 0:
        return '<p class="none">no samples asked for (--samples 0).</p>'
    dups = data.duplicates()
    keep = dups.filter(dups.column("keep")).column("image_id") if dups is not None else None
    import pyarrow as pa

    parts = []
    for k, shard in enumerate(shards):
        t = read_shard(shard, IMAGES, columns=["image_id", "source", "parent_id"]).replace_schema_metadata(None)
        parts.append(t.append_column("shard", pa.array([k] * t.num_rows, pa.int32())))
    index = pa.concat_tables(parts)  # every curated row: a parent may have been dropped
    kept = index if keep is None else index.filter(pc.is_in(index.column("image_id"), value_set=keep))
    n_kept = {src: n for src, n in _group_count(kept, ["source"])}
    chosen: dict[str, list[str]] = {}
    want: dict[str, int] = {}  # image_id -> index of its curated shard
    for src in n_kept:
        rows = kept.filter(pc.equal(kept.column("source"), src)).sort_by("image_id").slice(0, samples)
        chosen[src] = rows.column("image_id").to_pylist()
        want.update(zip(chosen[src], rows.column("shard").to_pylist(), strict=True))
        parents = [p for p in rows.column("parent_id").to_pylist() if p]
        if parents:
            found = index.filter(pc.is_in(index.column("image_id"), value_set=_array(parents)))
            want.update(zip(found.column("image_id").to_pylist(), found.column("shard").to_pylist(), strict=True))
    meta: dict[str, dict[str, Any]] = {}  # image_id -> its row, without the image
    thumbs: dict[str, str | None] = {}
    for k in sorted(set(want.values())):
        ids = [i for i, s in want.items() if s == k]
        t = read_shard(shards[k], IMAGES, columns=[*META, "image"])
        for r in t.filter(pc.is_in(t.column("image_id"), value_set=_array(ids))).to_pylist():
            img = r.pop("image")
            meta[r["image_id"]] = r
            thumbs[r["image_id"]] = _thumbnail(img["bytes"]) if img and img.get("bytes") else None

    kinds = data.source_kinds()
    order = sorted(chosen, key=lambda s: (meta[chosen[s][0]]["label"], s))
    out = [f'<p class="note">Up to {samples} {"normalized " if normalized else ""}images per source, '
           "kept by the deduplication, the smallest image ids first; shown at most "
           f"{THUMB} px.</p>"]
    for src in order:
        ids = chosen[src]
        aligned = any(meta[i]["parent_id"] for i in ids)
        label = LABELS.get(meta[ids[0]]["label"], "")
        made = kinds.get(src) or meta[ids[0]]["aligned_mode"] or ""
        out.append(f'<h3>{escape(src)} <span class="note">({escape(label)}'
                   f'{", " + escape(made) if made and made != "real" else ""}; '
                   f"{len(ids)} of {n_kept[src]} kept)</span></h3>")
        items = []
        for i in ids:
            if meta[i]["parent_id"]:
                p = meta[i]["parent_id"]
                parent = _figure(p, meta[p], thumbs.get(p), role="parent") if p in meta else (
                    f'<figure class="thumb missing" data-role="parent"><figcaption>parent {escape(p)} '
                    "not in the curated images</figcaption></figure>")
                items.append(f'<div class="pair" data-fake="{escape(i)}" data-parent="{escape(p)}">'
                             f"{parent}{_figure(i, meta[i], thumbs.get(i), role='fake')}</div>")
            else:
                items.append(_figure(i, meta[i], thumbs.get(i)))
        if aligned:
            out.append('<p class="note">Each aligned fake (right) beside the real image it was made from (left).</p>')
        out.append(f'<div class="grid" data-source="{escape(src)}">' + "".join(items) + "</div>")
    return "\n".join(out)


def _array(ids: list[str]) -> Any:
    import pyarrow as pa

    return pa.array(ids, type=pa.string())


def _figure(image_id: str, row: dict[str, Any], uri: str | None, role: str = "sample") -> str:
    text = row.get("prompt") or row.get("class_name") or ""
    caption = _cut(text)
    if role == "parent":
        caption = f"real: {caption}" if caption else "real"
    elif role == "fake":
        caption = f"{row.get('aligned_mode') or 'aligned'}: {caption}" if caption else (row.get("aligned_mode") or "aligned")
    img = (f'<img src="{uri}" alt="{escape(_cut(text, 120))}" data-image-id="{escape(image_id)}">' if uri
           else '<div class="none">does not decode</div>')
    return (f'<figure class="thumb" data-role="{role}" data-image-id="{escape(image_id)}" title="{escape(text)}">{img}'
            f"<figcaption>{escape(caption)}<br><code>{escape(image_id[:12])}</code></figcaption></figure>")


# ---------------------------------------------------------------- 4. bias audit


AUDIT_COLUMNS = ["when", "source", "label", "property", "kind", "n", "mean", "p05", "p50", "p95",
                 "value_counts", "ks_stat", "tv_distance", "chi2_pvalue", "auc"]


def _audit_section(data: _RunData) -> str | None:
    from aigi.manifests.schema import BIAS_AUDIT, FREQUENCY_PARITY

    audit = data._table(data.rd.curation / "bias_audit.parquet", BIAS_AUDIT)
    if audit is None:
        return None
    from aigi.curation.audit import AUC_PROPERTY

    rows = audit.to_pylist()
    moments = list(dict.fromkeys(r["when"] for r in rows))
    auc = [r for r in rows if r["property"] == AUC_PROPERTY]
    out = ['<p class="note">How well the images\' format alone (codec, quality, size, ...) tells real from '
           "generated: a format-only classifier's AUC (0.5: no shortcut) and per-property differences, "
           "before and after normalization.</p>"]
    if auc:
        overall = {r["when"]: r["auc"] for r in auc if r["source"] is None}
        out.append("<h3>Format-only classifier AUC</h3>")
        srcs = sorted({r["source"] for r in auc if r["source"] is not None})
        table = [["all sources", *[overall.get(m) for m in moments]]]
        per = {(r["source"], r["when"]): r["auc"] for r in auc if r["source"] is not None}
        table += [[s, *[per.get((s, m)) for m in moments]] for s in srcs]
        out.append(_html_table(["source", *moments], table, ' id="auc-table"'))
        out.append(f'<img class="plot" alt="format-only AUC per moment" src="{_auc_plot(moments, overall, per, srcs)}">')
    props = [r for r in rows if r["property"] != AUC_PROPERTY]
    if props:
        out.append(f"<details><summary>Per-property audit ({len(props)} rows)</summary>")
        out.append(_html_table(AUDIT_COLUMNS, [[_cut(r[c], 60) if c == "value_counts" and r[c] else r[c]
                                                for c in AUDIT_COLUMNS] for r in props], ' id="audit-table"'))
        out.append("</details>")
    parity = data._table(data.rd.curation / "frequency_parity.parquet", FREQUENCY_PARITY)
    if parity is not None and parity.num_rows:
        cols = parity.column_names
        out.append("<h3>Frequency parity of aligned fakes</h3>")
        out.append('<p class="note">High-frequency energy of each aligned fake over its parent\'s.</p>')
        out.append(_html_table(cols, [[r[c] for c in cols] for r in parity.to_pylist()], ' id="parity-table"'))
    else:
        out.append(_none("frequency parity (no aligned generator)"))
    return "\n".join(out)


def _auc_plot(moments: list[str], overall: dict[str, Any], per: dict[tuple[str, str], Any], srcs: list[str]) -> str:
    import numpy as np

    from aigi.detectors.plots import _figure as figure

    groups = ["all sources", *srcs]
    fig = figure((max(480, 120 + 70 * len(groups) * max(1, len(moments))), 340))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(moments))
    x = np.arange(len(groups))
    for k, m in enumerate(moments):
        vals = [overall.get(m)] + [per.get((s, m)) for s in srcs]
        ys = [np.nan if v is None else float(v) for v in vals]
        bars = ax.bar(x + (k - (len(moments) - 1) / 2) * width, ys, width, label=m)
        for b, y in zip(bars, ys, strict=True):
            if y == y:
                ax.text(b.get_x() + b.get_width() / 2, y + 0.01, f"{y:.2f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(x, groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.25)
    ax.set_ylabel("AUC (0.5: no shortcut)")
    ax.set_title("format-only classifier AUC")
    ax.legend(title="normalization", fontsize=8, title_fontsize=8, loc="upper center", ncol=max(1, len(moments)))
    fig.tight_layout()
    return _png_figure(fig)


# ---------------------------------------------------------------- 5. detectors


METRIC_COLUMNS = ["detector", "feature", "split", "generator", "n_real", "n_fake", "acc", "balanced_acc",
                  "ap", "auroc", "tpr_at_1fpr"]
PROTOCOL_COLUMNS = ["detector", "protocol", "train", "generator", "n_real", "n_fake", "acc", "ap", "auroc",
                    "tpr_at_1fpr"]


def _detectors_section(data: _RunData) -> str | None:
    from aigi.manifests.schema import CROSS_METRICS, METRICS

    folders = sorted(p for p in data.rd.detectors.glob("*") if p.is_dir()) if data.rd.detectors.exists() else []
    if not folders:
        return None
    out = []
    for d in folders:
        out.append(f'<h3 data-detector="{escape(d.name)}">{escape(d.name)}</h3>')
        metrics = data._table(d / "metrics.parquet", METRICS)
        if metrics is None:
            out.append(_none("metrics (the detector did not finish)"))
        else:
            rows = metrics.to_pylist()
            test = [r for r in rows if r["split"] == "test"]
            other = [r for r in rows if r["split"] != "test"]
            out.append(_metric_table(test or other, METRICS_ATTR))
            if test and other:
                out.append(f"<details><summary>other splits ({len(other)} rows)</summary>"
                           f"{_metric_table(other, '')}</details>")
        protocols = data._table(d / "protocols.parquet", CROSS_METRICS)
        if protocols is not None and protocols.num_rows:
            out.append(f"<details><summary>protocols ({protocols.num_rows} rows)</summary>")
            out.append(_html_table(PROTOCOL_COLUMNS, [[r[c] for c in PROTOCOL_COLUMNS] for r in protocols.to_pylist()]))
            out.append("</details>")
        plots = [f'<figure class="plotfig"><img class="plot" alt="{escape(png.name)}" '
                 f'src="{_plot_uri(png.read_bytes())}"><figcaption>{escape(png.name)}'
                 "</figcaption></figure>" for png in sorted(d.glob("*.png"))]
        if plots:
            out.append('<div class="plots">' + "".join(plots) + "</div>")
    return "\n".join(out)


METRICS_ATTR = ' class="metrics"'
BIG_PLOT = 200_000  # bytes: a larger PNG (image grids) is inlined as JPEG when that is smaller


def _plot_uri(data: bytes) -> str:
    if len(data) > BIG_PLOT:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, "JPEG", quality=85)
            if buf.tell() < len(data):
                return _data_uri(buf.getvalue(), "image/jpeg")
        except Exception:  # not a PNG PIL reads: inlined as it is
            pass
    return _data_uri(data, "image/png")


def _metric_table(rows: list[dict[str, Any]], attrs: str) -> str:
    def with_ci(r: dict[str, Any], c: str) -> Any:
        lo, hi, v = r.get(f"{c}_low"), r.get(f"{c}_high"), r.get(c)
        if v is None or lo is None or hi is None or v != v:
            return v
        return _Raw(f'<td class="n">{v:.3f} <span class="ci">[{lo:.3f}, {hi:.3f}]</span></td>')

    table = [[with_ci(r, c) if c in ("acc", "ap", "auroc", "tpr_at_1fpr") else r.get(c) for c in METRIC_COLUMNS]
             for r in rows]
    return _html_table(METRIC_COLUMNS, table, attrs)


# ---------------------------------------------------------------- a headless browser's view


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def _chromium(chromium: str, page: Path, extra: list[str], timeout: float) -> str:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="aigi-chromium-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, Path(page).resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{chromium} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def screenshot(page: str | os.PathLike, png: str | os.PathLike, chromium: str = "chromium",
               size: tuple[int, int] = (1200, 2000), timeout: float = 60) -> Path:
    """Render the HTML page in headless Chromium and save its top `size` pixels as a PNG."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _chromium(chromium, Path(page), [f"--screenshot={png}", f"--window-size={size[0]},{size[1]}"], timeout)
    if not png.exists():
        raise RuntimeError(f"{chromium} wrote no screenshot to {png}")
    return png


def dump_dom(page: str | os.PathLike, chromium: str = "chromium", timeout: float = 60) -> str:
    """The page's DOM after headless Chromium has rendered it."""
    return _chromium(chromium, Path(page), ["--dump-dom"], timeout)
