"""JPEG damage as archives hold it (dgunet/jpeg_damage.py): one or two saves, 4:2:0 or 4:4:4, off the grid."""

from __future__ import annotations

import numpy as np

from dgunet.degrade import Degradation, degrade_pair, jpeg
from dgunet.jpeg_damage import archive_jpeg


def _photo(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + 3 * y), np.cos(5 * y), x * y], -1) * 0.4 + 0.5
    return np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1).astype(np.float32)


def test_a_spec_without_the_extras_draws_one_save_as_before():
    img, spec = _photo(), Degradation(kinds=("jpeg",), jpeg_quality=(20, 60))
    out, target = archive_jpeg(img, img, spec, np.random.default_rng(5))
    q = int(np.random.default_rng(5).integers(20, 61))  # the one draw a single save makes
    assert np.array_equal(out, jpeg(img, q)) and target is img


def test_chroma_subsampling_is_drawn_and_changes_the_colour():
    img = _photo()
    assert not np.array_equal(jpeg(img, 50, subsampling="4:4:4"), jpeg(img, 50, subsampling="4:2:0"))
    assert np.array_equal(jpeg(img, 50), jpeg(img, 50, subsampling="4:2:0"))  # Pillow's default
    spec = Degradation(kinds=("jpeg",), jpeg_quality=(50, 50), jpeg_444_probability=1.0)
    out, _ = archive_jpeg(img, img, spec, np.random.default_rng(0))
    assert np.array_equal(out, jpeg(img, 50, subsampling="4:4:4"))


def test_a_second_save_off_the_grid_or_resized_keeps_the_shape_and_a_reachable_target():
    img = _photo(1, 72)
    spec = Degradation(kinds=("jpeg",), jpeg_quality=(30, 30), jpeg_twice_probability=1.0, jpeg_regrid_probability=1.0)
    changed_targets = 0
    for seed in range(12):
        out, target = archive_jpeg(img, img, spec, np.random.default_rng(seed))
        assert out.shape == img.shape == target.shape and out.dtype == np.float32
        assert not np.array_equal(out, jpeg(img, 30))  # two saves are not one
        if target is not img:  # resized: the target went through the same resampling, without the JPEG
            changed_targets += 1
            assert 0 < np.abs(target - img).mean() < 0.02
            assert np.abs(out - target).mean() > 0.001
    assert 0 < changed_targets < 12  # both histories drawn


def test_degrade_pair_carries_the_jpeg_target_and_quantizes():
    img = _photo(2)
    spec = Degradation(kinds=("jpeg",), jpeg_quality=(10, 95), jpeg_twice_probability=0.5, jpeg_regrid_probability=0.5)
    for seed in range(6):
        out, target = degrade_pair(img, spec, np.random.default_rng(seed))
        assert out.shape == target.shape == img.shape
        assert np.array_equal(out, np.round(out * 255) / 255)
