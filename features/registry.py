"""The feature registry: `features/<name>.py` defines the feature `<name>`."""

from __future__ import annotations

from aigi.core.registry import Registry
from aigi.features.base import FeatureExtractor

registry: Registry[FeatureExtractor] = Registry("aigi.features", FeatureExtractor, "feature")


def names() -> list[str]:
    return registry.names()


def get(name: str) -> type[FeatureExtractor]:
    return registry.get(name)
