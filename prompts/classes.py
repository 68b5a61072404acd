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


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1,000 ILSVRC-2012 WordNet ids (sorted, n01440764 ... n15075141) in class-index order:
    synset i is class i of `imagenet_classes()`, the order of ImageNet folders and of torchvision."""
    text = resources.files("aigi.prompts").joinpath("imagenet_synsets.txt").read_text("utf-8")
    wnids = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError("bundled imagenet_synsets.txt is not 1000 sorted, unique wnids")
    return wnids


@lru_cache(maxsize=1)
def _class_index() -> tuple[dict[str, int], dict[str, int]]:
    """(exact: wnid or class name -> id, loose: normalized name -> id where unambiguous)."""
    names = imagenet_classes()
    exact = {w: i for i, w in enumerate(imagenet_synsets())}
    exact.update({n: i for i, n in enumerate(names)})
    # Case and "_" for " " are forgiven only where that leaves one class: "Cardigan" (the corgi)
    # and "cardigan" (the sweater) differ by case alone, so "CARDIGAN" names neither.
    loose: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        loose.setdefault(_loose(n), []).append(i)
    return exact, {k: v[0] for k, v in loose.items() if len(v) == 1}


def _loose(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).lower()


def lookup_class(name: str) -> tuple[int, str] | None:
    """(class_id, class name) for an ImageNet-1k wnid ("n01440764") or class name ("tench",
    "great_white_shark"); None for anything else (a custom class)."""
    exact, loose = _class_index()
    i = exact.get(name)
    if i is None:
        i = loose.get(_loose(name))
    return None if i is None else (i, imagenet_classes()[i])


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
