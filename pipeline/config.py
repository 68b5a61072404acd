"""The run config: one TOML file parsed into frozen, validated dataclasses (design.md §3).

Relative paths in the config (and `--out`) are resolved once, when it loads, against the current
directory: the config then holds absolute paths, so Dask workers started in another directory
read and write the same files. Every error names the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
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
    """`torch_threads`: torch's CPU threads for every unit. 1 (what Dask's nanny gives a worker)
    makes the bytes of CPU-made images the same whichever worker or a serial run makes them; more
    is faster on a CPU-only machine, but those bytes then depend on it (docs/reproducibility.md)."""

    out: str = ""
    seed: int = 0
    torch_threads: int = 1

    def __post_init__(self) -> None:
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        check(1 <= self.torch_threads <= 1024, "torch_threads", f"must be 1..1024, got {self.torch_threads}")


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

    def identity(self) -> dict[str, Any]:
        """The config without where things are (what `config_fingerprint` hashes): the output
        directory, real sources' and the prompt file's paths, local model folders and reference
        runs are left out, so the same config gives the same fingerprint from any directory.
        What those paths hold is identified by content where it is used (unit producers, source
        listings, the weights' hash)."""
        d = self.to_dict()
        d["run"].pop("out")
        if d["prompts"] is not None:
            d["prompts"].pop("path")
        for r in d["reals"]:
            r.pop("path")
        for g in d["generators"]:
            if _is_local(g["model"]):
                g.pop("model")
        d["curation"]["dedupe"].pop("reference")
        for section in ("features", "detectors"):
            for table in d[section].values():
                where = [k for k, v in table.items()
                         if _path_key(k) or (_model_key(k) and isinstance(v, str) and _is_local(v))]
                for key in where:
                    table.pop(key)
        return d


def load_config(path: str | Path, out: str | None = None) -> RunConfig:
    """Read and validate a run config; `out` overrides `[run] out`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, file=str(path), out=out)


def parse_config(
    data: dict[str, Any], file: str = "<config>", out: str | None = None, base: str | Path | None = None
) -> RunConfig:
    """Validate a parsed config; relative paths resolve against `base` (default: the current
    directory)."""
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
        run = replace(run, out=out)
    if not run.out:
        raise ConfigError(f"{file}: run.out: required (or pass --out)")
    return _absolute_paths(
        RunConfig(
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
        ),
        Path.cwd() if base is None else Path(base),
    )


# ------------------------------------------------------------------------------------ paths
#
# Keys of feature and detector configs that name files: "model" or "<x>_model" is a hub id or a
# local folder; "path", "<x>_path" and "pretrained" are always local files or folders.


def _model_key(key: str) -> bool:
    return key == "model" or key.endswith("_model")


def _path_key(key: str) -> bool:
    return key in ("path", "pretrained") or key.endswith("_path")


def _is_local(model: str, base: Path | None = None) -> bool:
    """Whether a model string names a local folder rather than a hub id: an absolute path, one
    starting with ./ ../ or ~, or one that exists relative to `base` (diffusers' own rule:
    `from_pretrained` takes an existing folder before a hub id)."""
    if os.path.isabs(model) or model.startswith(("./", "../", "~")) or model in (".", ".."):
        return True
    return base is not None and os.path.exists(os.path.join(base, model))


def _absolute(path: str, base: Path) -> str:
    # normpath, not resolve(): a symlinked Hugging Face snapshot folder keeps its name
    return os.path.normpath(os.path.join(base, os.path.expanduser(path))) if path else path


def _model(model: str, base: Path) -> str:
    return _absolute(model, base) if _is_local(model, base) else model


def _absolute_fields(cfg: Any, base: Path) -> Any:
    """A feature or detector config with its path and local model keys made absolute."""
    changes = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not isinstance(value, str) or not value:
            continue
        if _path_key(f.name):
            changes[f.name] = _absolute(value, base)
        elif _model_key(f.name):
            changes[f.name] = _model(value, base)
    changes = {k: v for k, v in changes.items() if v != getattr(cfg, k)}
    return replace(cfg, **changes) if changes else cfg


def _absolute_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Every path of the config made absolute against `base`, once, at load."""
    base = Path(os.path.abspath(base))
    prompts = cfg.prompts
    if prompts is not None and prompts.path:
        prompts = replace(prompts, path=_absolute(prompts.path, base))
    dedupe = cfg.curation.dedupe
    return replace(
        cfg,
        run=replace(cfg.run, out=_absolute(cfg.run.out, base)),
        prompts=prompts,
        reals=tuple(replace(r, path=_absolute(r.path, base)) for r in cfg.reals),
        generators=tuple(
            g if (m := _model(g.model, base)) == g.model else replace(g, model=m) for g in cfg.generators
        ),
        curation=replace(
            cfg.curation, dedupe=replace(dedupe, reference=tuple(_absolute(r, base) for r in dedupe.reference))
        ),
        features={n: _absolute_fields(c, base) for n, c in cfg.features.items()},
        detectors={n: _absolute_fields(c, base) for n, c in cfg.detectors.items()},
    )


def check_inputs(cfg: RunConfig) -> None:
    """Every local input exists: real sources, the prompt file, local model folders and files,
    reference runs. Raises one ConfigError naming the file and each missing key, before any
    GPU hour is spent. A model string that is not a local path is a hub id, not checked here."""
    missing: list[str] = []

    def need(key: str, path: str, what: str, ok: bool) -> None:
        if not ok:
            missing.append(f"{key} = {path!r} ({what} not found)")

    if cfg.prompts is not None and cfg.prompts.source == "file":
        need("prompts.path", cfg.prompts.path, "file", os.path.isfile(cfg.prompts.path))
    for i, r in enumerate(cfg.reals):
        key = "real.path" if len(cfg.reals) == 1 else f"real[{i}].path"
        if r.source in ("imagefolder", "hf"):
            need(key, r.path, "folder", os.path.isdir(r.path))
        else:
            need(key, r.path, "file, folder or matching file", _source_exists(r.path))
    for i, g in enumerate(cfg.generators):
        if _is_local(g.model):
            need(f"generators[{i}].model", g.model, "model folder", os.path.isdir(g.model))
    for i, ref in enumerate(cfg.curation.dedupe.reference):
        need(f"curation.dedupe.reference[{i}]", ref, "run folder", os.path.isdir(ref))
    for section, tables in (("features", cfg.features), ("detectors", cfg.detectors)):
        for name, c in tables.items():
            for f in dataclasses.fields(c):
                value = getattr(c, f.name)
                if not isinstance(value, str) or not value:
                    continue
                if _path_key(f.name):
                    need(f"{section}.{name}.{f.name}", value, "file", os.path.exists(value))
                elif _model_key(f.name) and _is_local(value):
                    need(f"{section}.{name}.{f.name}", value, "model folder", os.path.isdir(value))
    if missing:
        raise ConfigError(f"{cfg.file}: input missing: {'; '.join(missing)}")


def _source_exists(path: str) -> bool:
    """A file, a folder, or a brace/glob pattern with at least one file for each expansion."""
    import glob

    from aigi.curation.sources import SourceError
    from aigi.curation.sources.paths import expand_braces

    if os.path.exists(path):
        return True
    try:
        patterns = expand_braces(path)
    except SourceError:
        return False
    for pattern in patterns:
        if glob.has_magic(pattern):
            if next(glob.iglob(pattern, recursive=True), None) is None:
                return False
        elif not os.path.isfile(pattern):
            return False
    return True


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


def load_run_config(root: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """A run directory's config as it ran, and its run.json: run.json's resolved config (its paths
    absolute, so it loads the same from any directory), else `config.toml` (its relative paths
    then resolve against the current directory)."""
    import json

    root = Path(root)
    run_json = root / "run.json"
    info = json.loads(run_json.read_text(encoding="utf-8")) if run_json.exists() else {}
    if "config" in info:
        data = dict(info["config"])
        data["real"] = data.pop("reals", [])  # to_dict spells [[real]] as the field `reals`
        return parse_config(data, file=str(run_json), out=str(root)), info
    if (root / "config.toml").exists():
        return load_config(root / "config.toml", out=str(root)), info
    raise FileNotFoundError(f"{root}: neither run.json nor config.toml; is this a run directory?")
