"""`aigi run`: build the stages a config asks for and run them over the run directory."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from aigi.manifests.rundir import RunDir
from aigi.pipeline.config import RunConfig, check_inputs
from aigi.pipeline.events import EventLog
from aigi.pipeline.lock import run_lock
from aigi.pipeline.runinfo import environment_warnings, worker_environments, write_run_json
from aigi.pipeline.runner import StageResult, forget_other_plans, run_stages, write_if_changed
from aigi.pipeline.stage import RunContext, Stage


@dataclass
class RunReport:
    run: RunDir
    results: list[StageResult]
    seconds: float
    dashboard: str | None


def build_stages(ctx: RunContext) -> list[Stage]:
    from aigi.pipeline.stages.aligned import AlignedStage
    from aigi.pipeline.stages.anomaly_report import AnomalyReportStage
    from aigi.pipeline.stages.audit import AuditStage
    from aigi.pipeline.stages.common import normalizing
    from aigi.pipeline.stages.dedupe import DedupeStage
    from aigi.pipeline.stages.detect import DetectStage
    from aigi.pipeline.stages.features import FeatureStage, group_by_device
    from aigi.pipeline.stages.generate import GenerateStage
    from aigi.pipeline.stages.hash import HashStage
    from aigi.pipeline.stages.ingest import IngestStage
    from aigi.pipeline.stages.measure import MeasureStage
    from aigi.pipeline.stages.normalize import NormalizePlanStage, NormalizeStage
    from aigi.pipeline.stages.pair import PairStage
    from aigi.pipeline.stages.perturb import PerturbStage
    from aigi.pipeline.stages.prompts import PromptsStage
    from aigi.pipeline.stages.split import SplitStage

    cfg = ctx.config
    # Real sources first: their captions or classes may be the prompts.
    stages: list[Stage] = [IngestStage(ctx, r) for r in cfg.reals]
    text = [g for g in cfg.generators if g.mode == "text"]
    if text:
        stages.append(PromptsStage(ctx))
        stages += [GenerateStage(ctx, g) for g in text]
    # Aligned fakes: one per real image of their parent source.
    stages += [AlignedStage(ctx, g) for g in cfg.generators if g.mode != "text"]
    if cfg.generators or cfg.reals:
        stages += [HashStage(ctx), DedupeStage(ctx), PairStage(ctx), MeasureStage(ctx)]
        if normalizing(cfg):
            stages += [NormalizePlanStage(ctx), NormalizeStage(ctx)]
        stages += [AuditStage(ctx), SplitStage(ctx)]
        if cfg.evaluate.perturbations:
            stages.append(PerturbStage(ctx))
    stages += [FeatureStage(ctx, group) for group in group_by_device(cfg.features)]
    if "anomaly" in cfg.features and cfg.reals and cfg.generators:
        stages.append(AnomalyReportStage(ctx, cfg.features["anomaly"], seed=cfg.run.seed))
    stages += [DetectStage(ctx, name, c) for name, c in cfg.detectors.items()]
    return stages


def preview(config: RunConfig, stream: TextIO | None = None) -> list[tuple[str, tuple[int, int] | None]]:
    """Validate a config and print its stages with their unit counts, running nothing.

    Nothing is written; the run directory is not created. Stages that plan from the outputs of
    earlier ones (hashes, splits, features, detectors) are listed without counts."""
    from aigi.curation.sources import SourceError

    stream = stream or sys.stdout
    ctx = RunContext(config=config, run=RunDir(Path(config.run.out)))
    rows = []
    for stage in build_stages(ctx):
        try:
            counts = stage.preview()
        except (FileNotFoundError, SourceError) as e:  # an input not on this machine: say so, plan the rest
            rows.append((stage.label, None))
            stream.write(f"  {stage.label:<40} input missing here: {e}\n")
            continue
        rows.append((stage.label, counts))
        if counts is None:
            stream.write(f"  {stage.label:<40} planned from earlier stages' outputs\n")
        else:
            stream.write(f"  {stage.label:<40} {counts[0]:>7} units {counts[1]:>10} {stage.item_name}\n")
    return rows


def run(
    config: RunConfig,
    config_text: str | None = None,
    scheduler: str | None = None,
    serial: bool = False,
    stream: TextIO | None = None,
    allow_existing: bool = False,
) -> RunReport:
    """Run every stage of `config`; finished units are skipped, missing ones are done.

    Refused before anything is written: missing inputs, a non-empty `out` aigi did not make
    (unless `allow_existing`), a run directory another run holds. The config and run.json are
    recorded when the first stage starts work, or at the end when everything was already done."""
    from aigi.pipeline.cluster import DaskExecutor, SerialExecutor, dashboard_link, open_client

    stream = stream or sys.stdout
    t0 = time.perf_counter()
    rundir = RunDir(Path(config.run.out))
    # Refusals come before any write: a refused run leaves the directory's records as they were.
    check_inputs(config)
    rundir.claim(allow_existing)
    with run_lock(rundir.root, stream):
        rundir.make()
        ctx = RunContext(config=config, run=rundir)
        stages = build_stages(ctx)

        workers: list[dict[str, Any]] = []  # the cluster's worker environments; none in this process

        def write_records() -> None:
            # the config is recorded once it produces something (or finds all done), never when refused
            if config_text is not None:
                write_if_changed(rundir.config, config_text)
            write_run_json(rundir.run_json, config, workers=workers)
            # The plans of stages this config no longer has go: later stages plan from recorded plans.
            forget_other_plans(rundir.logs, [s.label for s in stages])

        dashboard = None
        if serial:
            EventLog(rundir.logs).write("run_start", where="serial (this process)")
            results = run_stages(stages, SerialExecutor(), rundir.logs, stream, before_work=write_records)
        else:
            with open_client(config.dask, scheduler) as client:
                dashboard = dashboard_link(client)
                where = scheduler or config.dask.address or "embedded LocalCluster"
                stream.write(f"dask: {where}" + (f", dashboard {dashboard}" if dashboard else "") + "\n")
                workers = worker_environments(client)
                for warning in environment_warnings(workers):
                    stream.write(f"warning: {warning}: the bytes of an image may depend on the worker that "
                                 "made it (docs/reproducibility.md); run.json lists them\n")
                EventLog(rundir.logs).write("run_start", where=where, dashboard=dashboard,
                                            workers=sum(w["workers"] for w in workers))
                executor = DaskExecutor(client, stall_timeout=config.dask.stall_timeout)
                results = run_stages(stages, executor, rundir.logs, stream, before_work=write_records)
        write_records()
        models: dict[str, Any] = {}
        for r in results:
            for s in r.summaries:
                models.update(s.get("provenance", {}))
        if models:
            write_run_json(rundir.run_json, config, models, workers=workers)
    return RunReport(rundir, results, time.perf_counter() - t0, dashboard)
