"""The generator registry: `generators/<family>.py` defines the family `<family>`."""

from __future__ import annotations

from aigi.generators.base import Generator
from aigi.pipeline.plugins import Registry

registry: Registry[Generator] = Registry("aigi.generators", Generator, "generator family")


def names() -> list[str]:
    return registry.names()


def get(family: str) -> type[Generator]:
    return registry.get(family)
