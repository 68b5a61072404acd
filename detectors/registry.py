"""The detector registry: `detectors/<name>.py` defines the detector `<name>`."""

from __future__ import annotations

from aigi.core.registry import Registry
from aigi.detectors.base import Detector

registry: Registry[Detector] = Registry("aigi.detectors", Detector, "detector")


def names() -> list[str]:
    return registry.names()


def get(name: str) -> type[Detector]:
    return registry.get(name)
