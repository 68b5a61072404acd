"""Prompts from a real source: its captions (D³ / COCO protocol: one prompt per real image) or its
classes (GenImage protocol: the templates over the classes the real images carry).

A caption becomes a prompt whose id is the caption's `prompt_id`, the one the real row carries,
so every image generated from it is linked back to its real image (pairing by caption).
"""

from __future__ import annotations

from typing import Any


def real_prompts(rows: list[dict[str, Any]], use: str, templates: tuple[str, ...]) -> list[dict]:
    """Prompt rows (prompt, class_id, class_name) from real rows with prompt / class_id / class_name.

    Rows are taken in the order given; the prompt table keeps the first of equal prompts.
    `use = "captions"` skips real rows without a caption; `use = "classes"` skips rows without a
    class. Either way, an empty result is an error: a corpus with no prompts is a misconfiguration.
    """
    from aigi.prompts.classes import class_prompts

    if use == "captions":
        out = [
            {"prompt": r["prompt"], "class_id": r.get("class_id"), "class_name": r.get("class_name")}
            for r in rows
            if r.get("prompt")
        ]
    elif use == "classes":
        seen: dict[tuple[int | None, str], None] = {}
        for r in rows:
            if r.get("class_name"):
                seen.setdefault((r.get("class_id"), r["class_name"]), None)
        out = class_prompts(sorted(seen, key=lambda c: (c[0] is None, c[0] or 0, c[1])), templates)
    else:
        raise ValueError(f"real prompts: use must be 'captions' or 'classes', got {use!r}")
    if not out:
        what = "caption" if use == "captions" else "class"
        raise ValueError(f"real prompts: no real image has a {what} (use = {use!r})")
    return out
