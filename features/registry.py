"""The feature registry: `features/<name>.py` defines the feature `<name>`."""

from __future__ import annotations

from aigi.features.base import FeatureExtractor
from aigi.pipeline.plugins import Registry

registry: Registry[FeatureExtractor] = Registry("aigi.features", FeatureExtractor, "feature")


def names() -> list[str]:
    return registry.names()


def get(name: str) -> type[FeatureExtractor]:
    return registry.get(name)
