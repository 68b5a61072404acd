"""The run config: one TOML file parsed into frozen, validated dataclasses (design.md §3).

Relative paths in the config are resolved against the current directory, as given on the
command line. Every error names the file and the key.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from aigi.core.configtools import ConfigError, Invalid, build, check, to_dict
from aigi.core.devices import DEVICE_RE
from aigi.curation.normalize import NormalizeConfig
from aigi.curation.sources.config import RealSourceConfig
from aigi.generators.base import GeneratorConfig

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
    """Empty `address`: an embedded LocalCluster; "tcp://host:8786" or "tls://...": an existing cluster.

    The embedded cluster listens on loopback only, with TLS and credentials made for this run
    (`tls = true`), so other users of the machine cannot submit work to it. `dashboard_address` must
    be on loopback unless `dashboard_public = true`. A stage whose units make no progress for
    `stall_timeout` seconds while no worker can run them (none offers its resource) stops the run."""

    address: str = ""
    n_workers: int = 0  # 0: one per GPU, or one on a CPU-only machine
    threads_per_worker: int = 1
    dashboard_address: str = "127.0.0.1:0"
    dashboard_public: bool = False
    tls: bool = True
    stall_timeout: float = 300.0

    def __post_init__(self) -> None:
        check(self.n_workers >= 0, "n_workers", "must be >= 0 (0 = automatic)")
        check(self.threads_per_worker > 0, "threads_per_worker", "must be > 0")
        check(self.stall_timeout > 0, "stall_timeout", "must be > 0 seconds")
        # ":8787" binds every interface, like "0.0.0.0:8787"; "" turns the dashboard off
        host = self.dashboard_address.rsplit(":", 1)[0].strip("[]")
        check(
            self.dashboard_public or not self.dashboard_address or host in ("127.0.0.1", "localhost", "::1"),
            "dashboard_address",
            f"{self.dashboard_address!r} is not on loopback: anyone who reaches it sees the run's "
            "tasks and logs; set dashboard_public = true to allow it",
        )


@dataclass(frozen=True)
class PromptsSection:
    source: Literal["classes", "file", "real"] = "classes"
    path: str = ""
    #: source = "real": the real source (name) whose captions or classes become the prompts
    real: str = ""
    use: Literal["captions", "classes"] = "captions"
    classes: tuple[str, ...] = ()
    class_ids: tuple[int, ...] = ()
    templates: tuple[str, ...] = ("a photo of a {class}",)
    limit: int = 0

    def __post_init__(self) -> None:
        check(self.limit >= 0, "limit", "must be >= 0 (0 = no limit)")
        if self.source == "file":
            check(bool(self.path), "path", 'required when source = "file"')
        elif self.source == "classes" or self.use == "classes":
            check(bool(self.templates), "templates", "needs at least one template")
            for i, t in enumerate(self.templates):
                check("{class}" in t, f"templates[{i}]", f"{t!r} has no {{class}} placeholder")
            check(all(0 <= i < 1000 for i in self.class_ids), "class_ids", "ImageNet ids are 0..999")


@dataclass(frozen=True)
class DedupeSection:
    """Near-duplicates: pHash pairs within `radius` bits (dHash too when `confirm_dhash` > 0).

    `method = "centre"`: each cluster has a centre every member is within `radius` of (no
    chaining); "components": connected components of the pairs. `reference`: run directories of an
    existing corpus whose images new ones are checked against (incremental mode)."""

    radius: int = 8
    method: Literal["centre", "components"] = "centre"
    confirm_dhash: int = 0
    device: str = "cpu"
    reference: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check(0 <= self.radius <= 32, "radius", f"must be in 0..32 bits, got {self.radius}")
        check(0 <= self.confirm_dhash <= 64, "confirm_dhash", "must be in 0..64 (0 = off)")
        check(bool(DEVICE_RE.match(self.device)), "device", f"{self.device!r} is not a device (auto, cpu, cuda, cuda:N)")


@dataclass(frozen=True)
class PairSection:
    """How generated images are linked to real ones (aigi.curation.pairing)."""

    by: Literal["auto", "caption", "class", "parent", "none"] = "auto"
    k: int = 1

    def __post_init__(self) -> None:
        check(self.k >= 1, "k", f"must be >= 1, got {self.k}")


@dataclass(frozen=True)
class SplitSection:
    by: Literal["prompt", "class", "image", "real", "pair"] = "prompt"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    #: generator names or families whose images (and every group they touch) go to test
    holdout: tuple[str, ...] = ()
    #: near-duplicates that straddle splits: "report" them, or "merge" their groups first
    near_duplicates: Literal["report", "merge"] = "report"

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
    dedupe: DedupeSection = field(default_factory=DedupeSection)
    pair: PairSection = field(default_factory=PairSection)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
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
class EvaluateSection:
    """How detectors are evaluated (`aigi.detectors.protocols`)."""

    #: per_generator always; cross_generator trains one model per generator (GenImage's matrix)
    protocols: tuple[Literal["per_generator", "cross_generator", "leave_one_generator_out",
                             "leave_one_family_out", "chronological"], ...] = ("per_generator", "cross_generator")
    bootstrap: int = 1000  # resamples for the confidence intervals (0 = none)
    seeds: int = 1  # detector seeds to train; > 1 reports mean ± std
    #: perturbed copies of the test images (jpeg75, resize0.5, blur1, crop0.9, ...), featurized and
    #: evaluated as a grid (the robustness protocol); none by default
    perturbations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from aigi.curation.perturb import parse_variant

        check(self.bootstrap >= 0, "bootstrap", "must be >= 0 (0 = no intervals)")
        check(self.seeds >= 1, "seeds", "must be >= 1")
        for i, v in enumerate(self.perturbations):
            try:
                parse_variant(v)
            except ValueError as e:
                raise Invalid(f"perturbations[{i}]", str(e)) from None
        check(len(set(self.perturbations)) == len(self.perturbations), "perturbations", "has a repeated variant")


@dataclass(frozen=True)
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    dask: DaskSection = field(default_factory=DaskSection)
    prompts: PromptsSection | None = None
    reals: tuple[RealSourceConfig, ...] = ()
    generators: tuple[GeneratorConfig, ...] = ()
    curation: CurationSection = field(default_factory=CurationSection)
    feature_store: FeatureStoreSection = field(default_factory=FeatureStoreSection)
    features: dict[str, Any] = field(default_factory=dict)
    detectors: dict[str, Any] = field(default_factory=dict)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)
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
    if "reals" in data:
        raise ConfigError(f"{file}: reals: unknown key (real sources are [real] or [[real]] tables)")
    reals = _reals(data.pop("real", []), file)
    features_raw = data.pop("features", {})
    detectors_raw = data.pop("detectors", {})
    if "file" in data:
        raise ConfigError(f"{file}: file: unknown key")
    cfg: RunConfig = build(RunConfig, {**data, "file": file}, "", file)
    cfg = replace(cfg, reals=reals)

    features = _entries(features_raw, "features", feature_registry, file)
    detectors = _entries(detectors_raw, "detectors", detector_registry, file)
    for name, det in detectors.items():
        for feature in detector_registry.get(name)(det).features():
            if feature not in features:
                key = "feature" if hasattr(det, "feature") and det.feature == feature else "inputs"
                raise ConfigError(
                    f"{file}: detectors.{name}.{key}: feature {feature!r} is not configured "
                    f"(configured: {', '.join(features) or 'none'}; add a [features.{feature}] table)"
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
        if g.mode != "text":
            if not cfg.reals:
                raise ConfigError(f"{file}: generators[{i}].mode: {g.mode!r} makes fakes from real images; add a [real] source")
            if g.aligned.parent and g.aligned.parent not in [r.name for r in cfg.reals]:
                raise ConfigError(
                    f"{file}: generators[{i}].aligned.parent: {g.aligned.parent!r} is not a real source "
                    f"(have: {', '.join(r.name for r in cfg.reals)})"
                )
        elif family.conditioning == "class" and cfg.prompts is not None and cfg.prompts.source != "classes":
            raise ConfigError(
                f"{file}: generators[{i}].family: {g.family!r} is class-conditional and needs ImageNet "
                f'class prompts ([prompts] source = "classes"), got source = {cfg.prompts.source!r}'
            )
    if any(g.mode == "text" for g in cfg.generators) and cfg.prompts is None:
        raise ConfigError(f"{file}: prompts: generators are configured but there is no [prompts] table")
    for i, r in enumerate(cfg.reals):
        if r.name in seen:
            raise ConfigError(f"{file}: real[{i}].name: {r.name!r} is also a generator or real source name")
        seen.add(r.name)
    if cfg.prompts is not None and cfg.prompts.source == "real":
        names = [r.name for r in cfg.reals]
        if not names:
            raise ConfigError(f'{file}: prompts.source: "real" needs a [real] source')
        if cfg.prompts.real and cfg.prompts.real not in names:
            raise ConfigError(f"{file}: prompts.real: {cfg.prompts.real!r} is not a real source (have: {', '.join(names)})")
    holdout = set(cfg.curation.split.holdout)
    unknown = holdout - {g.name for g in cfg.generators} - {g.family for g in cfg.generators}
    if unknown:
        raise ConfigError(
            f"{file}: curation.split.holdout: {sorted(unknown)} name no configured generator or family"
        )
    if detectors and (not cfg.reals or not cfg.generators):
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
        reals=cfg.reals,
        generators=cfg.generators,
        curation=cfg.curation,
        feature_store=cfg.feature_store,
        features=features,
        detectors=detectors,
        evaluate=cfg.evaluate,
        file=file,
    )


def _reals(raw: Any, file: str) -> tuple[RealSourceConfig, ...]:
    """One [real] table (errors say `real.key`) or [[real]] tables (`real[i].key`)."""
    if isinstance(raw, dict):
        return (build(RealSourceConfig, raw, "real", file),)
    if not isinstance(raw, list):
        raise ConfigError(f"{file}: real: expected a [real] table or [[real]] tables")
    return tuple(build(RealSourceConfig, t, f"real[{i}]", file) for i, t in enumerate(raw))


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
