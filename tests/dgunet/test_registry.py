"""Bundled weights: metadata declared once and true to the file; offline loading."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dgunet import WEIGHTS, build_model, load_pretrained, num_params, restore
from dgunet.registry import default_weights


def test_every_bundled_weight_matches_its_metadata():
    assert WEIGHTS, "the package ships at least the default denoiser"
    for w in WEIGHTS.values():
        data = w.path().read_bytes()
        assert hashlib.sha256(data).hexdigest() == w.sha256
        assert len(data) <= 10 * 1024 * 1024
        model = build_model(
            w.config.arch,
            n_feat=w.config.n_feat,
            scale_unetfeats=w.config.scale_unetfeats,
            scale_orsnetfeats=w.config.scale_orsnetfeats,
            depth=w.config.depth,
        )
        assert num_params(model) == w.num_params
        assert w.recipe["command"].startswith("python jobs/train.py") and w.metrics["mean"]


def test_load_pretrained_denoiser_restores_noise():
    model = load_pretrained("denoise")
    assert not model.training and model.weights.task == "denoise"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    clean = np.stack([xx * 3, yy * 3, 128 + 0 * xx], axis=2).astype(np.float64)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    out = restore(model, noisy)
    err = lambda a: np.sqrt(((a.astype(np.float64) - clean) ** 2).mean())  # noqa: E731
    assert err(out) < 0.5 * err(noisy)


def test_missing_default_is_a_clear_error():
    with pytest.raises(LookupError, match="No trained default model for task 'derain'"):
        default_weights("derain")


def test_readme_model_card_matches_the_measured_metrics():
    """The model card's table for the default denoiser (docs/models.md) holds the numbers of its index.json entry."""
    from pathlib import Path

    models = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    card = models[models.index("## The bundled default denoiser") :]
    card = card[: card.index("\n## ", 1)]  # its own section only: other models' cards have the same cases
    rows = {line.split("|")[1].strip(): line for line in card.splitlines() if line.startswith("| ")}
    metrics = default_weights("denoise").metrics["mean"]
    assert set(metrics) <= set(rows)
    for case, methods in metrics.items():
        for method, value in methods.items():
            shown = f"**{value['psnr']:.2f}** / {value['ssim']:.3f}" if method == "ours" else f"{value['psnr']:.2f} / "
            assert shown in rows[case], (case, method, rows[case])
