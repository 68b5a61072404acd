"""`aigi report RUN`: one self-contained HTML page (no external URL, every image inline, data
escaped) whose counts agree with the run's Parquet tables, read here independently."""

from __future__ import annotations

import base64
import io
import re
import shutil
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from aigi.pipeline.report_html import SECTIONS, THUMB, build_report

EVIL = "<script>alert(1)</script>"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """12 photos as [real], one tiny SD text generator (one class name carries a script tag), the
    same model's VAE round trip of the photos (aligned), and a logistic regression on tiny CLIP."""
    from small_run import png

    from aigi.core.configtools import to_dict
    from aigi.features.registry import get
    from aigi.generators.tiny import tiny_stable_diffusion
    from aigi.pipeline.config import parse_config
    from aigi.pipeline.run import run

    base = tmp_path_factory.mktemp("report")
    folder = base / "photos" / "cat"
    folder.mkdir(parents=True)
    for i in range(12):
        (folder / f"{i}.png").write_bytes(png(i))
    (folder / "copy.png").write_bytes(png(3))  # an exact copy: the dedupe drops one
    model = tiny_stable_diffusion(base / "sd", seed=4)
    clip = {k: list(v) if isinstance(v, tuple) else v for k, v in to_dict(get("clip_rn50").tiny(base / "clip")).items()}
    cfg = parse_config({
        "run": {"out": str(base / "run"), "seed": 1},
        "prompts": {"source": "classes", "classes": ["cat", f"dog {EVIL}"], "templates": ["a photo of a {class}"]},
        "real": {"name": "photos", "path": str(base / "photos"), "class_from_folder": True, "unit_size": 8},
        "generators": [
            {"name": "sd", "family": "stable_diffusion", "model": str(model), "steps": 2, "size": [32, 32],
             "images_per_prompt": 6, "batch_size": 6},
            {"name": "sd-vae", "family": "stable_diffusion", "model": str(model), "mode": "vae_roundtrip",
             "size": [32, 32], "batch_size": 8},
        ],
        "curation": {"split": {"by": "pair", "fractions": [0.5, 0.25, 0.25]}},
        "features": {"clip_rn50": clip},
        "detectors": {"logreg": {"feature": "clip_rn50", "column": "pooled"}},
        "evaluate": {"protocols": ["per_generator"], "bootstrap": 0},
    })
    run(cfg, serial=True, stream=io.StringIO())
    return base / "run"


@pytest.fixture(scope="module")
def report(run_dir: Path) -> Path:
    return build_report(run_dir)


class _Page(HTMLParser):
    """Every tag with its attributes, in document order, and the text of the headings."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_heading = tag in ("h1", "h2", "h3")
        if self._in_heading:
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3"):
            self._in_heading = False

    def handle_data(self, data):
        if self._in_heading:
            self.headings[-1] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _decode(uri: str) -> Image.Image:
    m = re.fullmatch(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", uri)
    assert m, uri[:60]
    img = Image.open(io.BytesIO(base64.b64decode(m.group(2))))
    img.load()
    return img


def test_the_page_is_self_contained_and_every_image_decodes(report: Path) -> None:
    assert report == report.parent / "report.html" and report.stat().st_size > 0
    text = report.read_text(encoding="utf-8")
    page = _parse(report)
    assert not re.search(r"https?://", text)  # no URL at all, so no external src or href
    assert not [t for t, a in page.tags if t in ("script", "link", "iframe", "object", "embed")]
    imgs = [a for t, a in page.tags if t == "img"]
    assert len(imgs) > 20
    for a in imgs:
        img = _decode(a["src"])
        if a.get("data-image-id"):  # a sample, as a thumbnail
            assert max(img.size) <= THUMB
    for t, a in page.tags:  # images inline, links only within the page
        for key in ("href", "src", "srcset", "action"):
            assert key not in a or str(a[key]).startswith("data:" if key != "href" else "#"), (t, a)
    assert [h for h in page.headings if h in SECTIONS] == list(SECTIONS)
    assert "not in this run" not in text.split('id="bias-audit"')[0]  # run, counts and samples are there


def test_the_counts_equal_the_parquet_tables(run_dir: Path, report: Path) -> None:
    images = pq.read_table(run_dir / "images", columns=["image_id", "source", "label"]).to_pylist()
    dups = {r["image_id"]: r["keep"] for r in pq.read_table(run_dir / "curation" / "duplicates.parquet").to_pylist()}
    splits = pq.read_table(run_dir / "curation" / "splits.parquet").to_pylist()
    total = Counter(r["source"] for r in images)
    kept = Counter(r["source"] for r in images if dups[r["image_id"]])
    per_split = Counter((r["source"], r["split"]) for r in splits)
    assert set(total) == {"photos", "sd", "sd-vae"} and sum(total.values()) - sum(kept.values()) >= 1

    # the counts table: its cells in order, each row tagged with its source
    text = report.read_text(encoding="utf-8")
    table = text.split('id="counts-table"')[1].split("</table>")[0]
    shown: dict[str, dict[str, int]] = {}
    for row in re.findall(r"<tr([^>]*)>(.*?)</tr>", table, flags=re.S):
        src = re.search(r'data-source="([^"]*)"', row[0])
        if src is None:
            continue
        shown[src.group(1)] = {c: int(v) for c, v in re.findall(r'data-col="([^"]+)">(\d+)<', row[1])}
    for src in total:
        row = shown[src]
        assert row["images"] == total[src]
        assert row["kept"] == kept[src] and row["dropped"] == total[src] - kept[src]
        for sp in ("train", "val", "test"):
            assert row.get(f"split-{sp}", 0) == per_split[(src, sp)]
    assert shown[""]["images"] == len(images) and shown[""]["kept"] == sum(kept.values())
    assert 'data-source="photos" data-label="real"' in table and 'data-source="sd" data-label="generated"' in table


def test_an_aligned_fake_sits_beside_its_parent(run_dir: Path, report: Path) -> None:
    parent_of = {r["image_id"]: r["parent_id"] for r in pq.read_table(
        run_dir / "images", columns=["image_id", "parent_id"]).to_pylist() if r["parent_id"]}
    page = _parse(report)
    pairs = [(i, a) for i, (t, a) in enumerate(page.tags) if t == "div" and "pair" in (a.get("class") or "")]
    assert pairs
    for i, a in pairs:
        assert parent_of[a["data-fake"]] == a["data-parent"]
        # the pair's next two figures, each with its image: the parent first, then the fake
        figs = [(t, b) for t, b in page.tags[i + 1:] if t == "figure"][:2]
        assert [b["data-role"] for _, b in figs] == ["parent", "fake"]
        assert [b["data-image-id"] for _, b in figs] == [a["data-parent"], a["data-fake"]]
        imgs = [b for t, b in page.tags[i + 1:] if t == "img"][:2]
        assert [b["data-image-id"] for b in imgs] == [a["data-parent"], a["data-fake"]]


def test_strings_from_the_data_are_escaped(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_sections_show_the_audit_and_the_detector(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert 'id="auc-table"' in text and 'id="parity-table"' in text  # the aligned generator's parity
    assert 'alt="format-only AUC per moment"' in text
    detectors = text.split('id="detectors"')[1]
    assert '<table class="metrics">' in detectors and 'alt="roc.png"' in detectors


def test_a_run_without_later_stages_says_so(run_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "run.json", bare / "run.json")
    out = build_report(bare, tmp_path / "page.html", samples=2)
    text = out.read_text(encoding="utf-8")
    for title in ("Counts", "Samples", "Bias audit", "Detectors"):
        assert f"{title}: not in this run." in text


def test_cli(run_dir: Path, tmp_path: Path, capsys) -> None:
    from aigi.pipeline.cli import main

    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out), "--samples", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    grids = re.findall(r'<div class="grid" data-source="[^"]+">(.*?)</div>\s*(?=<h3|</section)',
                       out.read_text(encoding="utf-8"), flags=re.S)
    assert grids and all(g.count("<img ") <= 2 for g in grids)  # one image, or one pair
    assert main(["report", str(tmp_path / "nothing")]) == 1


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs {CHROMIUM} (Debian: apt-get install chromium)")
def test_chromium_renders_the_page(report: Path, tmp_path: Path) -> None:
    from aigi.pipeline.report_html import dump_dom, screenshot

    shot = screenshot(report, tmp_path / "shot.png", chromium=CHROMIUM, size=(1200, 2000))
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2000, 1200) and pixels.std() > 0
    dom = dump_dom(report, chromium=CHROMIUM)
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in dom
