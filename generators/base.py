"""The Generator interface and the config every generator entry shares.

A generator family is one file in `generators/` (the file name is its registry key) that defines
one `Generator` subclass. A new model of an existing family is one `[[generators]]` config entry.
Constructors store; `load(device)` touches disk and GPU; `generate` is pure given its seeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from aigi.core.configtools import check, to_dict
from aigi.core.devices import DEVICE_RE
from aigi.manifests.ids import fingerprint

if TYPE_CHECKING:
    from PIL import Image

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
Dtype = Literal["float32", "float16", "bfloat16"]


@dataclass(frozen=True)
class GeneratorConfig:
    """One `[[generators]]` entry. `size` is [width, height] in pixels."""

    name: str
    family: str
    model: str
    revision: str = ""
    steps: int = 30
    guidance: float = 7.5
    size: tuple[int, int] = (512, 512)
    dtype: Dtype = "float32"
    scheduler: str = ""
    negative_prompt: str = ""
    images_per_prompt: int = 1
    batch_size: int = 4
    unit_size: int = 64
    device: str = "auto"
    release_date: str = ""
    license: str = ""

    def __post_init__(self) -> None:
        check(bool(NAME_RE.match(self.name)), "name", f"{self.name!r} is not a valid name (letters, digits, . _ -)")
        check(bool(self.model), "model", "must name a model id or a local folder")
        check(self.steps > 0, "steps", f"must be > 0, got {self.steps}")
        check(self.guidance >= 0, "guidance", f"must be >= 0, got {self.guidance}")
        check(all(s > 0 and s % 8 == 0 for s in self.size), "size", f"width and height must be positive multiples of 8, got {list(self.size)}")
        check(self.images_per_prompt > 0, "images_per_prompt", "must be > 0")
        check(self.batch_size > 0, "batch_size", "must be > 0")
        check(self.unit_size > 0, "unit_size", "must be > 0")
        check(bool(DEVICE_RE.match(self.device)), "device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def fingerprint(self) -> str:
        """Everything that changes the pixels; not how the work is cut or where it runs."""
        d = to_dict(self)
        for k in ("batch_size", "unit_size", "device", "release_date", "license"):
            d.pop(k)
        return fingerprint(d)


class Generator:
    """Base class of a generator family. Subclasses set `family` and implement the methods."""

    family: ClassVar[str]

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config

    def load(self, device: str) -> None:
        """Load the model onto `device` (e.g. "cpu", "cuda:0"). Called once per worker."""
        raise NotImplementedError

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One image per (prompt, seed), in order; image i depends only on prompts[i], seeds[i]."""
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """After `load`: model, revision (resolved commit or weights hash), pipeline, scheduler, dtype."""
        raise NotImplementedError

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """Build a tiny random-weight model of this family in `folder` (offline) and return a
        config that loads it through the same `from_pretrained` path a real model uses."""
        raise NotImplementedError
