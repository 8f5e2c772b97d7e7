"""Synthetic degradations: camera-shake and defocus kernels, sensor noise, two rain renderers, JPEG, and
the probabilities that mix them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dgunet.degrade import (
    MAX_KERNEL,
    Degradation,
    add_rain,
    add_rain_drops,
    add_rain_lines,
    blur_kernel,
    degrade,
    disk_kernel,
    shake_kernel,
)
from tests.images import photo

CLEAN = photo(96, 128, seed=3, noise=0.0).astype(np.float32) / 255.0  # smooth
TEXTURE = photo(96, 128, seed=4, noise=0.08).astype(np.float32) / 255.0
TEST_SEEDS = range(10_000, 10_020)  # never drawn by a training run (those use [seed, rank, step])


def _support_spread(kernel: np.ndarray) -> tuple[float, float]:
    """Standard deviations of the kernel's mass along its two principal axes."""
    ys, xs = np.nonzero(kernel > 0.05 * kernel.max())
    w = kernel[ys, xs]
    pts = np.stack([xs, ys], 1).astype(np.float64)
    mean = (pts * w[:, None]).sum(0) / w.sum()
    cov = ((pts - mean).T * w) @ (pts - mean) / w.sum()
    minor, major = np.sqrt(np.maximum(np.linalg.eigvalsh(cov), 0))
    return float(major), float(minor)


@pytest.mark.parametrize("seed", TEST_SEEDS)
def test_shake_kernels_are_normalised_smooth_trajectories(seed):
    k = shake_kernel(31, np.random.default_rng(seed))
    assert k.shape == (31, 31) and k.dtype == np.float32
    assert k.min() >= 0 and abs(float(k.sum()) - 1) < 1e-5
    major, minor = _support_spread(k)
    assert major > 3  # spans a good part of the kernel, not a dot
    # The trajectory is connected: no pixel of the support is isolated from the rest.
    import cv2

    support = (k > 0.02 * k.max()).astype(np.uint8)
    assert cv2.connectedComponents(support, connectivity=8)[0] - 1 == 1


def test_shake_kernels_are_not_only_straight_lines():
    spreads = [_support_spread(shake_kernel(25, np.random.default_rng(s))) for s in TEST_SEEDS]
    curved = sum(minor > 1.0 for _, minor in spreads)
    assert curved >= len(spreads) // 2, spreads  # most bend; a straight line has a minor spread under 0.5
    assert shake_kernel(25, np.random.default_rng(1)).tobytes() == shake_kernel(25, np.random.default_rng(1)).tobytes()


def test_defocus_disk_is_round_and_normalised():
    k = disk_kernel(15)
    assert abs(float(k.sum()) - 1) < 1e-5
    np.testing.assert_allclose(k, k.T, atol=1e-7)
    np.testing.assert_allclose(k, k[::-1], atol=1e-7)
    assert 0 < k[0, 7] < k[7, 7]  # the rim is anti-aliased, the centre full


def test_blur_kernels_stay_within_the_largest_size():
    spec = Degradation(kinds=("blur",), blur_size=(25, 45))
    sizes = {blur_kernel(spec, np.random.default_rng(s)).shape[0] for s in TEST_SEEDS}
    assert max(sizes) <= MAX_KERNEL and min(sizes) >= 25


def test_blur_with_sensor_noise_and_quantisation():
    plain = Degradation(kinds=("blur",), blur_size=(15, 15), quantize=False)
    noisy = dataclasses.replace(plain, blur_noise=(5.0, 5.0), quantize=True)
    a = degrade(TEXTURE, plain, np.random.default_rng(7))
    b = degrade(TEXTURE, noisy, np.random.default_rng(7))
    import cv2

    detail = lambda img: float(cv2.Laplacian(img.mean(axis=2), cv2.CV_32F).std())  # noqa: E731
    assert detail(a) < 0.3 * detail(TEXTURE)  # the texture is blurred away
    assert 3.5 < float((b - a).std()) * 255 < 6.5  # sensor noise of sigma 5 on top
    assert np.array_equal(b, np.rint(b * 255) / 255)  # 8-bit levels


@pytest.mark.parametrize("render", [add_rain, add_rain_lines, add_rain_drops])
def test_rain_adds_light_along_the_fall_direction(render):
    rng = np.random.default_rng(11)
    dark = np.full((128, 128, 3), 0.2, np.float32)
    out = render(dark, 0.01, 25, np.pi / 2, rng, width=1.5, brightness=1.0)
    added = (out - dark).mean(axis=2)
    assert out.min() >= dark.min() - 1e-6 and out.max() <= 1  # light only, clipped
    assert 0.01 < float(added.mean()) < 0.3
    # Vertical streaks: intensity varies much more across columns than down rows.
    assert added.mean(axis=0).std() > 2 * added.mean(axis=1).std()


@pytest.mark.parametrize("renderer", ["smear", "lines", "drops"])
def test_denser_rain_is_brighter_and_hazier(renderer):
    base = Degradation(kinds=("rain",), rain_renderer=renderer, rain_density=(0.002, 0.02), rain_haze=0.4)
    light = dataclasses.replace(base, rain_density=(0.002, 0.002))
    heavy = dataclasses.replace(base, rain_density=(0.02, 0.02))
    a = degrade(CLEAN, light, np.random.default_rng(1))
    b = degrade(CLEAN, heavy, np.random.default_rng(1))
    assert (b - CLEAN).mean() > 2 * (a - CLEAN).mean() > 0
    assert np.percentile(b, 1) > np.percentile(CLEAN, 1) + 0.1  # the veil lifts the darkest pixels


def test_the_two_rain_renderers_are_independent():
    kw = {"density": 0.01, "length": 20, "angle": np.pi / 2, "width": 1.0, "brightness": 1.0}
    dark = np.zeros((96, 96, 3), np.float32)
    a = add_rain(dark, rng=np.random.default_rng(2), **kw).mean(axis=2).ravel()
    b = add_rain_lines(dark, rng=np.random.default_rng(2), **kw).mean(axis=2).ravel()
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.3


def test_drops_take_the_colours_of_what_they_cross():
    scene = np.zeros((96, 96, 3), np.float32)
    scene[:, :48, 0], scene[:, 48:, 2] = 0.5, 0.5  # red on the left, blue on the right
    out = add_rain_drops(scene, 0.02, 20, np.pi / 2, np.random.default_rng(3), width=2.0, brightness=1.0)
    lit = out - scene
    left, right = lit[:, 8:40], lit[:, 56:88]
    assert left[..., 0].mean() > 0.01 and right[..., 2].mean() > 0.01  # drops shine where they fall
    # and in its colour, with a little light of their own
    assert left[..., 0].mean() > 1.5 * left[..., 2].mean() and right[..., 2].mean() > 1.5 * right[..., 0].mean()


def test_a_list_of_renderers_draws_one_per_image(monkeypatch):
    import dgunet.degrade as degrade_module

    calls = []
    for name in ("add_rain", "add_rain_drops"):
        monkeypatch.setattr(degrade_module, name, lambda img, *a, _n=name, **k: calls.append(_n) or img)
    spec = Degradation(kinds=("rain",), rain_renderer=("smear", "drops"))
    for s in range(40):
        degrade(CLEAN, spec, np.random.default_rng(s))
    assert len(calls) == 40 and 10 < calls.count("add_rain") < 30
    with pytest.raises(ValueError, match="rain_renderer"):
        Degradation(kinds=("rain",), rain_renderer=("smear", "hail"))


def test_probabilities_mix_clean_noisy_and_jpeg_images():
    spec = Degradation(
        kinds=("noise", "jpeg"), clean_probability=0.2, noise_probability=0.5, jpeg_probability=0.5, sigma=(20, 20)
    )
    outcomes = {"clean": 0, "noisy": 0, "other": 0}
    for s in range(60):
        out = degrade(CLEAN, spec, np.random.default_rng(s))
        diff = float(np.abs(out - CLEAN).max())
        outcomes["clean" if diff <= 0.5 / 255 + 1e-6 else "noisy" if (out - CLEAN).std() > 10 / 255 else "other"] += 1
    assert all(v > 3 for v in outcomes.values()), outcomes
    # Certain probabilities draw nothing: a spec without them consumes the generator as before.
    a, b = np.random.default_rng(0), np.random.default_rng(0)
    degrade(CLEAN, Degradation(kinds=("noise",), sigma=(5, 5)), a)
    b.uniform(5, 5)
    b.standard_normal(CLEAN.shape, dtype=np.float32)
    assert a.random() == b.random()


def test_bad_values_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="rain_renderer"):
        Degradation(rain_renderer="splat")
    with pytest.raises(ValueError, match="jpeg_probability"):
        Degradation(jpeg_probability=1.5)
    with pytest.raises(ValueError, match="blur_noise"):
        Degradation(blur_noise=(5, 1))
