"""Blur kernel families (dgunet/kernels.py), the streak-only test renderer (dgunet/weather.py) and the layered
training renderer (dgunet/rain_layers.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dgunet.degrade import Degradation, blur_kernel, degrade
from dgunet.kernels import TRAINING_FAMILIES, family_kernel, spline_kernel
from dgunet.rain_layers import add_rain_layers
from dgunet.weather import add_rain_streaks


@pytest.mark.parametrize("family", TRAINING_FAMILIES)
def test_every_family_draws_normalised_kernels_of_every_size(family):
    rng = np.random.default_rng(0)
    for size in (3, 9, 21, 35):
        k = family_kernel(family, size, rng)
        assert k.shape == (size, size) and k.dtype == np.float32
        assert k.min() >= 0 and abs(float(k.sum()) - 1) < 1e-5
    assert not np.array_equal(family_kernel(family, 21, rng), family_kernel(family, 21, rng)) or family == "defocus"


def test_the_test_generator_is_not_a_training_family_and_spreads_its_path():
    rng = np.random.default_rng(1)
    k = spline_kernel(25, rng)
    assert k.shape == (25, 25) and abs(float(k.sum()) - 1) < 1e-5
    assert (k > k.max() * 0.05).sum() >= 10  # a path, not a point
    assert "spline" not in TRAINING_FAMILIES


def test_a_spec_draws_from_its_families_and_refuses_unknown_ones():
    spec = Degradation(kinds=("blur",), blur_size=(3, 35), blur_families=("gaussian", "linear"))
    sizes = {blur_kernel(spec, np.random.default_rng(s)).shape[0] for s in range(20)}
    assert min(sizes) >= 3 and max(sizes) <= 35 and len(sizes) > 3
    with pytest.raises(ValueError, match="blur_families"):
        Degradation(kinds=("blur",), blur_families=("spline",))


def test_streak_rain_has_no_veil_and_is_lit_by_the_scene():
    rng = np.random.default_rng(2)
    dark, bright = np.full((96, 96, 3), 0.1, np.float32), np.full((96, 96, 3), 0.9, np.float32)
    out_dark = add_rain_streaks(dark, 0.01, 20, np.pi / 2, rng, width=1.5)
    out_bright = add_rain_streaks(bright, 0.01, 20, np.pi / 2, np.random.default_rng(2), width=1.5)
    assert out_dark.shape == dark.shape and out_dark.dtype == np.float32
    assert np.percentile(out_dark, 50) < 0.12  # most pixels untouched: streaks, no veil
    assert (out_dark - dark).max() > 0.1  # visible on a dark scene
    assert np.abs(out_bright - bright).max() < (out_dark - dark).max()  # nearly invisible on a bright one


def test_the_veil_can_be_left_out_of_a_share_of_rainy_images():
    img = np.full((64, 64, 3), 0.2, np.float32)
    veiled = Degradation(kinds=("rain",), rain_density=(0.03, 0.03), rain_haze=0.5)
    never = Degradation(kinds=("rain",), rain_density=(0.03, 0.03), rain_haze=0.5, rain_veil_probability=0.0)
    with_veil = np.median(degrade(img, veiled, np.random.default_rng(0)))
    without = np.median(degrade(img, never, np.random.default_rng(0)))
    assert with_veil > 0.5 and without < 0.35  # a downpour's veil lifts the whole image; streaks alone do not


def test_layered_rain_leaves_most_pixels_and_grows_with_density():
    dark = np.full((128, 128, 3), 0.1, np.float32)
    light = [add_rain_layers(dark, 0.002, 20, np.pi / 2, np.random.default_rng(s), width=1.5) for s in range(6)]
    heavy = [add_rain_layers(dark, 0.02, 20, np.pi / 2, np.random.default_rng(s), width=1.5) for s in range(6)]
    for out in light:
        assert out.shape == dark.shape and out.dtype == np.float32
        assert np.percentile(out, 50) < 0.11 and (out - dark).max() > 0.03  # streaks, no veil of its own
    assert np.mean([o.mean() for o in heavy]) > np.mean([o.mean() for o in light]) + 0.01


def test_layered_rain_is_sometimes_darker_than_a_bright_sky():
    sky = np.full((96, 96, 3), 0.95, np.float32)
    outs = [add_rain_layers(sky, 0.01, 20, np.pi / 2, np.random.default_rng(s), width=2.0) for s in range(12)]
    darker = [bool((o < sky - 0.02).any()) for o in outs]
    assert any(darker) and not all(darker)  # opaque streaks of the scene's light, or added light
