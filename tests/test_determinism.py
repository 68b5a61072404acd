"""A unit's images are the same bytes whichever worker runs it: whatever torch thread count the
worker started with, and whatever prompts the worker encoded before (docs/reproducibility.md).

`python tests/test_determinism.py` prints the measurements that docs/reproducibility.md quotes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

WORDS = "cat dog bird fish horse ship car tree frog deer truck plane lamp cup shoe road".split()
TEMPLATES = ("a photo of a {}", "a {}", "a drawing of a {}", "the {}")


def prompts(n: int) -> list[str]:
    return [t.format(w) for t in TEMPLATES for w in WORDS][:n]


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Any:
    """A tiny SD config whose images are sensitive enough to show a last-bit difference:
    64 x 64, two steps, eight images a batch."""
    from aigi.generators.stable_diffusion import StableDiffusion

    return StableDiffusion.tiny(tmp_path_factory.mktemp("sd"), steps=2, size=(64, 64), batch_size=8)


@pytest.fixture
def threads() -> Any:
    import torch

    before = torch.get_num_threads()
    yield torch
    torch.set_num_threads(before)


def loaded(cfg: Any) -> Any:
    from aigi.generators.stable_diffusion import StableDiffusion

    g = StableDiffusion(cfg)
    g.load("cpu")
    return g


def pixels(g: Any, ps: list[str], seeds: list[int] | None = None) -> np.ndarray:
    from aigi.generators.settings import draw

    seeds = list(range(len(ps))) if seeds is None else seeds
    return np.stack([np.asarray(im) for im in g.generate(ps, [None] * len(ps), seeds, draw(g.config, 0))])


def test_pin_threads_gives_the_same_bytes_whatever_thread_count_the_worker_started_with(sd, threads):
    from aigi.core.determinism import pin_threads

    ps = prompts(32)
    threads.set_num_threads(1)
    reference = pixels(loaded(sd), ps)
    threads.set_num_threads(2)  # a worker started without Dask's nanny, or a serial run
    pin_threads()
    # Measured without pin_threads: 2 threads instead of 1 move 13 values of 10 images by one.
    assert np.array_equal(pixels(loaded(sd), ps), reference)
    assert threads.get_num_threads() == 1


def test_pin_threads_before_torch_is_imported_sets_what_torch_reads_at_import():
    code = "from aigi.core.determinism import pin_threads; pin_threads(); import torch; print(torch.get_num_threads())"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_pin_threads_refuses_zero():
    from aigi.core.determinism import pin_threads

    with pytest.raises(ValueError, match="threads must be >= 1"):
        pin_threads(0)


def test_cached_embeddings_do_not_depend_on_the_batch_they_were_encoded_in():
    """SDXL, SD3, Flux and PixArt share `cached_pair`. This encoder, like a CPU matrix product,
    gives a text a value that depends on the batch it is encoded with."""
    import torch

    from aigi.core.lru import LRU
    from aigi.generators._pipeline import cached_pair

    def encode(batch: list[str]) -> tuple[Any, Any]:
        rows = [torch.tensor([float(len(t)), float(len(batch))]) for t in batch]
        return torch.stack(rows), torch.stack(rows) * 2

    texts = ["a cat", "a dog", "a bird"]
    fresh = cached_pair(LRU(16), texts, encode)
    seen = LRU(16)
    cached_pair(seen, ["a dog"], encode)  # an earlier unit on this worker
    after = cached_pair(seen, texts, encode)
    assert all(torch.equal(a, b) for a, b in zip(fresh, after, strict=True))


def test_a_units_images_do_not_depend_on_the_prompts_the_worker_met_before(sd, threads):
    """One worker runs the unit first; another ran an earlier unit that ended with every other
    prompt of this one (so they are in its embedding cache, each encoded alone)."""
    import torch

    threads.set_num_threads(1)
    ps = prompts(64)
    first = loaded(sd)
    reference = pixels(first, ps)
    other = loaded(sd)
    for p in ps[::2]:
        pixels(other, [p])
    # Measured without the fix: 36 of the 64 x 77 x 32 embedding values differ in the last bit,
    # and 4 values of 2 images by one.
    with torch.inference_mode():
        assert torch.equal(other._embed(ps), first._embed(ps))
    assert np.array_equal(pixels(other, ps), reference)



def test_two_units_at_once_on_one_loaded_model_give_the_images_of_one_after_the_other(sd, threads):
    """A worker with two threads runs two units on the model it loaded once. PNDM keeps its
    earlier model outputs in the scheduler: without `exclusive` the two units interleave their
    steps and (measured) nearly every value of both units' images is wrong, with no error."""
    import dataclasses
    import threading

    from aigi.core.determinism import exclusive

    threads.set_num_threads(1)
    g = loaded(dataclasses.replace(sd, scheduler="PNDMScheduler", steps=8))
    units = {"a": (prompts(4), [0, 1, 2, 3]), "b": (prompts(8)[4:], [4, 5, 6, 7])}
    alone = {k: pixels(g, *u) for k, u in units.items()}
    start, got, errors = threading.Barrier(2), {}, []

    def unit(k: str) -> None:
        start.wait()
        try:
            with exclusive("generator:tiny"):
                got[k] = pixels(g, *units[k])
        except Exception as e:  # noqa: BLE001 - reported below, with the unit
            errors.append((k, e))

    workers = [threading.Thread(target=unit, args=(k,)) for k in units]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    assert all(np.array_equal(got[k], alone[k]) for k in units)

def measure(n: int = 128) -> None:
    """Count the images (of `n`, 64 x 64, two steps) and the channel values that differ from one
    worker that runs everything in order with one torch thread, under each condition."""
    import dataclasses
    import tempfile

    import torch

    from aigi.core.determinism import pin_threads
    from aigi.generators.stable_diffusion import StableDiffusion

    cfg = StableDiffusion.tiny(Path(tempfile.mkdtemp()), steps=2, size=(64, 64), batch_size=8)
    ps = [f"{p}, {i}" for i in range(-(-n // 64)) for p in prompts(64)][:n]
    torch.set_num_threads(1)
    reference = pixels(loaded(cfg), ps)

    def report(what: str, got: np.ndarray) -> None:
        differ = got != reference
        print(f"{what:58s} {int(differ.reshape(n, -1).any(1).sum()):4d} of {n} images, "
              f"{int(differ.sum()):4d} values, max {int(np.abs(got.astype(int) - reference).max())}")

    report("the same worker again", pixels(loaded(cfg), ps))
    torch.set_num_threads(2)
    report("torch threads 2", pixels(loaded(cfg), ps))
    pin_threads()
    report("torch threads 2, then pin_threads()", pixels(loaded(cfg), ps))
    g = loaded(cfg)
    for p in ps[::2]:
        pixels(g, [p])
    report("a worker that met every other prompt before", pixels(g, ps))
    report("batch_size 1 instead of 8", pixels(loaded(dataclasses.replace(cfg, batch_size=1)), ps))


if __name__ == "__main__":
    measure(int(sys.argv[1]) if len(sys.argv) > 1 else 128)


def test_every_unit_runs_with_the_configured_thread_count_and_gives_it_back(tmp_path) -> None:
    """The wiring: `execute_unit` pins `[run] torch_threads` around each unit, in any process."""
    from types import SimpleNamespace

    import torch

    from aigi.manifests.rundir import RunDir
    from aigi.pipeline.stage import RunContext, Stage, Unit
    from aigi.pipeline.worker_state import execute_unit

    seen: list[int] = []

    class Probe(Stage):
        name = "probe"

        def plan(self) -> list[Unit]:
            return []

        def process(self, unit: Unit, state: object) -> dict:
            seen.append(torch.get_num_threads())
            return {"items": 0}

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for n in (1, 3):
            ctx = RunContext(config=SimpleNamespace(run=SimpleNamespace(torch_threads=n)), run=RunDir(tmp_path))
            execute_unit(Probe(ctx), Unit("probe", "u", str(tmp_path / "x"), "p"))
            assert torch.get_num_threads() == 2  # given back
        assert seen == [1, 3]
    finally:
        torch.set_num_threads(before)
