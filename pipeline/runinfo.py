"""run.json: the resolved config, its fingerprint, library versions, model revisions, hardware."""

from __future__ import annotations

import functools
import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from aigi.core.devices import cuda_device_count
from aigi.manifests.ids import fingerprint
from aigi.pipeline.runner import write_if_changed

LIBRARIES = (
    "aigi", "torch", "torchvision", "diffusers", "transformers", "accelerate", "tokenizers",
    "safetensors", "datasets", "pyarrow", "numpy", "pillow", "imagehash", "dask", "distributed",
    "scikit-learn", "scikit-image",
)


@functools.cache  # a process's versions and hardware do not change while it runs
def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.cache
def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": [],
    }
    if cuda_device_count():
        import subprocess

        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
        info["gpus"] = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
        import torch  # only on GPU machines: the CUDA and cuDNN that torch was built with

        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def environment() -> dict[str, Any]:
    """This process's library versions and hardware (run on each Dask worker)."""
    return {"versions": library_versions(), "hardware": hardware()}


def worker_environments(client: Any) -> list[dict[str, Any]]:
    """The distinct environments of a cluster's workers, each with how many workers have it."""
    envs: dict[str, dict[str, Any]] = {}
    for env in client.run(environment).values():
        key = fingerprint(env)
        envs.setdefault(key, {**env, "workers": 0})["workers"] += 1
    return sorted(envs.values(), key=lambda e: -e["workers"])


def environment_warnings(workers: list[dict[str, Any]]) -> list[str]:
    """Why the bytes a run makes could depend on which worker made them (docs/reproducibility.md)."""
    out = []
    versions = {json.dumps(w["versions"], sort_keys=True) for w in workers}
    if len(versions) > 1:
        out.append(f"the workers run {len(versions)} different sets of library versions")
    machines = {(w["hardware"].get("machine"), tuple(w["hardware"].get("gpus", []))) for w in workers}
    if len(machines) > 1:
        out.append(f"the workers run on {len(machines)} kinds of hardware")
    return out


def write_run_json(path: Path, config: Any, models: dict[str, Any] | None = None,
                   workers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write run.json, keeping model provenance recorded by earlier runs of the same directory.

    `workers`: the environments of the cluster's workers (library versions, hardware, how many
    workers have each); [] for a run in this process. The file is rewritten only when its content
    changes, so re-running a finished run leaves it untouched.
    """
    old: dict[str, Any] = {}
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
    cfg = config.to_dict()
    info = {
        "config": cfg,
        "config_fingerprint": fingerprint(config.identity()),
        "config_file": str(config.file),
        "versions": library_versions(),
        "hardware": hardware(),
        "models": {**old.get("models", {}), **(models or {})},
        "workers": workers if workers is not None else old.get("workers", []),
    }
    write_if_changed(path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info
