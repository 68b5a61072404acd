"""The Generator interface and the config every generator entry shares.

A generator family is one file in `generators/` (the file name is its registry key) that defines
one `Generator` subclass. A new model of an existing family is one `[[generators]]` config entry.
Constructors store; `load(device)` touches disk and GPU; `generate` is pure given its seeds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from aigi.core.configtools import Invalid, check, to_dict
from aigi.core.devices import DEVICE_RE
from aigi.generators._aligned import AlignedConfig, AlignedMode, check_mode
from aigi.generators.settings import (
    SETTING_KEYS,
    Guidance,
    Settings,
    Size,
    Steps,
    Text,
    check_settings,
    choices,
)
from aigi.manifests.ids import fingerprint

if TYPE_CHECKING:
    from PIL import Image

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
Dtype = Literal["float32", "float16", "bfloat16"]
Conditioning = Literal["text", "class", "none"]
#: More images of one prompt than any corpus uses: the plan holds a unit per `unit_size` images,
#: so `images_per_prompt = 1e8` would stall planning and exhaust memory before any image is made.
MAX_IMAGES_PER_PROMPT = 100_000
#: Pixels of one batch (batch_size x width x height). The decoded batch alone is 12 bytes a pixel
#: (float32 RGB) before any activation, so this caps it at 3 GiB: 256 images of 1024 x 1024.
MAX_BATCH_PIXELS = 1 << 28


@dataclass(frozen=True)
class GeneratorConfig:
    """One `[[generators]]` entry.

    `steps`, `guidance`, `scheduler`, `size` ([width, height]) and `negative_prompt` are sampling
    settings: each is one value, a list to choose from per image, or (steps, guidance) a
    `{min, max}` range, drawn per image from its seed (`aigi.generators.settings`).
    """

    name: str
    family: str
    model: str
    revision: str = ""
    steps: Steps = 30
    guidance: Guidance = 7.5
    size: Size = (512, 512)
    dtype: Dtype = "float32"
    scheduler: Text = ""
    negative_prompt: Text = ""
    images_per_prompt: int = 1
    batch_size: int = 4
    unit_size: int = 64
    device: str = "auto"
    release_date: str = ""
    license: str = ""
    #: The diffusers pipeline class (`generic` family; "" = found by diffusers).
    pipeline: str = ""
    #: Run the model repository's own Python code (`generic` family). Off unless asked.
    trust_remote_code: bool = False
    #: `torch.compile` the denoiser once per worker (default mode).
    compile: bool = False
    #: "text": images from prompts; any other mode makes one fake per real image of a real
    #: source (aligned fakes: `aigi.generators._aligned`), configured by `aligned`.
    mode: AlignedMode = "text"
    aligned: AlignedConfig = field(default_factory=AlignedConfig)

    def __post_init__(self) -> None:
        check(bool(NAME_RE.match(self.name)), "name", f"{self.name!r} is not a valid name (letters, digits, . _ -)")
        check(bool(self.model), "model", "must name a model id or a local folder")
        check_settings(self)
        check(self.images_per_prompt > 0, "images_per_prompt", "must be > 0")
        check(self.images_per_prompt <= MAX_IMAGES_PER_PROMPT, "images_per_prompt",
              f"must be at most {MAX_IMAGES_PER_PROMPT:,}, got {self.images_per_prompt:,} (add prompts for more images)")
        check(self.batch_size > 0, "batch_size", "must be > 0")
        width, height = max(choices(self.size, "size"), key=lambda s: s[0] * s[1])
        check(self.batch_size * width * height <= MAX_BATCH_PIXELS, "batch_size",
              f"{self.batch_size} images of {width} x {height} are {self.batch_size * width * height:,} pixels a "
              f"batch, more than {MAX_BATCH_PIXELS:,} ({12 * MAX_BATCH_PIXELS >> 30} GiB as float32 RGB); "
              f"use batch_size <= {max(MAX_BATCH_PIXELS // (width * height), 1)}")
        check(self.unit_size > 0, "unit_size", "must be > 0")
        check(bool(DEVICE_RE.match(self.device)), "device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        check_mode(self.mode, self.aligned)
        check(self.mode == "text" or self.images_per_prompt == 1, "images_per_prompt",
              "an aligned mode makes one fake per real image; use several entries for more")

    def identity(self) -> dict[str, Any]:
        """What changes the pixels: the settings and the weights' content, never the folder path,
        and not how the work is cut or where it runs."""
        from aigi.manifests.revision import resolve_revision

        d = to_dict(self)
        for k in ("name", "batch_size", "unit_size", "device", "release_date", "license", "model", "revision"):
            d.pop(k)
        if self.mode == "text":  # text-to-image entries keep the identity they had before modes
            d.pop("mode")
            d.pop("aligned")
        weights = resolve_revision(self.model, self.revision)
        # A local folder is its files' hash; a hub id is its name and (cached) commit.
        d["weights"] = {"resolved": weights} if Path(self.model).is_dir() else {"id": self.model, "resolved": weights}
        return d

    def fingerprint(self) -> str:
        return fingerprint(self.identity())


class Generator:
    """Base class of a generator family. Subclasses set `family` and implement the methods."""

    family: ClassVar[str]
    #: What an image is conditioned on: the prompt's text, its ImageNet `class_id`, or nothing.
    conditioning: ClassVar[Conditioning] = "text"
    #: The sampling settings the family uses. A setting it does not use must stay at its default
    #: (the config check names the key otherwise), and its row column is left empty.
    honours: ClassVar[frozenset[str]] = frozenset(SETTING_KEYS)
    #: Packages beyond aigi's own dependencies, named when the family cannot be imported.
    requires: ClassVar[tuple[str, ...]] = ()
    #: The aligned modes (`aigi.generators._aligned`) the family can run besides "text".
    aligned_modes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config

    @classmethod
    def check_config(cls, config: GeneratorConfig) -> None:
        """Raise `Invalid(key, ...)` for a value this family cannot honour."""
        defaults = {f.name: f.default for f in fields(GeneratorConfig)}
        for key in SETTING_KEYS:
            if key not in cls.honours and getattr(config, key) != defaults[key]:
                raise Invalid(key, f"the {cls.family} family ({cls.conditioning}-conditioned) cannot use {key}; remove it")
        if config.mode != "text" and config.mode not in cls.aligned_modes:
            have = ", ".join(sorted(cls.aligned_modes)) or "none"
            raise Invalid("mode", f"the {cls.family} family cannot run mode {config.mode!r} (it can: {have})")
        if config.mode == "vae_roundtrip":
            for key in ("steps", "guidance", "scheduler", "negative_prompt"):
                if getattr(config, key) != defaults[key]:
                    raise Invalid(key, 'mode = "vae_roundtrip" runs no sampler; remove it')
        generic = {"pipeline", "trust_remote_code"}
        for key in sorted(generic):
            if cls.family != "generic" and getattr(config, key) != defaults[key]:
                raise Invalid(key, f"only the generic family takes {key}")

    def load(self, device: str) -> None:
        """Load the model onto `device` (e.g. "cpu", "cuda:0"). Called once per worker."""
        raise NotImplementedError

    def generate(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Image.Image]:
        """One image per (prompt or class, seed), all with `settings`, in order; image i depends
        only on prompts[i] / class_ids[i], seeds[i] and the settings (batches of `batch_size`)."""
        raise NotImplementedError

    def generate_aligned(
        self, mode: str, parents: list[Image.Image], masks: list[Image.Image | None], prompts: list[str],
        seeds: list[int], settings: Settings, strength: float,
    ) -> list[Image.Image]:
        """One fake per parent (RGB, already at the settings' size), all with `settings` and
        `strength`, in order; mode is one of `aligned_modes`. `masks` are "L" images, white =
        repaint (inpaint), or None. Fake i depends only on parent i, mask i, prompt i, seed i."""
        raise NotImplementedError(f"the {self.family} family has no aligned modes")

    def provenance(self, settings: Settings) -> dict[str, Any]:
        """After `load`: model, revision (resolved commit or weights hash), pipeline, scheduler
        (class used for `settings`), scheduler_config (hash of its config), dtype, safety_checker
        (whether one ran)."""
        raise NotImplementedError

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """Build a tiny random-weight model of this family in `folder` (offline) and return a
        config that loads it through the same `from_pretrained` path a real model uses."""
        raise NotImplementedError


def scheduler_hash(scheduler: Any) -> str:
    """A short hash of a diffusers scheduler's config (its class name included)."""
    return fingerprint({"class": type(scheduler).__name__, "config": dict(scheduler.config)}, length=12)


def check_device(config: GeneratorConfig, device: str) -> None:
    """An explicit device, and no half precision on a CPU (unsupported or very slow there)."""
    import torch

    if device == "auto":
        raise ValueError("load() needs an explicit device such as 'cpu' or 'cuda:0', got 'auto'")
    if torch.device(device).type == "cpu" and config.dtype != "float32":
        raise ValueError(
            f"generator {config.name!r}: dtype {config.dtype!r} on a CPU device is unsupported or very "
            'slow for convolutions; use dtype = "float32" on CPU'
        )


class Schedulers:
    """The model's own scheduler and, by diffusers class name, the ones a config swaps in: each
    built once from the model's scheduler config and reused for every batch that draws it."""

    def __init__(self, base: Any, generator: str) -> None:
        self.base = base
        self.generator = generator
        self._built: dict[str, Any] = {"": base}

    def get(self, name: str) -> Any:
        if name and self.base is None:
            raise Invalid("scheduler", f"generator {self.generator!r}: the pipeline has no scheduler to swap")
        if name not in self._built:
            import diffusers

            cls = getattr(diffusers, name, None)
            if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
                raise Invalid("scheduler", f"generator {self.generator!r}: unknown diffusers scheduler {name!r}")
            self._built[name] = cls.from_config(self.base.config)
        return self._built[name]
