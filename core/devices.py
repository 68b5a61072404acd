"""Which device a worker uses: explicit when configured, else one GPU per worker."""

from __future__ import annotations

import os
import re

#: What a config's `device` key accepts.
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def resolve_device(requested: str) -> str:
    """"auto" → this worker's GPU if there is one, else "cpu"; anything else is kept as is."""
    if requested != "auto":
        return requested
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    count = torch.cuda.device_count()
    if "CUDA_VISIBLE_DEVICES" in os.environ and os.environ.get("AIGI_DASK_CUDA") == "1":
        return "cuda:0"  # dask-cuda pinned this worker's GPU as device 0
    return f"cuda:{_worker_index() % count}"


def _worker_index() -> int:
    """The embedded cluster names its workers 0..n-1; each takes the GPU of that index."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return 0
    try:
        return int(name)
    except (TypeError, ValueError):
        return 0


def cuda_device_count() -> int:
    """GPUs on this machine, asked without initialising CUDA in the calling process."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    if out.returncode != 0:
        return 0
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("GPU ")]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return min(len(lines), len([v for v in visible.split(",") if v.strip()]))
    return len(lines)
