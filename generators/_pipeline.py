"""What every diffusers-pipeline family shares: loading, scheduler swaps, batching, provenance.

A family subclasses `PipelineGenerator` and implements `_from_pretrained()` (the pipeline, built
on the CPU in the config's dtype) and `_batch(prompts, class_ids, seeds, settings)` (one call
of the pipeline for at most `batch_size` images, one CPU generator per image). Everything else —
moving to the device, eval mode, channels-last and `torch.compile` of the denoiser, the
scheduler cache, batching under `inference_mode`, the provenance record, pickling without the
model — happens here, the same way for every family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from aigi.generators.base import (
    Generator,
    GeneratorConfig,
    Schedulers,
    check_device,
    scheduler_hash,
)
from aigi.generators.settings import Settings, choices
from aigi.manifests.revision import resolve_revision

if TYPE_CHECKING:
    from PIL import Image


class PipelineGenerator(Generator):
    #: The pipeline attribute holding the denoiser: compiled when asked, channels-last on a GPU
    #: when it is a UNet (transformers gain nothing from it).
    denoiser: ClassVar[str] = "unet"

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.pipe: Any = None
        self._device = ""
        self._revision = ""
        self._schedulers: Schedulers | None = None
        self._reset()

    def _reset(self) -> None:
        """Clear per-load caches (prompt embeddings); called at construction and each load."""

    # Only the config travels: a loaded pipeline must never be shipped through a Dask graph.
    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])

    def _from_pretrained(self) -> Any:
        raise NotImplementedError

    def _batch(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Image.Image]:
        raise NotImplementedError

    def _denoiser_name(self, pipe: Any) -> str:
        return self.denoiser

    def _check_scheduler(self, scheduler: Any) -> None:
        """Raise ValueError naming `scheduler` for a scheduler this pipeline cannot run with."""

    def load(self, device: str) -> None:
        import torch

        cfg = self.config
        check_device(cfg, device)
        pipe = self._from_pretrained().to(device)
        pipe.set_progress_bar_config(disable=True)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()
        name = self._denoiser_name(pipe)
        denoiser = getattr(pipe, name)
        if torch.device(device).type == "cuda" and name == "unet":
            # diffusers already uses SDPA attention; channels_last speeds up the UNet's convolutions.
            denoiser.to(memory_format=torch.channels_last)
        if cfg.compile:
            setattr(pipe, name, torch.compile(denoiser))
        self.pipe = pipe
        self._device = device
        # A pipeline without a scheduler component (rare; `generic` only) runs as it is.
        self._schedulers = Schedulers(getattr(pipe, "scheduler", None), cfg.name)
        for name in choices(cfg.scheduler, "scheduler"):  # a bad scheduler fails at load, not mid-run
            self._check_scheduler(self._schedulers.get(name))
        self._reset()
        self._revision = resolve_revision(cfg.model, cfg.revision)

    def generate(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Image.Image]:
        import torch

        if self.pipe is None or self._schedulers is None:
            raise RuntimeError(f"generator {self.config.name!r}: call load(device) before generate()")
        if not len(prompts) == len(class_ids) == len(seeds):
            raise ValueError(f"got {len(prompts)} prompts, {len(class_ids)} class ids and {len(seeds)} seeds")
        if self._schedulers.base is not None:
            self.pipe.scheduler = self._schedulers.get(settings.scheduler)
        bs = self.config.batch_size
        images: list[Image.Image] = []
        with torch.inference_mode():
            for lo in range(0, len(seeds), bs):
                out = self._batch(prompts[lo : lo + bs], class_ids[lo : lo + bs], seeds[lo : lo + bs], settings)
                images += [im.convert("RGB") for im in out]
        return images

    def _safety_checker(self) -> bool:
        return getattr(self.pipe, "safety_checker", None) is not None

    def provenance(self, settings: Settings) -> dict[str, Any]:
        if self.pipe is None or self._schedulers is None:
            raise RuntimeError(f"generator {self.config.name!r}: call load(device) before provenance()")
        scheduler = self._schedulers.get(settings.scheduler)
        return {
            "model": self.config.model,
            "revision": self._revision,
            "pipeline": type(self.pipe).__name__,
            "scheduler": type(scheduler).__name__ if scheduler is not None else "none",
            "scheduler_config": scheduler_hash(scheduler) if scheduler is not None else "none",
            "dtype": self.config.dtype,
            "safety_checker": self._safety_checker(),
        }


def generators(seeds: list[int]) -> list[Any]:
    """One CPU generator per image: its initial noise is the same whichever device runs the model."""
    import torch

    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
