"""Class-name prompts, GenImage protocol: "a photo of a {class}" over ImageNet-1k classes."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

DEFAULT_TEMPLATE = "a photo of a {class}"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in index order (short, disambiguated names)."""
    text = resources.files("aigi.prompts").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise RuntimeError(f"bundled imagenet_classes.txt has {len(names)} names, expected 1000")
    return names


def resolve_classes(names: tuple[str, ...] = (), ids: tuple[int, ...] = ()) -> list[tuple[int | None, str]]:
    """(class_id, class_name) pairs. Names found in ImageNet-1k get their index; other names are
    allowed (custom classes) with no id. With neither names nor ids: all 1,000 classes."""
    table = imagenet_classes()
    index = {n: i for i, n in enumerate(table)}
    out: list[tuple[int | None, str]] = []
    for i in ids:
        if not 0 <= i < len(table):
            raise ValueError(f"ImageNet class id {i} out of range 0..{len(table) - 1}")
        out.append((i, table[i]))
    out += [(index.get(n), n) for n in names]
    if not names and not ids:
        out = list(enumerate(table))
    return out


def class_prompts(classes: list[tuple[int | None, str]], templates: tuple[str, ...]) -> list[dict]:
    """One prompt row per (class, template), in class-major order."""
    rows = []
    for class_id, name in classes:
        for template in templates:
            rows.append(
                {"prompt": template.replace("{class}", name), "class_id": class_id, "class_name": name}
            )
    return rows
