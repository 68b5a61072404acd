"""The prompt table: prompt rows from the configured source, each with a content-derived id."""

from __future__ import annotations

from typing import Any

from aigi.manifests.ids import content_id


def prompt_id(prompt: str) -> str:
    """Stable id of a prompt's text: the same prompt gets the same id in every run and source,
    so a split by prompt keeps it on one side across generators."""
    return "p" + content_id("prompt", prompt, length=15)


def build_prompt_table(section: Any, real_rows: list[dict] | None = None) -> list[dict]:
    """Rows with prompt_id, prompt, class_id, class_name, source for a `[prompts]` section.

    `real_rows` (prompt, class_id, class_name of real images) feed `source = "real"`. Duplicate
    prompt texts are kept once (first occurrence); `limit` > 0 keeps the first N.
    """
    from aigi.prompts.classes import class_prompts, resolve_classes
    from aigi.prompts.real import real_prompts
    from aigi.prompts.textfile import file_prompts

    if section.source == "classes":
        rows = class_prompts(resolve_classes(section.classes, section.class_ids), section.templates)
    elif section.source == "file":
        rows = file_prompts(section.path)
    elif section.source == "real":
        if real_rows is None:
            raise ValueError('prompts source "real" needs the real rows')
        rows = real_prompts(real_rows, section.use, section.templates)
    else:  # the config validates `source`; this guards programmatic use
        raise ValueError(f"unknown prompt source {section.source!r}")
    seen: set[str] = set()
    out = []
    for row in rows:
        pid = prompt_id(row["prompt"])
        if pid in seen:
            continue
        seen.add(pid)
        out.append({"prompt_id": pid, **row, "source": section.source})
        if section.limit and len(out) >= section.limit:
            break
    return out
