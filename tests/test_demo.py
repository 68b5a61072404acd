"""End to end: `aigi demo` on CPU, offline, through the embedded Dask cluster; then a re-run."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aigi.pipeline.cli import main


def files_with_mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def row_counts(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): pq.ParquetFile(p).metadata.num_rows for p in root.rglob("*.parquet")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "run"
    import contextlib
    import io

    buf = io.StringIO()
    # In this process: the embedded Dask cluster gives the same rows (tests/test_runner.py checks
    # that) and would add half a minute of worker start-up and model loading to the suite.
    with contextlib.redirect_stdout(buf):
        code = main(["demo", "--out", str(out), "--serial"])
    assert code == 0, buf.getvalue()
    return out, buf.getvalue()


def test_demo_runs_every_stage_and_prints_table(demo: tuple[Path, str]) -> None:
    out, printed = demo
    assert "random-weight stand-ins" in printed
    assert "n_real  n_fake  ACC@0.5" in printed
    gens = ("tiny-sd-a", "tiny-sd-b", "tiny-sd-a-vae", "tiny-sd-a-img2img")
    for gen in (*gens, "all"):
        assert any(line.startswith(gen + " ") for line in printed.splitlines())
    counts = row_counts(out)
    assert sum(n for k, n in counts.items() if k.startswith("images/tiny-sd-a/")) == 48
    # aligned fakes: one per photo for each mode
    assert sum(n for k, n in counts.items() if k.startswith("images/tiny-sd-a-vae/")) == 96
    assert sum(n for k, n in counts.items() if k.startswith("images/tiny-sd-a-img2img/")) == 96
    assert sum(n for k, n in counts.items() if k.startswith("images/tiny-sd-b")) == 48
    assert sum(n for k, n in counts.items() if k.startswith("images/photos")) == 96
    assert sum(n for k, n in counts.items() if k.startswith("features/lare-")) == 384
    metrics = pq.read_table(next(out.glob("detectors/logreg-*/metrics.parquet"))).to_pylist()
    test_gens = sorted(r["generator"] for r in metrics if r["split"] == "test")
    assert test_gens == sorted(["all", *gens])  # the aligned fakes are sources of their own
    for name in ("model/detector.json", "model/state.safetensors", "predictions.parquet", "metrics.csv",
                 "report.md", "protocols.parquet", "roc.png", "cross_generator.png", "auroc.png"):
        assert next(out.glob(f"detectors/logreg-*/{name}")).stat().st_size > 0
    assert not list(out.glob("detectors/*/**/*.pkl"))  # nothing is pickled

    info = json.loads((out / "run.json").read_text())
    assert info["versions"]["torch"] and info["versions"]["diffusers"]
    for gen in ("tiny-sd-a", "tiny-sd-b"):
        assert info["models"][gen]["revision"].startswith("sha256:")
        assert info["models"][gen]["pipeline"] == "StableDiffusionPipeline"
    assert info["models"]["tiny-sd-b"]["scheduler"] == "EulerDiscreteScheduler"
    for feature in ("lare", "dnf", "code", "dire", "anomaly", "clip_rn50"):
        rec = info["models"][f"feature:{feature}"]
        assert rec["revision"].startswith("sha256:") and (out / "features" / f"{feature}-{rec['fingerprint']}").is_dir()


def test_demo_stores_every_feature_and_the_anomaly_score(demo: tuple[Path, str], capsys: pytest.CaptureFixture) -> None:
    out, printed = demo
    counts = row_counts(out)
    for feature in ("lare", "dnf", "code", "dire", "anomaly", "clip_rn50"):
        assert sum(n for k, n in counts.items() if k.startswith(f"features/{feature}-") and "/shard-" in k) == 384, feature
    scores = pq.read_table(next(out.glob("features/anomaly-*/anomaly_scores.parquet"))).to_pylist()
    assert sorted(r["generator"] for r in scores) == ["tiny-sd-a", "tiny-sd-a-img2img", "tiny-sd-a-vae", "tiny-sd-b"]
    assert all(0 < r["anomaly_score"] <= 1 and r["n_real"] == r["n_generated"] for r in scores)
    assert "Anomaly Score per generator" in printed
    assert main(["features", str(out)]) == 0
    listing = capsys.readouterr().out
    assert "layer3" in listing and "(128, 4, 4)" in listing and "384 rows" in listing


def test_generated_rows_carry_provenance(demo: tuple[Path, str]) -> None:
    out, _ = demo
    rows = pq.read_table(next(out.glob("images/tiny-sd-a/*.parquet"))).to_pylist()
    r = rows[0]
    assert r["label"] == 1 and r["format"] == "PNG" and r["steps"] == 8 and r["guidance"] == 3.0
    assert r["prompt"].startswith("a photo of a ") and r["class_name"] in r["prompt"]
    assert r["seed"] is not None and r["scheduler"] == "DDIMScheduler" and r["revision"]
    import hashlib

    assert hashlib.sha256(r["image"]["bytes"]).hexdigest() == r["sha256"]


def test_datasets_loads_demo_images(demo: tuple[Path, str], tmp_path: Path) -> None:
    import datasets
    from PIL import Image

    out, _ = demo
    ds = datasets.load_dataset(
        "parquet", data_files=str(out / "images" / "**" / "*.parquet"), split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert len(ds) == 384
    assert sorted(set(ds["label"])) == [0, 1]
    assert isinstance(ds[0]["image"], Image.Image) and ds[0]["image"].size == (64, 64)


def test_rerun_is_fast_rewrites_nothing(demo: tuple[Path, str], capsys: pytest.CaptureFixture) -> None:
    out, _ = demo
    before, counts = files_with_mtimes(out), row_counts(out)
    events = (out / "logs" / "events.jsonl").read_text()
    assert main(["demo", "--out", str(out), "--serial"]) == 0
    printed = capsys.readouterr().out
    assert "already done, skipped" in printed
    assert "units  " not in printed.replace("units already", "")  # no unit ran
    # the one file that changes: the event log gains the re-run's start, and nothing else
    after = files_with_mtimes(out)
    assert after.pop("logs/events.jsonl") != before.pop("logs/events.jsonl")
    assert after == before
    new = (out / "logs" / "events.jsonl").read_text()[len(events):].splitlines()
    assert len(new) == 1 and '"event": "run_start"' in new[0]
    assert row_counts(out) == counts


def test_status_reports_every_stage_done(demo: tuple[Path, str], capsys: pytest.CaptureFixture) -> None:
    out, _ = demo
    assert main(["status", str(out)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines()[1:] if not ln.startswith("work s:")]
    stages = [ln.split()[0] for ln in lines]
    assert stages[:6] == ["ingest/photos", "prompts", "generate/tiny-sd-a", "generate/tiny-sd-b",
                          "aligned/tiny-sd-a-vae", "aligned/tiny-sd-a-img2img"]
    curation = ["hash", "dedupe", "pair", "measure", "normalize-plan", "normalize", "audit", "split"]
    assert stages[6:14] == curation
    assert "features/lare+dnf+code+dire+anomaly+clip_rn50" in stages and "detect/logreg" in stages
    assert "report/anomaly" in stages
    assert all(ln.rstrip().endswith("done") and "incomplete" not in ln for ln in lines)
    import json

    assert main(["status", str(out), "--json"]) == 0
    status = {r["stage"]: r for r in json.loads(capsys.readouterr().out)["stages"]}
    gen = status["generate/tiny-sd-a"]["cost"]  # recorded per unit as it ran
    assert gen["units_run"] == 3 and gen["items"] == 48 and gen["work_s"] > 0 and gen["items_per_s"] > 0
    assert status["features/lare+dnf+code+dire+anomaly+clip_rn50"]["cost"]["items"] == 384


def test_demo_writes_a_bias_audit_that_normalization_clears(demo: tuple[Path, str]) -> None:
    out, _ = demo
    audit = pq.read_table(out / "curation" / "bias_audit.parquet").to_pylist()
    auc = {r["when"]: r["auc"] for r in audit if r["property"] == "format_only_auc" and r["source"] is None}
    # JPEG photos beside PNG fakes: the format alone gives the label away; after the all-JPEG
    # policy it says nothing
    assert auc["before"] >= 0.95 and abs(auc["after"] - 0.5) <= 0.1
    report = (out / "curation" / "bias_audit.md").read_text(encoding="utf-8")
    assert "format-only AUC" in report and "## after" in report
    formats = {r["image_id"]: r["format"] for r in pq.read_table(out / "curation" / "measures_normalized").to_pylist()}
    assert len(formats) == 384 and set(formats.values()) == {"JPEG"}


def test_demo_trains_logistic_code_and_dnf_heads_with_the_cross_generator_matrix(demo: tuple[Path, str]) -> None:
    from PIL import Image

    out, printed = demo
    gens = {"tiny-sd-a", "tiny-sd-b", "tiny-sd-a-vae", "tiny-sd-a-img2img"}
    for head in ("logreg", "code_linear", "resnet_dnf"):
        assert f"detect/{head}: test split" in printed
        [folder] = out.glob(f"detectors/{head}-*")
        metrics = pq.read_table(folder / "metrics.parquet").to_pylist()
        test = [r for r in metrics if r["split"] == "test"]
        assert {r["generator"] for r in test} == gens | {"all"}
        for r in test:  # intervals around the estimate
            assert r["auroc_low"] <= r["auroc"] <= r["auroc_high"] and 0 <= r["tpr_at_1fpr"] <= 1
        cross = pq.read_table(folder / "protocols.parquet").to_pylist()
        assert {(r["train"], r["generator"]) for r in cross if r["protocol"] == "cross_generator"} == {
            (a, b) for a in gens for b in gens | {"all"}}
        with Image.open(folder / "cross_generator.png") as im:
            assert im.width > 200 and im.height > 200


def test_train_command_trains_another_head_on_the_cached_features(demo: tuple[Path, str], capsys) -> None:
    from aigi.detectors.base import load_detector

    out, _ = demo
    assert main(["train", str(out), "--detector", "code_knn", "--protocol", "per_generator"]) == 0
    printed = capsys.readouterr().out
    assert "detect/code_knn: test split" in printed
    [folder] = out.glob("detectors/code_knn-*")
    det = load_detector(folder / "model")
    assert det.name == "code_knn" and (folder / "roc.png").exists() and not (folder / "protocols.parquet").exists()


def test_egre_cached_and_end_to_end_on_the_demo_run(demo: tuple[Path, str]) -> None:
    """LaRE²'s head on the demo's cached CLIP RN50 and LaRE features, and end to end: the CLIP
    backbone (the demo's tiny one) fine-tuned from the curated images."""
    import io
    import json
    from dataclasses import replace

    from safetensors.numpy import load_file

    from aigi.detectors.base import load_detector
    from aigi.detectors.registry import get
    from aigi.manifests.rundir import RunDir
    from aigi.pipeline.cluster import SerialExecutor
    from aigi.pipeline.config import load_config
    from aigi.pipeline.runner import run_stages
    from aigi.pipeline.stage import RunContext
    from aigi.pipeline.stages.detect import DetectStage

    out, _ = demo
    config = load_config(out / "config.toml", out=str(out))
    clip = json.loads((out / "models" / "tiny-clip_rn50" / ".aigi-tiny-config.json").read_text())

    small = dict(heads=2, d_k=4, d_v=4, channel_hidden=8, epochs=2, batch_size=16, device="cpu")
    egre = get("egre").Config
    heads = {
        "cached": egre(**small),
        "end_to_end": egre(mode="end_to_end", clip_model=clip["model"], image_size=clip["image_size"],
                           pad_mode=clip["pad_mode"], normalization=clip["normalization"], **small),
    }
    ctx = RunContext(replace(config, evaluate=replace(config.evaluate, protocols=("per_generator",), bootstrap=0)),
                     RunDir(out))
    for mode, cfg in heads.items():
        stage = DetectStage(ctx, "egre", cfg)
        [res] = run_stages([stage], SerialExecutor(), ctx.run.logs, io.StringIO())
        [unit] = stage.plan()
        folder = Path(unit.output).parent
        det = load_detector(folder / "model")
        assert det.config.mode == mode
        metrics = pq.read_table(folder / "metrics.parquet").to_pylist()
        assert any(r["generator"] == "all" and r["split"] == "test" for r in metrics)
        arrays = load_file(str(folder / "model" / "state.safetensors"))
        assert any(k.startswith("visual.") for k in arrays) == (mode == "end_to_end")


def test_export_and_verify_commands(demo: tuple[Path, str], tmp_path: Path, capsys) -> None:
    """The issue's check: the exported demo loads, passes `aigi verify`, and a copy with one
    flipped byte or a missing shard fails with the file named."""
    import shutil

    import datasets

    out, _ = demo
    assert main(["verify", str(out)]) == 0, capsys.readouterr().out
    export = tmp_path / "export"
    assert main(["export", str(out), "--out", str(export)]) == 0
    ds = datasets.load_dataset(str(export), split="test")
    assert ds.features["label"].names == ["real", "generated"] and ds[0]["image"].size == (64, 64)
    assert main(["verify", str(export)]) == 0
    capsys.readouterr()

    flipped = tmp_path / "flipped"
    shutil.copytree(export, flipped)
    victim = sorted((flipped / "data" / "train").glob("*.parquet"))[0]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    assert main(["verify", str(flipped)]) == 1
    assert victim.relative_to(flipped).as_posix() in capsys.readouterr().out

    missing = tmp_path / "missing"
    shutil.copytree(export, missing)
    gone = sorted((missing / "data" / "test").glob("*.parquet"))[0]
    gone.unlink()
    assert main(["verify", str(missing)]) == 1
    assert gone.relative_to(missing).as_posix() in capsys.readouterr().out
