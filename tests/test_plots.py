"""Report figures: each writes a PNG of the size asked that PIL opens, showing the numbers given."""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402

from aigi.detectors import plots  # noqa: E402


def open_png(path, size):
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == size
        im.load()
        return np.asarray(im.convert("RGB"))


def matrix_rows():
    """A 3 x (3 + all) cross-generator table with one undefined cell."""
    gens = ["sdA", "sdB", "flux"]
    rows, want = [], {}
    for i, g in enumerate(gens):
        for j, t in enumerate([*gens, "all"]):
            v = float("nan") if (g, t) == ("flux", "sdA") else round(0.5 + 0.1 * i + 0.037 * j, 4)
            rows.append({"train_generator": g, "test_generator": t, "auroc": v, "acc": 1 - v})
            want[g, t] = v
    return gens, rows, want


def pairwise_auroc(y, s):
    fake, real = s[y == 1][:, None], s[y == 0][None, :]
    return float(((fake > real) + 0.5 * (fake == real)).mean())


def encoded(color, fmt, shape=(40, 30)):
    buf = io.BytesIO()
    Image.new("RGB", shape, color).save(buf, format=fmt)
    return buf.getvalue()


# ---------------------------------------------------------------- heatmap


def test_heatmap_cells_show_the_values_given(tmp_path):
    gens, rows, want = matrix_rows()
    r_labels, c_labels, values = plots.heatmap_grid(rows, "auroc")
    assert r_labels == gens and c_labels == [*gens, "all"]
    fig = plots.heatmap_figure(rows, "auroc", size=(600, 420))
    ax = fig.axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert len(cells) == len(r_labels) * len(c_labels)
    for (i, j), text in cells.items():
        v = want[r_labels[i], c_labels[j]]
        assert text == ("—" if math.isnan(v) else f"{v:.3f}")
    assert [t.get_text() for t in ax.get_xticklabels()] == c_labels
    assert [t.get_text() for t in ax.get_yticklabels()] == r_labels
    path = plots.heatmap(rows, "auroc", tmp_path / "sub" / "matrix.png", size=(600, 420))
    assert path == tmp_path / "sub" / "matrix.png"
    open_png(path, (600, 420))
    # the default size grows with the matrix
    with Image.open(plots.heatmap(rows, "acc", tmp_path / "acc.png")) as im:
        assert im.size == (max(480, 200 + 80 * 4), max(360, 160 + 50 * 3))


# ---------------------------------------------------------------- ROC


def test_roc_curves_one_per_generator_with_auroc_in_the_legend(tmp_path):
    rng = np.random.default_rng(0)
    source = np.array(["coco"] * 40 + ["sdA"] * 30 + ["flux"] * 30)
    y = (source != "coco").astype(int)
    score = 1 / (1 + np.exp(-(rng.normal(size=100) + 1.5 * y + 0.8 * (source == "flux"))))
    fig = plots.roc_figure(y, score, source)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    want = {g: pairwise_auroc(y[(y == 0) | (source == g)], score[(y == 0) | (source == g)]) for g in ["flux", "sdA"]}
    want["all"] = pairwise_auroc(y, score)
    assert [t.split(" (AUROC ")[0] for t in legend] == list(want)
    for t, v in zip(legend, want.values(), strict=True):
        assert float(t.split(" (AUROC ")[1].rstrip(")")) == pytest.approx(v, abs=5e-4 + 1e-9)  # 3 decimals
    open_png(plots.roc_curves(y, score, source, tmp_path / "roc.png", size=(500, 400)), (500, 400))
    with pytest.raises(ValueError, match="both real and generated"):
        plots.roc_curves(np.ones(3), np.ones(3), np.array(["a"] * 3), tmp_path / "x.png")


# ---------------------------------------------------------------- bars


def test_metric_bars_whiskers_come_from_the_interval(tmp_path):
    rows = [
        {"generator": "sdA", "auroc": 0.9, "auroc_low": 0.85, "auroc_high": 0.93},
        {"generator": "flux", "auroc": float("nan"), "auroc_low": float("nan"), "auroc_high": float("nan")},
        {"generator": "all", "auroc": 0.8, "auroc_low": 0.78, "auroc_high": 0.81},
    ]
    labels, values, err = plots.bar_data(rows, "auroc")
    assert labels == ["sdA", "flux", "all"]
    np.testing.assert_allclose(err, [[0.05, 0, 0.02], [0.03, 0, 0.01]], atol=1e-12)
    assert math.isnan(values[1])
    # no interval: no whiskers; a seed spread: symmetric whiskers
    assert plots.bar_data([{"generator": "a", "acc": 0.5}], "acc")[2] is None
    _, _, err = plots.bar_data([{"generator": "a", "acc": 0.5, "acc_std": 0.1}], "acc")
    np.testing.assert_allclose(err, [[0.1], [0.1]])
    # a long table's label joins its text keys
    assert plots.bar_data([{"held_out": "sd", "generator": "sdA", "acc": 0.5}], "acc")[0] == ["sd / sdA"]
    open_png(plots.metric_bars(rows, "auroc", tmp_path / "bars.png", size=(520, 380)), (520, 380))
    open_png(plots.metric_bars(rows[:1], "auroc", tmp_path / "one.png"), (480, 420))


# ---------------------------------------------------------------- confident mistakes


def test_confident_mistakes_picks_the_most_confidently_wrong_images(tmp_path):
    rows = {
        "image_id": np.array(["r1", "r2", "r3", "r4", "f1", "f2", "f3", "f4"]),
        "source": np.array(["coco"] * 4 + ["sdA"] * 4),
        "label": np.array([0, 0, 0, 0, 1, 1, 1, 1]),
        "score": np.array([0.2, 0.7, 0.95, 0.5, 0.9, 0.1, 0.4, 0.01]),
    }
    reals, fakes = plots.pick_mistakes(rows, k=8)
    assert [r["image_id"] for r in reals] == ["r3", "r2", "r4"]  # score >= 0.5 is "generated"
    assert [r["image_id"] for r in fakes] == ["f4", "f2", "f3"]
    reals, fakes = plots.pick_mistakes(rows, k=2)
    assert [r["image_id"] for r in reals] == ["r3", "r2"] and [r["image_id"] for r in fakes] == ["f4", "f2"]
    images = {i: encoded((200, 30 * n % 255, 40), "PNG" if n % 2 else "JPEG") for n, i in enumerate(rows["image_id"])}
    path = plots.confident_mistakes(rows, images, tmp_path / "mistakes.png", k=2, size=(400, 360))
    pixels = open_png(path, (400, 360))
    assert (pixels.reshape(-1, 3) == (255, 255, 255)).all(axis=1).mean() < 0.99  # something was drawn
    open_png(plots.confident_mistakes(rows, images, tmp_path / "k3.png", k=3), (60 + 150 * 3, 480))
    with pytest.raises(KeyError, match="r3"):
        plots.confident_mistakes(rows, {k: v for k, v in images.items() if k != "r3"}, tmp_path / "x.png", k=2)


def test_confident_mistakes_with_no_mistakes_still_draws(tmp_path):
    rows = [{"image_id": "a", "label": 0, "score": 0.1}, {"image_id": "b", "label": 1, "score": 0.9}]
    open_png(plots.confident_mistakes(rows, {}, tmp_path / "none.png", k=2), (360, 480))
