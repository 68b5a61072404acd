"""`aigi demo`: the whole path, offline, on this machine, in a few minutes at most.

It builds tiny random-weight diffusion pipelines from config, saves them into the run directory
and loads them back through the same `from_pretrained` path a real model uses; it cuts real
photographs shipped inside scikit-image into crops. The models are random-weight stand-ins:
their images are noise-like and the detector numbers are a smoke check of the plumbing, not a
measurement. `examples/sd15-imagenet.toml` is the same run with real models.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from aigi.manifests.rundir import NotARunDir, RunDir

DEMO_CLASSES = ("tench", "goldfish", "tree frog", "goldfinch", "volcano", "daisy", "lemon", "espresso")
# Colour photographs that ship inside the scikit-image wheel (no download).
DEMO_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field",
    "immunohistochemistry", "retina",
)
CROPS_PER_PHOTO = 12
CROP = 64
MARKER = ".aigi-complete"
BUILDING = ".aigi-building"
PHOTOS_VERSION = "jpeg"  # a demo folder built before the photos were JPEGs is rebuilt
TINY_CONFIG = ".aigi-tiny-config.json"
#: Every feature of the library, each on its own tiny random-weight model.
DEMO_FEATURES = ("lare", "dnf", "code", "dire", "anomaly", "clip_rn50")
#: Released settings the tiny models can afford on a CPU.
DEMO_FEATURE_OVERRIDES = {"lare": {"t": 200, "ensemble": 4, "batch_size": 16}}

DISCLAIMER = (
    "NOTE: the demo's diffusion models are tiny random-weight stand-ins built offline; its images are "
    "not realistic and its detector numbers are a smoke check of the pipeline, not a result. "
    "For real models see examples/sd15-imagenet.toml."
)

# name -> options of the tiny pipeline builder; two differently configured generators give
# per-generator results.
TINY_GENERATORS = {
    "tiny-sd-a": {"seed": 1, "scheduler": "DDIMScheduler", "block_out_channels": (32, 64)},
    "tiny-sd-b": {"seed": 2, "scheduler": "EulerDiscreteScheduler", "block_out_channels": (32, 32, 64)},
}

CONFIG_TEMPLATE = """\
# aigi demo config, written by `aigi demo`.
# The models are tiny random-weight stand-ins (see the README): a smoke check, not a benchmark.
[run]
out = "{out}"
seed = 0

[dask]
n_workers = 1
threads_per_worker = 1

[prompts]
source = "classes"
classes = {classes}
templates = ["a photo of a {{class}}"]

[real]
name = "photos"
source = "imagefolder"
path = "{photos}"
class_from_folder = true
unit_size = 32

[[generators]]
name = "tiny-sd-a"
family = "stable_diffusion"
model = "{models}/tiny-sd-a"
steps = 8
guidance = 3.0
size = [64, 64]
images_per_prompt = 6
batch_size = 8
unit_size = 16

[[generators]]
name = "tiny-sd-b"
family = "stable_diffusion"
model = "{models}/tiny-sd-b"
steps = 6
guidance = 5.0
size = [64, 64]
images_per_prompt = 6
batch_size = 8
unit_size = 16

# Aligned fakes: made from the photos themselves (same content, framing and size), through the
# autoencoder alone and by image-to-image at a strength drawn per image.
[[generators]]
name = "tiny-sd-a-vae"
family = "stable_diffusion"
model = "{models}/tiny-sd-a"
mode = "vae_roundtrip"
size = [64, 64]
batch_size = 16

[[generators]]
name = "tiny-sd-a-img2img"
family = "stable_diffusion"
model = "{models}/tiny-sd-a"
mode = "img2img"
steps = 4
guidance = 3.0
size = [64, 64]
batch_size = 16
aligned = {{ strength = {{ min = 0.4, max = 0.8 }} }}

# The photos are JPEGs and the generated images PNGs: the bias audit shows a classifier of the
# format alone telling them apart; re-encoding both the same way removes that shortcut.
[curation.normalize]
format = "jpeg"
quality = 90

[curation.split]
by = "class"
fractions = [0.6, 0.2, 0.2]

{features}
[detectors.logreg]
feature = "lare"
column = "lare"
pool = 2

# CoDE's released linear head, and DNF's ResNet (a ResNet-18 for a few epochs: the tiny maps)
[detectors.code_linear]
feature = "code"
column = "code"

[detectors.resnet_dnf]
arch = "resnet18"
epochs = 2
batch_size = 32
lr = 0.001
lr_patience = 1
lr_drops = 0

[evaluate]
protocols = ["per_generator", "cross_generator"]
bootstrap = 200
"""


def _toml_str(path: Path) -> str:
    return str(path.resolve()).replace("\\", "/")


def build_once(folder: Path, build) -> bool:
    """Run `build(folder)` unless a completed build is there; True when it built.

    A folder is deleted only when an interrupted build of ours left it (it carries BUILDING);
    a folder of the same name that aigi did not make is refused, never deleted."""
    if (folder / MARKER).exists():
        return False
    if folder.exists():
        if not (folder / BUILDING).exists():
            raise NotARunDir(
                f"{folder}: exists and was not made by aigi demo; choose another --out (nothing was deleted)")
        shutil.rmtree(folder)  # our interrupted build: start it over
    folder.mkdir(parents=True)
    (folder / BUILDING).write_text("an aigi demo build; deleted and redone if it did not finish\n")
    build(folder)
    (folder / MARKER).write_text("ok\n")
    (folder / BUILDING).unlink()
    return True


def build_models(models: Path) -> dict[str, dict]:
    """Build the tiny models once; return each demo feature's config table (model included)."""
    from aigi.core.configtools import to_dict
    from aigi.features.registry import get
    from aigi.generators.tiny import tiny_stable_diffusion
    from aigi.pipeline.worker_state import quiet_libraries

    quiet_libraries()
    for name, opts in TINY_GENERATORS.items():
        build_once(models / name, lambda f, o=opts: tiny_stable_diffusion(f, **o))
    tables = {}
    for name in DEMO_FEATURES:
        cls = get(name)
        folder = models / f"tiny-{name}"
        # The tiny config is kept beside the weights in a hidden file (hidden files are not part
        # of the weights hash), so a re-run needs no rebuild to know it.
        build_once(folder, lambda f, c=cls: (f / TINY_CONFIG).write_text(json.dumps(to_dict(c.tiny(f)))))
        cfg = json.loads((folder / TINY_CONFIG).read_text())
        defaults = to_dict(cls.Config())
        table = {k: v for k, v in cfg.items() if v != defaults.get(k)}
        table.update(DEMO_FEATURE_OVERRIDES.get(name, {}), model=_toml_str(folder))
        tables[name] = table
    return tables


def features_toml(tables: dict[str, dict]) -> str:
    out = []
    for name, table in tables.items():
        out.append(f"[features.{name}]")
        out += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
        out.append("")
    return "\n".join(out)


def build_photos(folder: Path, seed: int = 0) -> None:
    """Crops of scikit-image's sample photographs, one subfolder (= class) per photograph, so
    crops of one photograph never straddle a split. Saved as JPEG at qualities 70..95, as
    photographs usually are (and unlike generated images)."""

    def make(out: Path) -> None:
        import numpy as np
        import skimage.data
        from PIL import Image

        rng = np.random.default_rng(seed)
        for name in DEMO_PHOTOS:
            arr = getattr(skimage.data, name)()
            if isinstance(arr, tuple):  # stereo_motorcycle: (left, right, disparity)
                arr = arr[0]
            img = Image.fromarray(arr).convert("RGB")
            scale = 2 * CROP / min(img.size)
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
            (out / name).mkdir(parents=True, exist_ok=True)
            for k in range(CROPS_PER_PHOTO):
                x = int(rng.integers(0, img.width - CROP + 1))
                y = int(rng.integers(0, img.height - CROP + 1))
                quality = int(rng.integers(70, 96))
                img.crop((x, y, x + CROP, y + CROP)).save(out / name / f"crop-{k:02d}.jpg", quality=quality)

    build_once(folder, make)


def prepare(out: Path, allow_existing: bool = False) -> str:
    """Build the demo's inputs under `out` (once) and return its config text."""
    out = Path(out)
    RunDir(out).claim(allow_existing)  # before building anything into it
    models, photos = out / "models", out / "inputs" / f"photos-{PHOTOS_VERSION}"
    tables = build_models(models)
    build_photos(photos)
    return CONFIG_TEMPLATE.format(
        out=_toml_str(out),
        models=_toml_str(models),
        photos=_toml_str(photos),
        classes="[" + ", ".join(f'"{c}"' for c in DEMO_CLASSES) + "]",
        features=features_toml(tables),
    )
