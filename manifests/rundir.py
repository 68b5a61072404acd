"""The run directory (design.md §3): one place that knows where every output lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def curation(self) -> Path:
        return self.root / "curation"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def detectors(self) -> Path:
        return self.root / "detectors"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def models(self) -> Path:
        """Local model folders the run itself made (the demo's tiny models)."""
        return self.root / "models"

    def image_dir(self, source: str) -> Path:
        return self.images / source

    def feature_dir(self, extractor: str, fp: str) -> Path:
        return self.features / f"{extractor}-{fp}"

    def detector_dir(self, name: str, fp: str) -> Path:
        return self.detectors / f"{name}-{fp}"

    def image_shards(self, source: str | None = None) -> list[Path]:
        """Finished image shards, sorted; temporary files are never listed."""
        base = self.images if source is None else self.image_dir(source)
        return sorted(p for p in base.glob("**/*.parquet") if not p.name.startswith("."))

    def make(self) -> RunDir:
        for d in (self.root, self.logs, self.quarantine):
            d.mkdir(parents=True, exist_ok=True)
        return self
