"""Prompts from a plain text file: one prompt per line; blank lines and `#` comments skipped."""

from __future__ import annotations

from pathlib import Path


def file_prompts(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            rows.append({"prompt": text, "class_id": None, "class_name": None})
    if not rows:
        raise ValueError(f"prompt file {path} holds no prompts")
    return rows
