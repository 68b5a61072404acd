"""Sampling settings as data: a fixed value, a list of choices or a range, drawn per image.

A `[[generators]]` entry may give `steps`, `guidance`, `scheduler`, `size` and
`negative_prompt` as one value, as a list to choose from, or (steps, guidance) as a
`{min, max}` range. Each image draws its own values from its seed, so one generator yields a
varied corpus that is reproducible row by row; every row records the values actually used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

from aigi.core.configtools import check

#: The drawn settings, in the order their uniform numbers are drawn.
SETTING_KEYS = ("steps", "guidance", "scheduler", "size", "negative_prompt")
#: A drawn guidance is rounded to this many decimals, so the value recorded in a row is the
#: value used, and a row can be regenerated from its record alone.
GUIDANCE_DECIMALS = 3
#: Bounds no real model reaches, so a typo (an extra zero, `1e9`) fails at load instead of as a
#: worker error, a stall or a MemoryError hours into a run: diffusers' DDPM-style schedulers refuse
#: more sampling steps than their 1000 training timesteps, and no family's model samples more
#: steps or sides above 4096 px.
MAX_STEPS = 1000
MAX_SIDE = 4096


@dataclass(frozen=True)
class IntRange:
    """`{min = 20, max = 50}`: an integer drawn uniformly from min..max, both included."""

    min: int
    max: int

    def __post_init__(self) -> None:
        check(self.min <= self.max, "max", f"must be >= min ({self.min}), got {self.max}")


@dataclass(frozen=True)
class FloatRange:
    """`{min = 3.0, max = 9.0}`: a number drawn uniformly from [min, max]."""

    min: float
    max: float

    def __post_init__(self) -> None:
        check(self.min <= self.max, "max", f"must be >= min ({self.min}), got {self.max}")


Steps = Union[int, tuple[int, ...], IntRange]  # noqa: UP007 - the config builder reads typing.Union
Guidance = Union[float, tuple[float, ...], FloatRange]  # noqa: UP007
Size = Union[tuple[int, int], tuple[tuple[int, int], ...]]  # noqa: UP007
Text = Union[str, tuple[str, ...]]  # noqa: UP007


@dataclass(frozen=True)
class Settings:
    """The settings of one image. Images with equal settings are generated in one batch."""

    steps: int
    guidance: float
    scheduler: str  # "" = the model's own scheduler
    width: int
    height: int
    negative_prompt: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps, "guidance": self.guidance, "scheduler": self.scheduler,
            "width": self.width, "height": self.height, "negative_prompt": self.negative_prompt,
        }


def choices(value: Any, key: str) -> list[Any]:
    """The finite choices of setting `key` ([] for a range, which is not finite)."""
    if isinstance(value, (IntRange, FloatRange)):
        return []
    if key == "size":  # [w, h] is one size; [[w, h], ...] a list of sizes
        return list(value) if value and isinstance(value[0], tuple) else [tuple(value)]
    return list(value) if isinstance(value, tuple) else [value]


def is_varied(value: Any, key: str) -> bool:
    return isinstance(value, (IntRange, FloatRange)) or len(choices(value, key)) > 1


def draw(cfg: Any, seed: int) -> Settings:
    """The settings of the image with this seed under generator config `cfg`.

    Five uniform numbers are always drawn, one per setting in SETTING_KEYS order, from a
    generator seeded by the image's seed (whatever is fixed), so changing one setting from a
    fixed value to a list never changes what the others draw.
    """
    import numpy as np

    u = np.random.default_rng([int(seed), 0x5E77]).random(len(SETTING_KEYS))
    steps = _pick(cfg.steps, "steps", u[0])
    guidance = _pick(cfg.guidance, "guidance", u[1])
    if isinstance(cfg.guidance, FloatRange):
        guidance = round(float(guidance), GUIDANCE_DECIMALS)
    width, height = _pick(cfg.size, "size", u[3])
    return Settings(
        steps=int(steps),
        guidance=float(guidance),
        scheduler=str(_pick(cfg.scheduler, "scheduler", u[2])),
        width=int(width),
        height=int(height),
        negative_prompt=str(_pick(cfg.negative_prompt, "negative_prompt", u[4])),
    )


def _pick(value: Any, key: str, u: float) -> Any:
    if isinstance(value, IntRange):
        return value.min + min(int(u * (value.max - value.min + 1)), value.max - value.min)
    if isinstance(value, FloatRange):
        return value.min + u * (value.max - value.min)
    options = choices(value, key)
    return options[min(int(u * len(options)), len(options) - 1)]


def check_settings(cfg: Any) -> None:
    """Values that no image could use are config errors naming the key."""
    sizes = choices(cfg.size, "size")
    check(bool(sizes), "size", "needs at least one [width, height]")
    for s in sizes:
        check(len(s) == 2 and all(v > 0 and v % 8 == 0 for v in s), "size",
              f"width and height must be positive multiples of 8, got {list(s)}")
        check(max(s) <= MAX_SIDE, "size", f"width and height must be at most {MAX_SIDE} px, got {list(s)}")
    steps = [cfg.steps.min, cfg.steps.max] if isinstance(cfg.steps, IntRange) else choices(cfg.steps, "steps")
    check(bool(steps) and min(steps) > 0, "steps", f"must be > 0, got {cfg.steps}")
    check(max(steps) <= MAX_STEPS, "steps", f"must be at most {MAX_STEPS} (a scheduler's training "
          f"timesteps), got {cfg.steps}")
    guidance = ([cfg.guidance.min, cfg.guidance.max] if isinstance(cfg.guidance, FloatRange)
                else choices(cfg.guidance, "guidance"))
    # nan compares false with everything, so it is named before any comparison can pass it
    check(all(math.isfinite(g) for g in guidance), "guidance", f"must be a finite number, got {cfg.guidance}")
    check(bool(guidance) and min(guidance) >= 0, "guidance", f"must be >= 0, got {cfg.guidance}")
    for key in ("scheduler", "negative_prompt"):
        check(bool(choices(getattr(cfg, key), key)), key, "needs at least one value")
