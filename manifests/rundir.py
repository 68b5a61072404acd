"""The run directory (design.md §3): one place that knows where every output lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Made in every directory aigi creates for a run (or the demo), before anything else: aigi
#: writes only into directories that are new, empty, or carry it (or a run.json).
MARKER = ".aigi-run"


class NotARunDir(RuntimeError):
    """`out` is a directory with other people's files in it."""


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

    def is_ours(self) -> bool:
        """True when aigi may write here: missing, empty, or already an aigi run directory."""
        if not self.root.exists():
            return True
        if not self.root.is_dir():
            return False
        return (self.root / MARKER).exists() or self.run_json.exists() or not any(self.root.iterdir())

    def claim(self, allow_existing: bool = False) -> RunDir:
        """Create the directory (or adopt it) and mark it aigi's; refuse a non-empty directory
        aigi did not make unless `allow_existing`, naming it and what is in it."""
        if not self.is_ours() and not allow_existing:
            if not self.root.is_dir():
                raise NotARunDir(f"{self.root}: exists and is not a directory; choose another run directory")
            some = sorted(p.name for p in self.root.iterdir())[:5]
            raise NotARunDir(
                f"{self.root}: is not empty ({', '.join(some)}{', ...' if len(some) == 5 else ''}) and was "
                "not made by aigi; choose a new run directory (or pass --allow-existing-out to write into it)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / MARKER
        if not marker.exists():
            marker.write_text("made by aigi; aigi writes only into directories that carry this file\n",
                              encoding="utf-8")
        return self

    def make(self) -> RunDir:
        for d in (self.root, self.logs, self.quarantine):
            d.mkdir(parents=True, exist_ok=True)
        return self
