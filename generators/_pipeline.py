"""What every diffusers-pipeline family shares: loading, scheduler swaps, batching, provenance.

A family subclasses `PipelineGenerator` and implements `_from_pretrained()` (the pipeline, built
on the CPU in the config's dtype) and `_batch(prompts, class_ids, seeds, settings)` (one call
of the pipeline for at most `batch_size` images, one CPU generator per image, with
`output_type="np"`). Everything else —
moving to the device, eval mode, channels-last and `torch.compile` of the denoiser, the
scheduler cache, batching under `inference_mode`, the provenance record, pickling without the
model, turning the float pixels into images (`checked_images`: an image with a NaN or infinite
value is an error, never a black row) — happens here, the same way for every family.

Aligned modes (`aigi.generators._aligned`) are implemented here once for every family; a family
only declares which it supports (`aligned_modes`):
- vae_roundtrip: decode(encode(x)) through the pipeline's own autoencoder (`vae`, an
  AutoencoderKL: the posterior mean or a seeded sample; or Kandinsky's `movq`, a VQModel: the
  encoder's latents decoded unquantized, as its pipelines decode their latents).
- regenerate / inpaint: `AutoPipelineForInpainting.from_pipe(pipe)`; img2img:
  `AutoPipelineForImage2Image.from_pipe(pipe)`. Built once per load, sharing the loaded
  components (no extra weights), with the scheduler the settings ask for. Prompts go in as text.
- regenerate (an all-zero mask at strength 1) needs a denoiser that sees the mask and the masked
  image (an inpainting checkpoint: UNet in_channels = 2 x latent channels + 1). With any other
  denoiser diffusers' inpainting pipelines blend the encoded original back wherever the mask is
  0, so an all-zero mask returns exactly a sampled VAE round trip: that is refused, naming
  `mode`, rather than silently producing a second `vae_roundtrip`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from aigi.core.configtools import Invalid
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
    from collections.abc import Iterator

    from PIL import Image

#: The diffusers AutoPipeline that derives each sampling mode's pipeline from the loaded one.
DERIVED = {
    "regenerate": "AutoPipelineForInpainting",
    "inpaint": "AutoPipelineForInpainting",
    "img2img": "AutoPipelineForImage2Image",
}
#: The `__call__` arguments a derived pipeline must take for each mode.
NEEDS = {
    "regenerate": ("prompt", "image", "mask_image", "generator"),
    "inpaint": ("prompt", "image", "mask_image", "strength", "generator"),
    "img2img": ("prompt", "image", "strength", "generator"),
}


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
        #: mode -> (the pipeline derived for it, the arguments its __call__ names); for
        #: vae_roundtrip (the autoencoder's kind, "kl" or "vq", none). Built and checked on first
        #: use; cleared at each load.
        self._derived: dict[str, tuple[Any, frozenset[str]]] = {}
        self._reset()

    @property
    def device(self) -> str:
        """The device `load` put the model on ("" before it)."""
        return self._device

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
    ) -> Any:
        """The pipeline's `output_type="np"` images: (N, H, W, C) floats in [0, 1], or a list of
        (H, W, C) arrays (PIL images only from a pipeline that has no "np" output)."""
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
        self._derived = {}
        self._revision = resolve_revision(cfg.model, cfg.revision)
        self._check_checkpoint_fits_mode()
        if cfg.mode != "text":  # an impossible aligned mode fails at load, not mid-run
            self._aligned_target(cfg.mode)

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
                sl = slice(lo, lo + bs)
                out = self._batch(prompts[sl], class_ids[sl], seeds[sl], settings)
                images += [im.convert("RGB") for im in checked_images(out, self.config.name, prompts[sl], seeds[sl])]
        return images

    def _safety_checker(self) -> bool:
        return getattr(self.pipe, "safety_checker", None) is not None

    def provenance(self, settings: Settings) -> dict[str, Any]:
        """For an aligned entry, `pipeline` is the class that made the fakes: the derived
        pipeline, or the autoencoder for vae_roundtrip (which runs no scheduler: "none")."""
        if self.pipe is None or self._schedulers is None:
            raise RuntimeError(f"generator {self.config.name!r}: call load(device) before provenance()")
        mode = self.config.mode
        scheduler = None if mode == "vae_roundtrip" else self._schedulers.get(settings.scheduler)
        if mode == "text":
            pipeline = type(self.pipe).__name__
        elif mode == "vae_roundtrip":
            pipeline = type(self._autoencoder()).__name__
        else:
            pipeline = type(self._aligned_target(mode)).__name__
        return {
            "model": self.config.model,
            "revision": self._revision,
            "pipeline": pipeline,
            "scheduler": type(scheduler).__name__ if scheduler is not None else "none",
            "scheduler_config": scheduler_hash(scheduler) if scheduler is not None else "none",
            "dtype": self.config.dtype,
            "safety_checker": self._safety_checker(),
        }

    # ------------------------------------------------------------ aligned modes

    def generate_aligned(
        self, mode: str, parents: list[Image.Image], masks: list[Image.Image | None], prompts: list[str],
        seeds: list[int], settings: Settings, strength: float,
    ) -> list[Image.Image]:
        import torch

        if self.pipe is None or self._schedulers is None:
            raise RuntimeError(f"generator {self.config.name!r}: call load(device) before generate_aligned()")
        if mode not in self.aligned_modes:
            have = ", ".join(sorted(self.aligned_modes)) or "none"
            raise Invalid("mode", f"the {self.family} family cannot run mode {mode!r} (it can: {have})")
        n = len(parents)
        if not n == len(masks) == len(prompts) == len(seeds):
            raise ValueError(f"got {n} parents, {len(masks)} masks, {len(prompts)} prompts and {len(seeds)} seeds")
        size = (settings.width, settings.height)
        if any(p.size != size for p in parents):
            raise ValueError(f"parents must be fitted to the settings' size {list(size)} before generate_aligned")
        if mode == "regenerate":  # the whole image, conditioned on itself (DRCT, B-Free)
            from PIL import Image

            masks, strength = [Image.new("L", size, 0)] * n, 1.0
        elif mode == "inpaint" and any(m is None for m in masks):
            raise ValueError("mode inpaint needs a mask for every parent")
        target = self._aligned_target(mode)
        bs = self.config.batch_size
        images: list[Image.Image] = []
        with torch.inference_mode():
            if mode == "vae_roundtrip":
                with self._vae_precision() as vae:
                    for lo in range(0, n, bs):
                        sl = slice(lo, lo + bs)
                        out = self._roundtrip(vae, target, parents[sl], seeds[sl])
                        images += checked_images(out, self.config.name, prompts[sl], seeds[sl])
            else:
                scheduler = self._schedulers.get(settings.scheduler)
                if scheduler is not None:
                    target.scheduler = scheduler
                    if hasattr(target, "decoder_pipe"):  # combined (prior + decoder) pipelines
                        target.decoder_pipe.scheduler = scheduler
                for lo in range(0, n, bs):
                    sl = slice(lo, lo + bs)
                    out = self._aligned_batch(
                        target, self._derived[mode][1], parents[sl], masks[sl], prompts[sl], seeds[sl],
                        settings, strength,
                    )
                    images += checked_images(out, self.config.name, prompts[sl], seeds[sl])
        if len(images) != n:
            raise RuntimeError(f"generator {self.config.name!r}: got {len(images)} images for {n} parents")
        return [im if im.mode == "RGB" else im.convert("RGB") for im in images]

    def _aligned_target(self, mode: str) -> Any:
        """The pipeline derived for `mode` (the autoencoder's kind, "kl" or "vq", for
        vae_roundtrip), built once per load; a mode this checkpoint cannot run raises Invalid."""
        if mode not in self._derived:
            self._derived[mode] = (self._vae_kind(), frozenset()) if mode == "vae_roundtrip" else self._derive(mode)
        return self._derived[mode][0]

    def _derive(self, mode: str) -> tuple[Any, frozenset[str]]:
        import diffusers

        cfg = self.config
        auto = getattr(diffusers, DERIVED[mode])
        try:
            # from_pipe shares the loaded (compiled, channels-last) modules: no weights are copied.
            # The watermark stays off as in the SDXL family; other pipelines ignore the argument.
            pipe = auto.from_pipe(self.pipe, add_watermarker=False)
        except ValueError as e:  # AutoPipeline maps no such task pipeline to this class
            raise Invalid("mode", f"generator {cfg.name!r}: {type(self.pipe).__name__} has no {mode} "
                          f"pipeline in diffusers ({e})") from e
        pipe.set_progress_bar_config(disable=True)
        accepts = _call_arguments(pipe)
        missing = [a for a in NEEDS[mode] if a not in accepts]
        if missing:
            raise Invalid("mode", f"generator {cfg.name!r}: {type(pipe).__name__} takes no "
                          f"{', '.join(missing)}, which mode {mode!r} needs")
        if mode == "regenerate" and not self._sees_mask():
            raise Invalid("mode", f"generator {cfg.name!r}: regenerate needs an inpainting checkpoint (a "
                          "UNet that takes the mask and the masked image: in_channels = 2 x latent "
                          f"channels + 1); with {cfg.model!r} an all-zero mask would return the image's "
                          'VAE round trip: use mode = "vae_roundtrip" (vae_sample = "sample") for that')
        return pipe, accepts

    def _sees_mask(self) -> bool:
        """Whether the denoiser takes the mask and the masked image (an inpainting checkpoint)."""
        unet, vae = getattr(self.pipe, "unet", None), getattr(self.pipe, "vae", None)
        if unet is None or vae is None or not hasattr(vae.config, "latent_channels"):
            return False
        return int(unet.config.in_channels) == 2 * int(vae.config.latent_channels) + 1

    def _check_checkpoint_fits_mode(self) -> None:
        """An inpainting checkpoint loads into a text-to-image pipeline but cannot run it."""
        if self.config.mode in ("text", "img2img") and self._sees_mask():
            raise Invalid("mode", f"generator {self.config.name!r}: {self.config.model!r} is an inpainting "
                          f"checkpoint (its UNet takes a mask); it cannot run mode {self.config.mode!r}: "
                          'use mode = "regenerate" or "inpaint"')

    def _aligned_batch(
        self, pipe: Any, accepts: frozenset[str], parents: list[Image.Image], masks: list[Image.Image | None], prompts: list[str],
        seeds: list[int], settings: Settings, strength: float,
    ) -> list[Any]:
        negative = settings.negative_prompt if "negative_prompt" in self.honours else ""
        call = call_arguments(prompts, seeds, settings, image=list(parents), mask_image=list(masks), strength=strength)
        # "" means none: diffusers' None (SDXL's zero embedding, as the sdxl family does)
        call["negative_prompt"] = [negative] * len(prompts) if negative else None
        if getattr(self, "_max_sequence_length", None):  # Flux: the T5 length its text path uses
            call["max_sequence_length"] = self._max_sequence_length
        call = {k: v for k, v in call.items() if k in accepts}
        if negative and hasattr(pipe, "prior_pipe"):
            # A prior doubles its batch for a negative prompt, which a list of generators cannot
            # follow (the kandinsky family does the same for text): one image per call.
            out = []
            for i in range(len(seeds)):
                one = {**call, "prompt": prompts[i], "negative_prompt": negative, "image": [parents[i]],
                       "generator": call["generator"][i]}
                if "mask_image" in one:
                    one["mask_image"] = [masks[i]]
                out += list(pipe(**one).images)
            return out
        return list(pipe(**call).images)

    # ------------------------------------------------------------ vae_roundtrip

    def _autoencoder(self) -> Any:
        """The pipeline's image autoencoder: `vae`, or Kandinsky 2.2's `movq`."""
        vae = getattr(self.pipe, "vae", None)
        return vae if vae is not None else getattr(self.pipe, "movq", None)

    def _vae_kind(self) -> str:
        import diffusers

        cfg = self.config
        vae = self._autoencoder()
        if isinstance(vae, diffusers.AutoencoderKL):
            return "kl"
        if isinstance(vae, diffusers.VQModel):
            if cfg.aligned.vae_sample != "mean":
                raise Invalid("aligned.vae_sample", f"generator {cfg.name!r}: {type(vae).__name__} is a VQ "
                              'autoencoder with no posterior to sample; use vae_sample = "mean"')
            return "vq"
        raise Invalid("mode", f"generator {cfg.name!r}: vae_roundtrip needs an AutoencoderKL or VQModel "
                      f"autoencoder; {type(self.pipe).__name__} has {type(vae).__name__}")

    @contextmanager
    def _vae_precision(self) -> Iterator[Any]:
        """The autoencoder, in float32 when its config asks (`force_upcast`: SDXL's VAE overflows
        in float16). Cast once and kept: an aligned entry never runs the text-to-image path, and
        diffusers' own pipelines skip their per-call upcast when the VAE already is float32."""
        import torch

        vae = self._autoencoder()
        if _param(vae).dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False)):
            vae.to(dtype=torch.float32)
        yield vae

    def _roundtrip(self, vae: Any, kind: str, parents: list[Image.Image], seeds: list[int]) -> Any:
        """decode(encode(x)) for one batch. The latent scaling and shift factors are NOT applied:
        they only map the latents to the denoiser's range, decode(encode(x)) would apply them
        and undo them, and skipping them keeps the computation exact."""
        from diffusers.image_processor import VaeImageProcessor

        width, height = parents[0].size
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if kind == "vq":
            # As Kandinsky 2.2's img2img pipeline: bicubic, the MoVQ's own latent channels.
            proc = VaeImageProcessor(vae_scale_factor=factor, vae_latent_channels=vae.config.latent_channels,
                                     resample="bicubic", reducing_gap=1)
        else:
            proc = getattr(self.pipe, "image_processor", None)
            if not isinstance(proc, VaeImageProcessor):  # e.g. DiTPipeline has none
                proc = VaeImageProcessor(vae_scale_factor=factor)
        p = _param(vae)  # `vae.dtype` / `.device` walk every submodule: too slow per batch
        x = proc.preprocess(parents, height=height, width=width).to(device=p.device, dtype=p.dtype)
        if kind == "vq":
            # The encoder's latents, decoded unquantized: Kandinsky's UNet works in that space and
            # its pipelines decode with force_not_quantize=True, so fakes carry this decoder trace.
            y = vae.decode(vae.encode(x).latents, force_not_quantize=True).sample
        else:
            dist = vae.encode(x).latent_dist
            z = dist.mean if self.config.aligned.vae_sample == "mean" else dist.sample(generator=generators(seeds))
            y = vae.decode(z).sample
        return proc.postprocess(y, output_type="np")


def _call_arguments(pipe: Any) -> frozenset[str]:
    """The arguments `pipe.__call__` names (a `**kwargs` catch-all swallows others silently)."""
    import inspect

    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(type(pipe).__call__).parameters
    return frozenset(n for n, p in params.items() if p.kind in named and n != "self")


def cached_pair(cache: Any, texts: list[str], encode: Any) -> tuple[Any, Any]:
    """Two stacked per-text embeddings of `texts` (e.g. sequence and pooled), encoding each
    distinct string not in `cache` (an LRU) once: `encode(missing) -> (batched a, batched b)`.
    Caption corpora repeat few prompts per image, class-name corpora many: the text encoders
    run once per string either way."""
    import torch

    distinct = list(dict.fromkeys(texts))
    found = {t: e for t in distinct if (e := cache.get(t)) is not None}
    missing = [t for t in distinct if t not in found]
    # One string per call: a batched matrix product can differ in the last bit from the same row
    # computed alone, and which strings miss the cache depends on what the worker met before, so
    # batching them would make an image's bytes depend on the worker (core/determinism.py).
    for t in missing:
        a, b = encode([t])
        found[t] = (a[0], b[0])
    for t in distinct:
        cache.put(t, found[t])
    return torch.stack([found[t][0] for t in texts]), torch.stack([found[t][1] for t in texts])


def call_arguments(prompts: list[str], seeds: list[int], settings: Settings, **more: Any) -> dict[str, Any]:
    """The keyword arguments of one diffusers pipeline call for a batch: prompts, the drawn
    settings, one CPU generator per image, float output (`checked_images` makes the images);
    `more` adds or overrides (a caller keeps the ones its pipeline's `__call__` names)."""
    return {
        "prompt": list(prompts),
        "negative_prompt": [settings.negative_prompt] * len(prompts),
        "num_inference_steps": settings.steps,
        "guidance_scale": settings.guidance,
        "width": settings.width,
        "height": settings.height,
        "generator": generators(seeds),
        "output_type": "np",
        **more,
    }


class NonFiniteImage(RuntimeError):
    """A generated image holds NaN or infinite values: an error, never a (black) row."""


def checked_images(images: Any, generator: str, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
    """PIL images from a pipeline's "np" output ((N, H, W, C) floats in [0, 1], or a list of
    (H, W, C) arrays), converted exactly as diffusers converts its "pil" output. A float16
    overflow or a runaway guidance makes NaN, which the uint8 cast silently turns into black
    pixels (that dedupe then drops as duplicates): any non-finite value raises NonFiniteImage
    naming the generator, the prompt and the seed. A list of PIL images (a pipeline with no
    "np" output) is returned as it is."""
    import numpy as np
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    if isinstance(images, list) and all(isinstance(im, Image.Image) for im in images):
        return images
    batch = np.stack(images) if isinstance(images, list) else np.asarray(images)
    if batch.ndim == 3:
        batch = batch[None]
    finite = np.isfinite(batch).reshape(len(batch), -1).all(axis=1)
    if not finite.all():
        bad = [i for i, ok in enumerate(finite) if not ok]
        i = bad[0]
        raise NonFiniteImage(
            f"generator {generator!r}: {len(bad)} of {len(batch)} images of a batch have NaN or infinite "
            f"pixel values, first for prompt {prompts[i]!r} (seed {seeds[i]}); the model overflowed: try "
            'dtype = "float32" (or "bfloat16") or a smaller guidance'
        )
    return VaeImageProcessor.numpy_to_pil(batch)


def generators(seeds: list[int]) -> list[Any]:
    """One CPU generator per image: its initial noise is the same whichever device runs the model."""
    import torch

    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def _param(module: Any) -> Any:
    """A parameter of `module`: its dtype and device are the module's (one dtype, one device)."""
    return next(module.parameters())
