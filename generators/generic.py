"""Generic: any text-to-image pipeline diffusers can load, called with the common arguments only.

For models with no family of their own (Kandinsky 3, Würstchen, Playground, Sana, an LCM, a
community checkpoint...). The pipeline class is found by
`AutoPipelineForText2Image.from_pretrained` (which also maps an img2img or inpaint checkpoint to
its text-to-image twin), falling back to `DiffusionPipeline.from_pretrained` (the class named in
`model_index.json`) when AutoPipeline knows no text-to-image class for it; with `pipeline` set,
that diffusers class by name is used instead. `trust_remote_code = true` lets diffusers run the
repository's own Python code (a custom pipeline or components named in its `model_index.json`,
which diffusers finds itself, so no `custom_pipeline` is passed); it is off unless the entry asks
and warns when on.

Text-conditioned. Each batch is one call with the common arguments: `prompt`, `negative_prompt`,
`num_inference_steps`, `guidance_scale`, `width`, `height`, one CPU generator per image and
`output_type="np"`, each passed only if the pipeline's `__call__` names it. A setting whose
config value is not the default but whose argument the pipeline lacks (e.g. `negative_prompt`
for an LCM pipeline) fails at load, naming the key; `scheduler` needs a `scheduler` component.
Prompts are passed as text: prompt embeddings are not cached, because how a pipeline encodes
text (which encoders, pooled embeddings, masks, and the argument names for them) differs from
class to class. The safety checker is disabled (`safety_checker=None`) when the pipeline has one.

Aligned modes: all four are declared, and whether the loaded pipeline can run the entry's mode
is checked at load, naming `mode`: vae_roundtrip needs a `vae` (AutoencoderKL) or `movq`
(VQModel); inpaint and img2img need diffusers' AutoPipeline twin of the class (e.g. an LCM has an
img2img twin but no inpainting one); regenerate also needs an inpainting UNet (9 channels).

    [[generators]]
    name = "kandinsky3"
    family = "generic"
    model = "kandinsky-community/kandinsky-3"
    steps = 25
    guidance = 3.0
    size = [1024, 1024]
    dtype = "float16"
"""

from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

from aigi.core.configtools import Invalid
from aigi.generators._pipeline import PipelineGenerator, call_arguments
from aigi.generators.base import GeneratorConfig
from aigi.generators.settings import Settings

#: The `__call__` arguments each setting needs.
SETTING_ARGS = {
    "steps": ("num_inference_steps",),
    "guidance": ("guidance_scale",),
    "size": ("width", "height"),
    "negative_prompt": ("negative_prompt",),
}
CLASS_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TINY_BUILDER_KEYS = ("seed", "save_as")


class Generic(PipelineGenerator):
    family = "generic"
    conditioning = "text"
    # Whether the loaded pipeline can run the entry's mode (an autoencoder, an AutoPipeline
    # img2img / inpainting twin, an inpainting UNet for regenerate) is checked at load.
    aligned_modes = frozenset({"vae_roundtrip", "regenerate", "inpaint", "img2img"})

    def _reset(self) -> None:
        # The `__call__` arguments of the loaded pipeline, set by `_from_pretrained` (kept when
        # `load` resets the caches after it).
        self._accepts: frozenset[str] = getattr(self, "_accepts", frozenset())

    @classmethod
    def check_config(cls, config: GeneratorConfig) -> None:
        super().check_config(config)
        if config.pipeline and not CLASS_NAME_RE.match(config.pipeline):
            raise Invalid(
                "pipeline", f"must be a diffusers pipeline class name, got {config.pipeline!r}"
            )

    def load(self, device: str) -> None:
        cfg = self.config
        if cfg.trust_remote_code:
            warnings.warn(
                f"generator {cfg.name!r}: trust_remote_code = true: Python code from the model "
                f"repository {cfg.model!r} will run in this process",
                stacklevel=2,
            )
        super().load(device)

    def _denoiser_name(self, pipe: Any) -> str:
        import torch

        return "unet" if isinstance(getattr(pipe, "unet", None), torch.nn.Module) else "transformer"

    def _from_pretrained(self) -> Any:
        import diffusers
        import torch

        cfg = self.config
        pipe = self._load_class(diffusers, getattr(torch, cfg.dtype))
        self._accepts = _call_arguments(pipe)
        self._check_arguments(pipe)
        return pipe

    def _load_class(self, diffusers: Any, dtype: Any) -> Any:
        cfg = self.config
        cls = None
        if cfg.pipeline:
            cls = getattr(diffusers, cfg.pipeline, None)
            if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
                raise Invalid(
                    "pipeline",
                    f"generator {cfg.name!r}: {cfg.pipeline!r} is not a diffusers pipeline class",
                )
        kwargs: dict[str, Any] = dict(
            revision=cfg.revision or None, dtype=dtype, trust_remote_code=cfg.trust_remote_code
        )
        kwargs.update(self._no_safety_checker(cls))
        if cls is not None:
            return cls.from_pretrained(cfg.model, **kwargs)
        try:
            return diffusers.AutoPipelineForText2Image.from_pretrained(cfg.model, **kwargs)
        except ValueError as auto_error:  # AutoPipeline maps no text-to-image class to this one
            try:
                return diffusers.DiffusionPipeline.from_pretrained(cfg.model, **kwargs)
            except Exception as e:
                raise e from auto_error

    def _no_safety_checker(self, cls: type | None) -> dict[str, Any]:
        """`safety_checker=None` (and no requirement for one) where the pipeline has that component."""
        import diffusers

        cfg = self.config
        index = diffusers.DiffusionPipeline.load_config(cfg.model, revision=cfg.revision or None)
        accepted = (
            set(inspect.signature(cls.__init__).parameters) if cls is not None else set(index)
        )
        out: dict[str, Any] = {}
        if "safety_checker" in index and "safety_checker" in accepted:
            out["safety_checker"] = None
            if "requires_safety_checker" in accepted:
                out["requires_safety_checker"] = False
        return out

    def _check_arguments(self, pipe: Any) -> None:
        cfg = self.config
        name = type(pipe).__name__
        for arg in ("prompt", "generator"):
            if arg not in self._accepts:
                raise ValueError(
                    f"generator {cfg.name!r}: {name}.__call__ takes no {arg!r}; the generic family "
                    "needs a text-to-image pipeline that takes a prompt and generators"
                )
        defaults = {f.name: f.default for f in fields(GeneratorConfig)}
        for key, args in SETTING_ARGS.items():
            missing = [a for a in args if a not in self._accepts]
            if missing and getattr(cfg, key) != defaults[key]:
                raise Invalid(
                    key,
                    f"generator {cfg.name!r}: {name} takes no {', '.join(missing)}; remove {key}",
                )
        if cfg.scheduler != defaults["scheduler"] and getattr(pipe, "scheduler", None) is None:
            raise Invalid("scheduler", f"generator {cfg.name!r}: {name} has no scheduler component")

    def _batch(
        self, prompts: list[str], class_ids: list[int | None], seeds: list[int], settings: Settings
    ) -> list[Any]:
        candidates = call_arguments(prompts, seeds, settings)
        out = self.pipe(**{k: v for k, v in candidates.items() if k in self._accepts})
        if len(out.images) != len(prompts):
            raise RuntimeError(
                f"generator {self.config.name!r}: {type(self.pipe).__name__} returned "
                f"{len(out.images)} images for {len(prompts)} prompts"
            )
        return list(out.images)

    @classmethod
    def tiny(cls, folder: Path, name: str = "tiny", **overrides: Any) -> GeneratorConfig:
        """A tiny random-weight text-to-image pipeline saved to `folder`: Stable Diffusion's tiny
        components saved as the pipeline class `save_as` (default `StableDiffusionPipeline`; it must
        take SD's components). `seed` and `save_as` go to the builder; any other override is a
        `GeneratorConfig` field."""
        builder = {k: overrides.pop(k) for k in TINY_BUILDER_KEYS if k in overrides}
        _tiny_pipeline(Path(folder), **builder)
        fields_: dict[str, Any] = dict(
            steps=3, guidance=3.0, size=(64, 64), dtype="float32", batch_size=4, unit_size=16
        )
        fields_.update(overrides)
        return GeneratorConfig(name=name, family=cls.family, model=str(folder), **fields_)


def _call_arguments(pipe: Any) -> frozenset[str]:
    """The arguments `pipe.__call__` names (a `**kwargs` catch-all does not count: what it
    swallows may be ignored silently)."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = inspect.signature(type(pipe).__call__).parameters
    return frozenset(n for n, p in params.items() if p.kind in named and n != "self")


def _tiny_pipeline(folder: Path, seed: int = 0, save_as: str = "StableDiffusionPipeline") -> Path:
    """The tiny SD pipeline, re-saved as `save_as`. An LCM gets what it needs beyond SD's
    components: a UNet with a guidance embedding (`time_cond_proj_dim`) and an `LCMScheduler`."""
    import diffusers
    import torch

    from aigi.generators.tiny import tiny_stable_diffusion

    tiny_stable_diffusion(folder, seed=seed)
    if save_as == "StableDiffusionPipeline":
        return folder
    cls = getattr(diffusers, save_as)
    sd = diffusers.StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False
    )
    components = dict(sd.components)
    if save_as == "LatentConsistencyModelPipeline":
        torch.manual_seed(seed)
        unet_config = {**sd.unet.config, "time_cond_proj_dim": 32}
        components["unet"] = diffusers.UNet2DConditionModel.from_config(unet_config).eval()
        components["scheduler"] = diffusers.LCMScheduler.from_config(sd.scheduler.config)
    accepted = set(inspect.signature(cls.__init__).parameters)
    if "requires_safety_checker" in accepted:
        components["requires_safety_checker"] = False
    cls(**{k: v for k, v in components.items() if k in accepted}).save_pretrained(folder)
    return folder
