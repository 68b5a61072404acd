"""Per-worker state: models load once per worker process and stay resident.

A stage's state (its loaded model) is cached under the stage's setup key. Only the most recent
few are kept, so a worker that moves on to the next generator frees the previous one's memory.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from typing import Any

from aigi.core.determinism import THREADS, exclusive, pinned_threads
from aigi.core.devices import resolve_device
from aigi.pipeline.stage import SetupFailed, Stage, Unit

MAX_RESIDENT = 1

_lock = threading.Lock()
_cache: OrderedDict[str, Any] = OrderedDict()
#: Setups that failed in this worker, by key: the next units of the stage fail at once with the
#: same error instead of loading (and failing) again, unit after unit.
_failed: dict[str, SetupFailed] = {}


def state_for(stage: Stage) -> Any:
    key = stage.setup_key()
    if key is None:
        return None
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        if key in _failed:
            raise _failed[key]
        while len(_cache) >= MAX_RESIDENT:
            _cache.popitem(last=False)
            gc.collect()
            _empty_cuda_cache()
        quiet_libraries()
        try:
            state = stage.setup(resolve_device(stage.device_request()))
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            _failed[key] = SetupFailed(f"{stage.label}: setup failed: {type(e).__name__}: {msg}")
            raise _failed[key] from e
        _cache[key] = state
        return state


def quiet_libraries() -> None:
    """Silence per-load progress bars: aigi prints its own progress per stage."""
    import importlib

    for mod in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            importlib.import_module(mod).disable_progress_bar()
        except ImportError:
            pass


def _empty_cuda_cache() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def execute_unit(stage: Stage, unit: Unit) -> dict[str, Any]:
    """Run one unit where this function is called (a Dask worker, or the current process); the
    summary carries its cost: seconds, the device, and the peak GPU memory it allocated."""
    run_cfg = getattr(getattr(stage.ctx, "config", None), "run", None)
    with pinned_threads(getattr(run_cfg, "torch_threads", THREADS)):
        t0 = time.perf_counter()
        state = state_for(stage)
        t1 = time.perf_counter()
        # one unit at a time per loaded model: a diffusers pipeline keeps its sampler's state
        with exclusive(stage.setup_key() if stage.gpu else None):
            cuda = _cuda()
            if cuda is not None:
                cuda.reset_peak_memory_stats()
            summary = dict(stage.process(unit, state) or {})
    summary.setdefault("items", unit.n_items)
    summary["key"] = unit.key
    summary["setup_s"] = t1 - t0
    summary["work_s"] = time.perf_counter() - t1
    summary["gpu"] = cuda is not None and stage.gpu
    summary["peak_gpu_bytes"] = int(cuda.max_memory_allocated()) if cuda is not None else 0
    return summary


def _cuda() -> Any:
    """torch.cuda when torch is loaded and a GPU is there (never imports torch itself)."""
    import sys

    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() else None


def clear() -> None:
    with _lock:
        _cache.clear()
        _failed.clear()
