"""The `aigi` command line. Heavy imports happen inside the subcommands, so `--help` is instant."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _cmd_demo(args: argparse.Namespace) -> int:
    from aigi.pipeline.config import parse_config, tomllib
    from aigi.pipeline.demo import DISCLAIMER, prepare

    out = Path(args.out)
    print(DISCLAIMER)
    print(f"building the demo's tiny models and real-photo crops under {out} (once) ...")
    text = prepare(out, allow_existing=args.allow_existing_out)
    config = parse_config(tomllib.loads(text), file=str(out / "config.toml"))
    report = _run(config, text, args)
    _print_summary(report)
    print(DISCLAIMER)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from aigi.pipeline.config import load_config

    config = load_config(args.config, out=args.out)
    if args.plan:
        from aigi.pipeline.run import preview

        print(f"{args.config}: valid. Stages of a run into {config.run.out}:")
        preview(config)
        return 0
    text = Path(args.config).read_text(encoding="utf-8")
    report = _run(config, text, args)
    _print_summary(report)
    return 0


def _run(config, text, args):
    from aigi.pipeline.run import run

    print(f"run directory: {Path(config.run.out).resolve()}")
    return run(config, config_text=text, scheduler=args.scheduler, serial=args.serial,
               allow_existing=args.allow_existing_out)


def _print_summary(report) -> None:
    from aigi.manifests.rundir import RunDir

    run: RunDir = report.run
    print(f"\ndone in {report.seconds:.1f}s. Output in {run.root.resolve()}:")
    for label, path in (
        ("config and provenance", run.run_json),
        ("prompts", run.prompts),
        ("images (Parquet; HF Image column)", run.images),
        ("curation (hashes, duplicates, splits)", run.curation),
        ("features", run.features),
        ("detectors (model, predictions, metrics, report)", run.detectors),
        ("quarantine", run.quarantine),
    ):
        if path.exists():
            print(f"  {label:<48} {path}")
    audit = run.curation / "bias_audit.parquet"
    if audit.exists():
        import pyarrow.parquet as pq

        auc = {r["when"]: r["auc"] for r in pq.read_table(audit).to_pylist()
               if r["property"] == "format_only_auc" and r["source"] is None}
        moments = ", ".join(f"{k} {v:.2f}" for k, v in auc.items() if v is not None)
        print(f"\nbias audit ({run.curation / 'bias_audit.md'}): format-only classifier AUC {moments}")
    if run.features.exists():
        print("\nfeature stores (aigi features RUN):")
        _list_stores(run.root)
    for md in sorted(run.features.glob("anomaly-*/anomaly_scores.md")):
        table = [ln for ln in md.read_text(encoding="utf-8").splitlines() if ln.startswith("|")]
        print(f"\nAnomaly Score per generator ({md}):")
        print("\n".join(table))
    for r in report.results:
        if r.label.startswith("detect/"):
            d = _detector_dir(r, run)
            if d is not None:
                print(f"\n{r.label}: test split ({d / 'report.md'})")
                print((d / "table.txt").read_text(encoding="utf-8").rstrip())


def _detector_dir(result, run):
    if result.summaries:
        return Path(result.summaries[0]["dir"])
    import json

    from aigi.pipeline.runner import plan_path

    plan = json.loads(plan_path(run.logs, result.label).read_text(encoding="utf-8"))
    return (run.root / plan["units"][0]["output"]).parent if plan["units"] else None


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from aigi.pipeline.quarantine import quarantine_counts
    from aigi.pipeline.runner import stage_costs, stage_status

    root = Path(args.run)
    if not (root / "run.json").exists():
        raise FileNotFoundError(f"{root} is not an aigi run directory (no run.json)")
    rows = stage_status(root / "logs")
    bad = quarantine_counts(root)
    costs = stage_costs(root / "logs")
    for r in rows:
        r.update(bad.get(r["stage"], {"quarantined": 0, "skipped": 0}))
        r["cost"] = costs.get(r["stage"])
    if args.json:
        print(json.dumps({"run": str(root), "stages": rows}, indent=1))
        return 0
    if not rows:
        print(f"{root}: no stage planned yet")
        return 0
    width = max(len(r["stage"]) for r in rows)
    print(f"{'stage':<{width}}  units done  {'items done':>16}  {'work s':>8} {'GPU s':>7} {'items/s':>8} {'peak GPU':>9}")
    for r in rows:
        state = "done" if r["done"] == r["total"] else "incomplete"
        if r.get("failed_items"):
            state += f", {r['failed_items']} items failed (a re-run retries them)"
        if r.get("stale"):
            state += f", {r['stale']} outputs from another config"
        items = f"{r['items_done']}/{r['items_total']} {r['item_name']}" if r["items_total"] else ""
        c = r["cost"] or {}
        rate = f"{c['items_per_s']:.1f}" if c.get("items_per_s") else "-"
        peak = f"{c['peak_gpu_bytes'] / 2**30:.2f} GiB" if c.get("peak_gpu_bytes") else "-"
        cost = f"{c.get('work_s', 0.0):>8.1f} {c.get('gpu_s', 0.0):>7.1f} {rate:>8} {peak:>9}" if c else f"{'-':>8} {'-':>7} {'-':>8} {'-':>9}"
        extra = f"  ({r['quarantined']} quarantined, {r['skipped']} skipped)" if r["quarantined"] or r["skipped"] else ""
        print(f"{r['stage']:<{width}}  {r['done']:>4}/{r['total']:<5} {items:>16}  {cost}  {state}{extra}")
    if bad:
        print(f"quarantine: {sum(q['quarantined'] for q in bad.values())} inputs could not be used, "
              f"{sum(q['skipped'] for q in bad.values())} files were not images; reasons in {root / 'quarantine'}")
    print("work s: seconds of the units run (costs recorded per unit, the latest run of each); "
          "GPU s: those on a GPU")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from aigi.pipeline.train import detect

    features = [f for f in (args.features or "").split(",") if f] or None
    protocols = [p for p in (args.protocol or "").split(",") if p] or None
    detect(args.run, [d for d in (args.detector or "").split(",") if d], features, protocols, args.seeds)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format == "webdataset":
        from aigi.manifests.export_wds import export_webdataset

        out = export_webdataset(args.run, args.out, include_dropped=args.include_dropped)
        print(f"exported {args.run} to {out} (WebDataset tar shards per split; manifest.json lists their sha256)")
        return 0
    from aigi.manifests.export import export_run

    out = export_run(args.run, args.out, include_dropped=args.include_dropped)
    print(f"exported {args.run} to {out} (a Hugging Face dataset folder: datasets.load_dataset({str(out)!r}))")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from aigi.manifests.verify import format_problems, verify_export, verify_run

    path = Path(args.path)
    if (path / "run.json").exists():
        problems = verify_run(path)
    elif (path / "README.md").exists() and (path / "data").is_dir():
        problems = verify_export(path)
    else:
        raise FileNotFoundError(f"{path} is neither an aigi run directory (run.json) nor an export (README.md + data/)")
    if problems:
        print(format_problems(problems))
        print(f"{path}: {len(problems)} problem(s)")
        return 1
    print(f"{path}: verified, no problem found")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from aigi.pipeline.report_html import build_report

    out = build_report(args.run, args.out, samples=args.samples)
    print(out)
    return 0


def _summary(cls: type) -> str:
    """First line of the class docstring, else of its module's (the file's own summary)."""
    doc = cls.__doc__ if "__doc__" in vars(cls) and cls.__doc__ else sys.modules[cls.__module__].__doc__
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


def _cmd_generators(args: argparse.Namespace) -> int:
    from aigi.generators.registry import get, names

    if args.config:
        return _list_config_generators(args.config)
    print(f"{'family':<18} {'conditioning':<12} {'settings it uses':<48} {'aligned modes':<38} summary")
    for name in names():
        try:
            cls = get(name)
        except ImportError as e:  # a family whose optional dependency is missing fails alone
            print(f"{name:<18} {'-':<12} {'-':<48} {'-':<38} unavailable: {e}")
            continue
        honours = ", ".join(k for k in ("steps", "guidance", "scheduler", "size", "negative_prompt") if k in cls.honours)
        modes = ", ".join(sorted(cls.aligned_modes)) or "-"
        print(f"{name:<18} {cls.conditioning:<12} {honours:<48} {modes:<38} {_summary(cls)}")
    return 0


def _list_config_generators(path: str) -> int:
    from aigi.core.configtools import to_dict
    from aigi.manifests.revision import resolve_revision
    from aigi.pipeline.config import load_config

    config = load_config(path)
    for g in config.generators:
        settings = {k: v for k, v in to_dict(g).items() if k in ("steps", "guidance", "scheduler", "size", "negative_prompt", "dtype")}
        print(f"{g.name:<20} {g.family:<18} {g.model}  (revision {resolve_revision(g.model, g.revision)})")
        print(f"{'':<20} {settings}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    if args.run:
        return _list_stores(Path(args.run))
    from aigi.core.configtools import to_dict
    from aigi.features.registry import get, names

    for name in names():
        cls = get(name)
        print(f"{name:<12} v{cls.version}  {_summary(cls)}")
        for k, v in to_dict(cls.Config()).items():
            print(f"    {k} = {v!r}")
    return 0


def _list_stores(root: Path) -> int:
    from aigi.features.store import store_summary

    if not (root / "run.json").exists():
        raise FileNotFoundError(f"{root} is not an aigi run directory (no run.json)")
    stores = sorted(p for p in (root / "features").glob("*-*") if p.is_dir())
    if not stores:
        print(f"{root}: no feature store yet")
        return 0
    for folder in stores:
        s = store_summary(folder)
        print(f"{folder.name}  {s['rows']} rows, {s['shards']} shards, {_size(s['bytes'])}, "
              f"{_size(s['bytes_per_image'])}/image, revision {s.get('model_revision') or '-'}")
        for col, c in (s.get("columns") or {}).items():
            print(f"    {col:<14} {c['dtype']:<8} {tuple(c['shape'])}")
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aigi",
        description="Build corpora for detecting AI-generated images: generate, curate, cache "
        "detector features, train and evaluate detectors.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_exec_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--scheduler", metavar="ADDR", help="attach to an existing Dask scheduler (tcp://host:8786)")
        sp.add_argument("--serial", action="store_true", help="run units in this process, without Dask")
        sp.add_argument("--allow-existing-out", action="store_true",
                        help="write into a non-empty run directory that aigi did not make")

    sp = sub.add_parser("demo", help="run the whole pipeline offline on tiny random-weight models",
                        description="Run the whole pipeline offline on tiny random-weight stand-in models "
                        "and real photographs shipped with scikit-image. A re-run skips finished work.")
    sp.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    add_exec_flags(sp)
    sp.set_defaults(func=_cmd_demo)

    sp = sub.add_parser("run", help="run a config", description="Run every stage of a TOML run config. "
                        "Finished units are skipped; missing ones are done.")
    sp.add_argument("config", help="the run config (TOML)")
    sp.add_argument("--out", help="run directory (overrides [run] out)")
    sp.add_argument("--plan", action="store_true", help="validate the config and print the stages and "
                    "their unit counts without running anything (loads no model, writes nothing)")
    add_exec_flags(sp)
    sp.set_defaults(func=_cmd_run)

    sp = sub.add_parser("status", help="units done per stage of a run, and what they cost",
                        description="Show, per stage, how many units of a run directory are done, the "
                        "inputs quarantined, and the cost of the units run: seconds, GPU-seconds, items/s, "
                        "peak GPU memory.")
    sp.add_argument("run", help="the run directory")
    sp.add_argument("--json", action="store_true", help="one JSON object, for machines")
    sp.set_defaults(func=_cmd_status)

    for cmd, text in (
        ("train", "train detectors on a run's cached features and evaluate them"),
        ("evaluate", "evaluate detectors under the field's protocols (trains what is missing)"),
    ):
        sp = sub.add_parser(cmd, help=text, description=text[0].upper() + text[1:] + ". Reads RUN/config.toml; "
                            "the features must be cached. A detector already trained on the same inputs "
                            "with the same settings is reused.")
        sp.add_argument("run", help="the run directory")
        sp.add_argument("--detector", help="detector(s), comma-separated (default: the run's, else logreg)")
        sp.add_argument("--features", help="feature(s) a single-input detector reads, comma-separated")
        sp.add_argument("--protocol", help="protocols, comma-separated: per_generator, cross_generator, "
                        "leave_one_generator_out, leave_one_family_out, chronological")
        sp.add_argument("--seeds", type=int, help="train with this many seeds; report mean ± std")
        sp.set_defaults(func=_cmd_train)

    sp = sub.add_parser("export", help="write a run as a Hugging Face dataset folder with its card",
                        description="Write the curated corpus of a run as a Hugging Face dataset folder: "
                        "data/<split>/*.parquet (Image and ClassLabel features) and a README.md dataset card "
                        "with counts, generation settings, the normalization policy, the bias audit and checksums.")
    sp.add_argument("run", help="the run directory")
    sp.add_argument("--out", required=True, help="the export folder")
    sp.add_argument("--include-dropped", action="store_true", help="also the rows deduplication dropped")
    sp.add_argument("--format", choices=("hf", "webdataset"), default="hf",
                    help="hf: a Hugging Face dataset folder (default); webdataset: tar shards per split")
    sp.set_defaults(func=_cmd_export)

    sp = sub.add_parser("verify", help="check a run directory or an export; exit 1 with the problems",
                        description="Check every shard opens with a schema this aigi reads, every planned "
                        "output exists, every image decodes and matches its sha256, ids are unique and counts "
                        "agree between stages (a run); or every data file matches the card's checksum (an export).")
    sp.add_argument("path", help="a run directory or an export folder")
    sp.set_defaults(func=_cmd_verify)

    sp = sub.add_parser("report", help="write one self-contained HTML page about a run",
                        description="Write one self-contained HTML page about a run (images inline, no "
                        "external file or URL): its stages, counts per source and split, sample images "
                        "(aligned fakes beside their real images), the bias audit and the detectors' "
                        "metrics and plots. Prints the page's path.")
    sp.add_argument("run", help="the run directory")
    sp.add_argument("--out", help="the HTML file (default: RUN/report.html)")
    sp.add_argument("--samples", type=int, default=8, help="images shown per source (default: 8)")
    sp.set_defaults(func=_cmd_report)

    sp = sub.add_parser("generators", help="list generator families, or a config's generators",
                        description="Without CONFIG: the registered generator families, their conditioning "
                        "and the sampling settings each uses. With CONFIG: its generators, their models "
                        "with the resolved revision, and their settings.")
    sp.add_argument("config", nargs="?", help="a run config (TOML)")
    sp.set_defaults(func=_cmd_generators)
    sp = sub.add_parser("features", help="list feature extractors, or a run's feature stores",
                        description="Without RUN: the registered feature extractors and their config "
                        "defaults. With RUN: the run's feature stores with their columns, shapes, rows "
                        "and bytes per image.")
    sp.add_argument("run", nargs="?", help="a run directory")
    sp.set_defaults(func=_cmd_features)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from aigi.core.configtools import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"aigi: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aigi: interrupted; finished units are kept, re-run to continue", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `aigi status RUN | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # one line for the user; the traceback on demand
        if os.environ.get("AIGI_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"aigi: error: {type(e).__name__}: {msg} (set AIGI_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
