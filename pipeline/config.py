"""The run config: one TOML file parsed into frozen, validated dataclasses (design.md §3).

Relative paths in the config are resolved against the current directory, as given on the
command line. Every error names the file and the key.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aigi.core.configtools import ConfigError, Invalid, build, check, to_dict
from aigi.generators.base import NAME_RE, GeneratorConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class RunSection:
    out: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class DaskSection:
    """Empty `address`: an embedded LocalCluster; "tcp://host:8786": an existing cluster."""

    address: str = ""
    n_workers: int = 0  # 0: one per GPU, or one on a CPU-only machine
    threads_per_worker: int = 1
    dashboard_address: str = "127.0.0.1:0"

    def __post_init__(self) -> None:
        check(self.n_workers >= 0, "n_workers", "must be >= 0 (0 = automatic)")
        check(self.threads_per_worker > 0, "threads_per_worker", "must be > 0")


@dataclass(frozen=True)
class PromptsSection:
    source: Literal["classes", "file"] = "classes"
    path: str = ""
    classes: tuple[str, ...] = ()
    class_ids: tuple[int, ...] = ()
    templates: tuple[str, ...] = ("a photo of a {class}",)
    limit: int = 0

    def __post_init__(self) -> None:
        check(self.limit >= 0, "limit", "must be >= 0 (0 = no limit)")
        if self.source == "file":
            check(bool(self.path), "path", 'required when source = "file"')
        else:
            check(bool(self.templates), "templates", "needs at least one template")
            for i, t in enumerate(self.templates):
                check("{class}" in t, f"templates[{i}]", f"{t!r} has no {{class}} placeholder")
            check(all(0 <= i < 1000 for i in self.class_ids), "class_ids", "ImageNet ids are 0..999")


@dataclass(frozen=True)
class RealSection:
    path: str
    name: str = "real"
    source: Literal["imagefolder"] = "imagefolder"
    recursive: bool = True
    class_from_folder: bool = False
    unit_size: int = 256

    def __post_init__(self) -> None:
        check(bool(NAME_RE.match(self.name)), "name", f"{self.name!r} is not a valid source name")
        check(self.unit_size > 0, "unit_size", "must be > 0")


@dataclass(frozen=True)
class SplitSection:
    by: Literal["prompt", "class", "image"] = "prompt"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        check(all(f >= 0 for f in self.fractions), "fractions", "must be >= 0")
        check(
            abs(sum(self.fractions) - 1.0) < 1e-6,
            "fractions",
            f"train/val/test fractions must sum to 1, got {list(self.fractions)} (sum {sum(self.fractions):g})",
        )
        check(self.fractions[0] > 0, "fractions", "the train fraction must be > 0")


@dataclass(frozen=True)
class CurationSection:
    split: SplitSection = field(default_factory=SplitSection)


@dataclass(frozen=True)
class FeatureStoreSection:
    """How feature shards are encoded; the values stored are the same either way.

    float32 columns are always byte-stream-split (every reader handles it). For float16 it is
    opt-in: it makes float16 maps 23–35% smaller (benchmarks/feature_store.py), but DuckDB (2.0)
    cannot decode that encoding on float16 columns (it still reads the other columns).
    """

    float16_byte_stream_split: bool = False


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    dask: DaskSection = field(default_factory=DaskSection)
    prompts: PromptsSection | None = None
    real: RealSection | None = None
    generators: tuple[GeneratorConfig, ...] = ()
    curation: CurationSection = field(default_factory=CurationSection)
    feature_store: FeatureStoreSection = field(default_factory=FeatureStoreSection)
    features: dict[str, Any] = field(default_factory=dict)
    detectors: dict[str, Any] = field(default_factory=dict)
    file: str = "<config>"

    @property
    def out(self) -> Path:
        return Path(self.run.out)

    def to_dict(self) -> dict[str, Any]:
        d = to_dict(self)
        d.pop("file")
        return d


def load_config(path: str | Path, out: str | None = None) -> RunConfig:
    """Read and validate a run config; `out` overrides `[run] out`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, file=str(path), out=out)


def parse_config(data: dict[str, Any], file: str = "<config>", out: str | None = None) -> RunConfig:
    from aigi.detectors import registry as detector_registry
    from aigi.features import registry as feature_registry
    from aigi.generators import registry as generator_registry

    data = dict(data)
    features_raw = data.pop("features", {})
    detectors_raw = data.pop("detectors", {})
    if "file" in data:
        raise ConfigError(f"{file}: file: unknown key")
    cfg: RunConfig = build(RunConfig, {**data, "file": file}, "", file)

    features = _entries(features_raw, "features", feature_registry, file)
    detectors = _entries(detectors_raw, "detectors", detector_registry, file)
    for name, det in detectors.items():
        if det.feature not in features:
            raise ConfigError(
                f"{file}: detectors.{name}.feature: feature {det.feature!r} is not configured "
                f"(configured: {', '.join(features) or 'none'}; add a [features.{det.feature}] table)"
            )

    families = generator_registry.names()
    seen: set[str] = set()
    for i, g in enumerate(cfg.generators):
        if g.family not in families:
            raise ConfigError(
                f"{file}: generators[{i}].family: {g.family!r} is not a registered generator family "
                f"(registered: {', '.join(families)})"
            )
        if g.name in seen:
            raise ConfigError(f"{file}: generators[{i}].name: duplicate generator name {g.name!r}")
        seen.add(g.name)
        family = generator_registry.get(g.family)
        try:
            family.check_config(g)
        except Invalid as e:
            raise ConfigError(f"{file}: generators[{i}].{e.key}: {e.message}") from None
        if family.conditioning == "class" and cfg.prompts is not None and cfg.prompts.source != "classes":
            raise ConfigError(
                f"{file}: generators[{i}].family: {g.family!r} is class-conditional and needs ImageNet "
                f'class prompts ([prompts] source = "classes"), got source = {cfg.prompts.source!r}'
            )
    if cfg.generators and cfg.prompts is None:
        raise ConfigError(f"{file}: prompts: generators are configured but there is no [prompts] table")
    if cfg.real is not None and cfg.real.name in seen:
        raise ConfigError(f"{file}: real.name: {cfg.real.name!r} is also a generator name")
    if detectors and (cfg.real is None or not cfg.generators):
        raise ConfigError(
            f"{file}: detectors: training a detector needs both [real] images and [[generators]]"
        )

    run = cfg.run
    if out is not None:
        run = RunSection(out=out, seed=run.seed)
    if not run.out:
        raise ConfigError(f"{file}: run.out: required (or pass --out)")
    return RunConfig(
        run=run,
        dask=cfg.dask,
        prompts=cfg.prompts,
        real=cfg.real,
        generators=cfg.generators,
        curation=cfg.curation,
        feature_store=cfg.feature_store,
        features=features,
        detectors=detectors,
        file=file,
    )


def _entries(raw: Any, where: str, registry: Any, file: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: {where}: expected a table of [{where}.<name>] tables")
    out = {}
    known = registry.names()
    for name, table in raw.items():
        if name not in known:
            raise ConfigError(
                f"{file}: {where}.{name}: unknown {where[:-1]} (registered: {', '.join(known) or 'none'})"
            )
        out[name] = build(registry.get(name).Config, table, f"{where}.{name}", file)
    return out
