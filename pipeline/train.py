"""`aigi train` and `aigi evaluate`: detectors on the cached features of a finished run.

Both read the run's own config (as it ran: `run.json`, else `config.toml`), add or replace the asked detector with its
defaults (its input feature from `--features`) and the `[evaluate]` options, and run only the
detect stage: the features must already be cached (a missing one is an error naming it). A
detector already trained on the same inputs with the same settings is not trained again.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from aigi.core.configtools import ConfigError


def detect(
    run_dir: str | Path,
    detectors: list[str],
    features: list[str] | None = None,
    protocols: list[str] | None = None,
    seeds: int | None = None,
    stream: TextIO | None = None,
) -> list[Path]:
    """Train and evaluate `detectors` on the run in `run_dir`; return their output folders."""
    from aigi.detectors.registry import get, names
    from aigi.manifests.rundir import RunDir
    from aigi.pipeline.cluster import SerialExecutor
    from aigi.pipeline.config import load_run_config
    from aigi.pipeline.runner import run_stages
    from aigi.pipeline.stage import RunContext
    from aigi.pipeline.stages.detect import DetectStage

    stream = stream or sys.stdout
    root = Path(run_dir)
    if not (root / "run.json").exists():
        raise FileNotFoundError(f"{root} is not an aigi run directory (no run.json)")
    config, _ = load_run_config(root)
    chosen = dict(config.detectors)
    for name in detectors or list(chosen) or ["logreg"]:
        if name not in names():
            raise ConfigError(f"--detector: {name!r} is not a detector (registered: {', '.join(names())})")
        cfg = chosen.get(name) or get(name).Config()
        if features:
            cfg = _with_features(name, cfg, features, config)
        chosen[name] = cfg
    for name, cfg in chosen.items():
        for f in get(name)(cfg).features():
            if f not in config.features:
                raise ConfigError(f"detector {name}: feature {f!r} is not cached in {root} "
                                  f"(cached: {', '.join(config.features) or 'none'})")
    ev = config.evaluate
    if protocols is not None:
        ev = replace(ev, protocols=tuple(protocols))
    if seeds is not None:
        ev = replace(ev, seeds=seeds)
    config = replace(config, detectors=chosen, evaluate=ev)
    ctx = RunContext(config, RunDir(root))
    stages = [DetectStage(ctx, name, chosen[name]) for name in (detectors or list(chosen))]
    results = run_stages(stages, SerialExecutor(), ctx.run.logs, stream)
    out = []
    for stage, res in zip(stages, results, strict=True):
        [unit] = stage.plan()
        folder = Path(unit.output).parent
        out.append(folder)
        stream.write(f"\n{res.label}: test split ({folder / 'report.md'})\n")
        stream.write((folder / "table.txt").read_text(encoding="utf-8"))
    return out


def _with_features(name: str, cfg: Any, features: list[str], config: Any) -> Any:
    """A single-input head reads the first named feature (its first column unless the head's own
    column is one of that feature's)."""
    from aigi.pipeline.stages.features import make_extractor

    if not hasattr(cfg, "feature"):
        raise ConfigError(f"--features: detector {name} takes several inputs; set them in [detectors.{name}]")
    feature = features[0]
    if feature not in config.features:
        raise ConfigError(f"--features: {feature!r} is not cached in this run (cached: {', '.join(config.features)})")
    columns = list(make_extractor(feature, config.features[feature]).columns())
    column = cfg.column if cfg.column in columns else columns[0]
    return replace(cfg, feature=feature, column=column)
