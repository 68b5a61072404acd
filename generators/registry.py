"""The generator registry: `generators/<family>.py` defines the family `<family>`."""

from __future__ import annotations

from aigi.core.registry import Registry
from aigi.generators.base import Generator

registry: Registry[Generator] = Registry("aigi.generators", Generator, "generator family")


def names() -> list[str]:
    return registry.names()


def get(family: str) -> type[Generator]:
    return registry.get(family)
