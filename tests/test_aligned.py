"""The pure steps around an aligned fake: size policy, masks, paste-back, change metrics, prompts,
per-image draws, and the checks of an entry's `aligned` table."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aigi.core.configtools import ConfigError, Invalid, build
from aigi.generators import _aligned as al
from aigi.generators.base import GeneratorConfig
from aigi.generators.settings import FloatRange


def picture(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_centre_crop_takes_the_largest_centred_box_of_the_target_aspect() -> None:
    im = picture(640, 480)
    out, box = al.fit(im, (512, 512), "centre_crop")
    assert out.size == (512, 512) and box == (80, 0, 560, 480)  # 480² in the middle, then upscaled
    wide, box = al.fit(im, (64, 32), "centre_crop")
    assert wide.size == (64, 32) and box == (0, 80, 640, 400)  # 2:1 of 640x480 is 640x320
    same, box = al.fit(picture(64, 64), (64, 64), "centre_crop")
    assert box == (0, 0, 64, 64) and np.array_equal(np.asarray(same), np.asarray(picture(64, 64)))
    stretched, box = al.fit(im, (100, 100), "resize")
    assert stretched.size == (100, 100) and box == (0, 0, 640, 480)


@pytest.mark.parametrize("area", [0.1, 0.25, 0.4])
def test_box_mask_covers_the_drawn_area_and_is_seeded(area: float) -> None:
    m = al.box_mask((128, 96), area, 0.3, 0.7)
    a = np.asarray(m)
    assert set(np.unique(a)) <= {0, 255} and abs(al.mask_area(m) - area) < 0.03
    ys, xs = np.nonzero(a)
    assert (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1) == np.count_nonzero(a)  # one box
    assert np.array_equal(a, np.asarray(al.box_mask((128, 96), area, 0.3, 0.7)))
    assert not np.array_equal(a, np.asarray(al.box_mask((128, 96), area, 0.3, 0.2)))


def test_stroke_mask_reaches_the_area_and_is_seeded() -> None:
    m = al.stroke_mask((128, 128), 0.2, 0.5)
    assert 0.2 <= al.mask_area(m) < 0.45
    assert np.array_equal(np.asarray(m), np.asarray(al.stroke_mask((128, 128), 0.2, 0.5)))
    assert not np.array_equal(np.asarray(m), np.asarray(al.stroke_mask((128, 128), 0.2, 0.6)))


def test_paste_back_keeps_the_parent_outside_the_mask() -> None:
    parent, fake = picture(32, 32, 1), picture(32, 32, 2)
    mask = al.box_mask((32, 32), 0.3, 0.5, 0.5)
    out = np.asarray(al.paste_back(fake, parent, mask))
    inside = np.asarray(mask) > 127
    assert np.array_equal(out[~inside], np.asarray(parent)[~inside])
    assert np.array_equal(out[inside], np.asarray(fake)[inside])


def test_change_metrics_against_independent_psnr_and_skimage_ssim() -> None:
    from skimage.metrics import structural_similarity

    parents = [picture(48, 40, 3), picture(48, 40, 5)]
    fakes = []
    for k, parent in enumerate(parents):
        noise = np.random.default_rng(4 + k).integers(-6 - 10 * k, 7 + 10 * k, (40, 48, 3))
        fakes.append(Image.fromarray(np.clip(np.asarray(parent).astype(int) + noise, 0, 255).astype(np.uint8)))
    got = al.change_metrics(parents, fakes)
    for parent, fake, m in zip(parents, fakes, got, strict=True):
        a, b = np.asarray(parent).astype(float), np.asarray(fake).astype(float)
        assert m["psnr"] == pytest.approx(10 * np.log10(255**2 / np.mean((a - b) ** 2)), rel=1e-9)
        luma = np.array([0.299, 0.587, 0.114])
        want = structural_similarity(a @ luma, b @ luma, data_range=255.0)
        assert m["ssim"] == pytest.approx(want, abs=1e-9)
    assert got[0]["ssim"] > got[1]["ssim"]  # more noise, less similar
    [same] = al.change_metrics(parents[:1], parents[:1])
    assert same["psnr"] == float("inf") and same["ssim"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="equal sizes"):
        al.change_metrics(parents[:1], [picture(8, 8)])


def test_prompts() -> None:
    cfg = al.AlignedConfig()
    assert al.prompt_for(cfg, "a dog on a sofa", "dog", None) == "a dog on a sofa"
    assert al.prompt_for(cfg, None, "dog", None) == "a photo of a dog"  # no caption: its class
    assert al.prompt_for(cfg, None, None, None) == ""
    other = al.AlignedConfig(prompt="other_class")
    assert al.prompt_for(other, "x", "dog", "cat") == "a photo of a cat"
    assert al.pick_other(["cat", "dog", "eel"], "dog", 0.0) == "cat"
    assert al.pick_other(["cat", "dog", "eel"], "dog", 0.99) == "eel"
    assert al.pick_other(["dog"], "dog", 0.5) is None
    assert al.prompt_for(al.AlignedConfig(prompt="empty"), "x", "dog", None) == ""
    assert al.prompt_for(al.AlignedConfig(prompt="text", text="a photo"), "x", "y", None) == "a photo"


def test_per_image_draws_are_seeded_and_in_range() -> None:
    cfg = al.AlignedConfig(strength=FloatRange(0.3, 0.7), mask_area=(0.1, 0.2))
    draws = [al.draw_aligned(cfg, s) for s in range(200)]
    assert all(0.3 <= d["strength"] <= 0.7 and 0.1 <= d["area"] <= 0.2 for d in draws)
    assert len({d["strength"] for d in draws}) > 100
    assert al.draw_aligned(cfg, 5) == al.draw_aligned(cfg, 5)
    assert {al.draw_aligned(al.AlignedConfig(strength=(0.5, 0.9)), s)["strength"] for s in range(50)} == {0.5, 0.9}


@pytest.mark.parametrize(
    ("mode", "aligned", "key"),
    [
        ("inpaint", {}, "aligned.mask"),  # inpainting needs a mask
        ("vae_roundtrip", {"strength": 0.5}, "aligned.strength"),  # a key the mode does not use
        ("img2img", {"paste_back": True}, "aligned.paste_back"),
        ("regenerate", {"mask": "box"}, "aligned.mask"),
        ("img2img", {"strength": 0.0}, "strength"),
        ("inpaint", {"mask": "box", "mask_area": [0.5, 0.2]}, "mask_area"),
        ("img2img", {"prompt": "text"}, "text"),
        ("text", {"fit": "resize"}, "aligned.fit"),
    ],
)
def test_bad_aligned_tables_name_the_key(mode: str, aligned: dict, key: str) -> None:
    table = {"name": "g", "family": "stable_diffusion", "model": "m", "mode": mode, "aligned": aligned}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build(GeneratorConfig, table, "generators[0]", "cfg.toml")


def test_an_aligned_entry_needs_a_real_source_and_a_known_parent(tmp_path) -> None:
    from aigi.pipeline.config import parse_config

    entry = {"name": "g", "family": "stable_diffusion", "model": "m", "mode": "img2img"}
    with pytest.raises(ConfigError, match=r"generators\[0\]\.mode"):
        parse_config({"run": {"out": str(tmp_path)}, "generators": [entry]}, file="c.toml")
    with pytest.raises(ConfigError, match=r"aligned\.parent"):
        parse_config({"run": {"out": str(tmp_path)}, "real": {"path": "x"},
                      "generators": [{**entry, "aligned": {"parent": "flickr"}}]}, file="c.toml")
    # an aligned entry needs no [prompts] table; a family without the mode is refused
    cfg = parse_config({"run": {"out": str(tmp_path)}, "real": {"path": "x"}, "generators": [entry]})
    assert cfg.generators[0].mode == "img2img"
    with pytest.raises(ConfigError, match="mode"):
        parse_config({"run": {"out": str(tmp_path)}, "real": {"path": "x"},
                      "generators": [{**entry, "family": "ddpm"}]})


def test_text_entries_keep_their_fingerprint_and_modes_change_it() -> None:
    base = GeneratorConfig(name="g", family="stable_diffusion", model="m")
    assert "mode" not in base.identity() and "aligned" not in base.identity()
    img2img = GeneratorConfig(name="g", family="stable_diffusion", model="m", mode="img2img")
    assert img2img.fingerprint() != base.fingerprint()
    stronger = GeneratorConfig(name="g", family="stable_diffusion", model="m", mode="img2img",
                               aligned=al.AlignedConfig(strength=0.5))
    assert stronger.fingerprint() != img2img.fingerprint()
    with pytest.raises(Invalid):
        al.check_mode("inpaint", al.AlignedConfig())
