"""What a run could not use: quarantine rows counted per stage, for the console and `aigi status`.

A reason starting with "skipped" is a file that is not an image (a caption sidecar, notes); every
other reason is an input that failed (undecodable, truncated, a decompression bomb, ...).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

SKIPPED = "skipped"


def quarantine_counts(run_root: Path) -> dict[str, dict[str, int]]:
    """{stage label: {"quarantined": n, "skipped": m}} over RUN/quarantine/**/*.parquet."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"quarantined": 0, "skipped": 0})
    for path in sorted((Path(run_root) / "quarantine").glob("**/*.parquet")):
        if path.name.startswith("."):
            continue
        t = pq.read_table(path, columns=["stage", "reason"])
        skipped = pc.starts_with(t.column("reason"), SKIPPED)
        for stage, skip in zip(t.column("stage").to_pylist(), skipped.to_pylist(), strict=True):
            counts[stage]["skipped" if skip else "quarantined"] += 1
    return dict(counts)


def summary_line(quarantined: int, skipped: int, where: Path) -> str:
    return f"{quarantined} quarantined, {skipped} skipped (not images); reasons in {where}"
