"""Bundled weights: metadata declared once and true to the file; offline loading."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from dgunet import WEIGHTS, Weights, create_model, num_params, restore
from dgunet.registry import default_weights
from dgunet.tasks import ESTIMATES, NAMES

INDEX = Path(__file__).resolve().parents[2] / "dgunet" / "weights" / "index.json"


def test_every_bundled_weight_matches_its_metadata():
    assert WEIGHTS, "the package ships at least the default denoiser"
    for w in WEIGHTS.values():
        data = w.path().read_bytes()
        assert hashlib.sha256(data).hexdigest() == w.sha256
        assert len(data) <= 10 * 1024 * 1024
        model = create_model(w.task, weights=w.name)
        assert num_params(model) == w.num_params and model.cfg == w.config
        assert w.recipe["command"].startswith("python jobs/train.py") and w.metrics["mean"]


def test_index_entries_round_trip_through_the_schema():
    entries = json.loads(INDEX.read_text())
    assert [e["name"] for e in entries] == list(WEIGHTS)
    for entry in entries:
        assert Weights.from_entry(entry).to_entry() == entry
        assert WEIGHTS[entry["name"]].to_entry() == entry
        assert entry["gate"]["estimate"] in ESTIMATES  # every bundled weights declare their gate
    assert {WEIGHTS[e["name"]].task for e in entries} == set(NAMES)  # every task of the table ships a model


def test_an_entry_with_an_unknown_or_missing_key_names_it():
    entry = json.loads(INDEX.read_text())[0]
    with pytest.raises(ValueError, match=r"unknown \['sigma'\]"):
        Weights.from_entry({**entry, "sigma": 25})
    with pytest.raises(ValueError, match=r"missing \['gate'\]"):
        Weights.from_entry({k: v for k, v in entry.items() if k != "gate"})


def test_the_bundled_denoiser_restores_noise():
    model = create_model("denoise")
    assert not model.training and model.weights.task == "denoise"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    clean = np.stack([xx * 3, yy * 3, 128 + 0 * xx], axis=2).astype(np.float64)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    out = restore(model, noisy)
    err = lambda a: np.sqrt(((a.astype(np.float64) - clean) ** 2).mean())  # noqa: E731
    assert err(out) < 0.5 * err(noisy)


def test_the_bundled_deraining_model_removes_streaks_and_declares_its_rain_gate():
    import skimage.data

    from dgunet.degrade import Degradation, rain, to_uint8

    model = create_model("derain")
    assert not model.training and model.weights.name == "dgunet.derain_small"
    assert model.weights.gate.estimate == "rain" and model.weights.gate.below == 1.5
    cat = skimage.data.chelsea()[100:228, 100:228]
    streaks = Degradation(
        kinds=("rain",), rain_density=(0.01, 0.01), rain_length=(20, 20), rain_width=(1.5, 1.5), rain_haze=0.3
    )
    rainy = to_uint8(rain(cat.astype(np.float32) / 255.0, streaks, np.random.default_rng(4)))
    err = lambda a: np.sqrt(((a.astype(np.float64) - cat) ** 2).mean())  # noqa: E731
    assert err(restore(model, rainy)) < 0.5 * err(rainy)


def test_missing_default_is_a_clear_error(monkeypatch):
    import dgunet.registry

    monkeypatch.setattr(dgunet.registry, "WEIGHTS", {k: w for k, w in WEIGHTS.items() if w.task != "deblur"})
    shipped = r"\(bundled tasks: \['dejpeg', 'denoise'"
    with pytest.raises(LookupError, match=r"No trained default model for task 'deblur' .*" + shipped):
        default_weights("deblur")


@pytest.mark.parametrize(
    "heading, task",
    [
        ("## The bundled default denoiser", "denoise"),
        ("## The bundled deraining model", "derain"),
        ("## The bundled deblurring model", "deblur"),
        ("## The bundled JPEG-artifact model", "dejpeg"),
    ],
)
def test_model_cards_match_the_measured_metrics(heading, task):
    """A bundled model's card (its section of docs/models.md) holds the numbers of its index.json entry."""
    models = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    card = models[models.index(heading) :]
    card = card[: card.index("\n## ", 1)]  # its own section only: other models' cards have the same cases
    rows = {line.split("|")[1].strip(): line for line in card.splitlines() if line.startswith("| ")}
    metrics = default_weights(task).metrics["mean"]
    assert set(metrics) <= set(rows)
    for case, methods in metrics.items():
        for method, value in methods.items():
            shown = f"**{value['psnr']:.2f}** / {value['ssim']:.3f}" if method == "ours" else f"{value['psnr']:.2f} / "
            assert shown in rows[case], (case, method, rows[case])
