"""Registries that find entries by file name without importing the siblings.

`generators/stable_diffusion.py` is the entry `stable_diffusion`: listing entries reads file names
only, and getting one imports that one module, so a broken optional dependency of one family
never breaks the others.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T")

# Infrastructure modules that live beside the entries but are not entries.
RESERVED = frozenset({
    "base", "registry", "tiny", "store", "metrics", "report", "preprocess", "settings", "data", "protocols", "plots",
})


class UnknownEntry(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, package: str, base: type[T], kind: str) -> None:
        self.package = package
        self.base = base
        self.kind = kind

    def names(self) -> list[str]:
        pkg = importlib.import_module(self.package)
        return sorted(
            m.name
            for m in pkgutil.iter_modules(pkg.__path__)
            if not m.name.startswith("_") and m.name not in RESERVED and not m.ispkg
        )

    def get(self, name: str) -> type[T]:
        if name not in self.names():
            raise UnknownEntry(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or 'none'}"
            )
        try:
            module = importlib.import_module(f"{self.package}.{name}")
        except ImportError as e:  # this entry alone is unusable; its siblings are not affected
            missing = f" (pip install {e.name})" if getattr(e, "name", None) else ""
            raise ImportError(f"{self.kind} {name!r} cannot be imported: {e}{missing}") from e
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, self.base)
            and obj is not self.base
            and obj.__module__ == module.__name__
        ]
        if len(found) != 1:
            raise TypeError(f"{module.__name__} must define exactly one {self.base.__name__}, found {found}")
        return found[0]
