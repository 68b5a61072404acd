"""Bit-identical generation whichever worker runs a unit.

On one machine and library stack, two things besides an image's seed and settings decide its
bytes (docs/reproducibility.md has the measurements):

- how many CPU threads torch uses: a convolution or matrix product split over a different
  number of threads adds its terms in a different order. `pin_threads` fixes the count; the
  worker calls it before every unit, so a Dask worker, a serial run and a worker started
  without Dask's nanny (which is what sets OMP_NUM_THREADS=1) use the same count;
- which rows a matrix product is computed with: CPU matrix-product kernels block a product by
  its shape, so a prompt encoded in one batch with other prompts can differ in the last bit
  from the same prompt encoded alone. The generators' text-embedding caches encode each prompt alone, so
  an embedding does not depend on which prompts the worker met before.

A difference of one unit in the last place matters only where it moves a pixel across a
rounding boundary of the uint8 conversion: a few values in a thousand images, each off by one.

A worker with more than one thread (`dask worker --nthreads 2`, `[dask] threads_per_worker`)
runs two units at once on the one model it has loaded. A diffusers pipeline is not safe for
that: its scheduler keeps the sampling loop's state (step index, earlier model outputs), so two
units interleave their steps and the images come out wrong (PNDM, SD 1.5's default: silently)
or fail (Euler, DPM-Solver++: IndexError). `exclusive` runs the units of one loaded model one
at a time.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: torch's intra-op threads for every unit. 1 is what Dask's nanny gives a worker
#: (OMP_NUM_THREADS=1), so the embedded cluster, an external one and a serial run agree.
THREADS = 1
#: Read when torch (OpenMP, MKL, OpenBLAS) loads: set before a unit that imports torch itself.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def pin_threads(n: int = THREADS) -> None:
    """Make torch use `n` intra-op threads in this process, for the unit about to run.

    The count is process-wide: two units running at once in one worker (`--nthreads 2`) both
    see `n`. Before torch is imported the environment is set instead, so its import picks `n`
    (torch is never imported here: a stage without torch does not pay for it)."""
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch = sys.modules.get("torch")
    if torch is None:
        for var in THREAD_ENV:
            os.environ[var] = str(n)
        return
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextmanager
def pinned_threads(n: int = THREADS) -> Iterator[None]:
    """`pin_threads(n)` for the body, then torch's previous count again (a serial run in the
    user's process leaves it as it found it)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    pin_threads(n)
    try:
        yield
    finally:
        if before is not None and before != n:
            torch.set_num_threads(before)


_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


@contextmanager
def exclusive(key: str | None) -> Iterator[None]:
    """Hold the lock of `key` (a stage's setup key: the model a worker loaded for it) while a
    unit runs, so two threads of one worker never sample with the same pipeline at once.
    `None` (a stage without a model) holds nothing."""
    if key is None:
        yield
        return
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        yield
