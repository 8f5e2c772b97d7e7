"""The noise estimate (quality.noise_level): white noise and a camera's (demosaiced, signal-dependent)
read near their true level, where scikit-image's white-noise estimator alone reads a camera's at a third;
a clean photo reads under the denoiser's gate."""

from __future__ import annotations

import numpy as np
import pytest

from dgunet.camera import camera_noise
from dgunet.degrade import add_noise, to_uint8
from pipeline.quality import NOISE_FIT, noise_design, noise_level, noise_scales, white_noise_level


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    from skimage import data

    return data.astronaut()[:256, 256:].astype(np.float32) / 255  # a real photo's texture (sky and suit)


def _true(noisy: np.ndarray, reference: np.ndarray) -> float:
    return float(np.std(noisy.astype(np.float64) - reference.astype(np.float64)))


def test_the_fit_has_a_coefficient_for_every_term():
    assert len(NOISE_FIT) == len(noise_design(np.ones(6)))


@pytest.mark.parametrize("shot", [1e-3, 3e-3, 6e-3])
def test_a_cameras_noise_reads_near_its_level_where_the_white_estimator_reads_a_fraction(clean, shot):
    white = []
    for seed in range(4):  # four cameras: their demosaicing and colour matrices differ
        noisy, reference = (to_uint8(x) for x in camera_noise(clean, shot, np.random.default_rng(seed)))
        true = _true(noisy, reference)
        assert abs(noise_level(noisy) - true) <= 0.3 * true, (seed, noise_level(noisy), true)
        white.append(white_noise_level(noisy) / true)
    assert np.mean(white) < 0.6, white


@pytest.mark.parametrize("sigma", [5, 15, 40])
def test_white_noise_reads_within_a_quarter_of_its_level(clean, sigma):
    noisy = to_uint8(add_noise(clean, sigma, np.random.default_rng(8)))
    true = _true(noisy, to_uint8(clean))
    assert abs(noise_level(noisy) - true) <= 0.25 * true, (noise_level(noisy), true)


def test_a_clean_photo_reads_under_the_denoisers_gate_and_small_images_fall_back(clean):
    assert noise_level(to_uint8(clean)) < 4.5
    small = to_uint8(clean[:48, :48])
    assert noise_scales(small) is None and noise_level(small) == white_noise_level(small)
