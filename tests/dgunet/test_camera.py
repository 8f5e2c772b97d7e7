"""Camera noise (dgunet/camera.py): the development inverts the unprocessing, each Bayer phase and
demosaicing method keeps colours where they are, and the noise is what a camera's is: signal-dependent,
spatially correlated, and mostly invisible to a white-noise estimator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dgunet import camera as C
from dgunet.degrade import Degradation, degrade, degrade_pair
from tests.images import photo


@pytest.mark.parametrize("method", C.DEMOSAIC)
@pytest.mark.parametrize("phase", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_each_phase_and_method_keeps_a_flat_colour(phase, method):
    rng = np.random.default_rng(0)
    colour = np.array([0.7, 0.35, 0.15], np.float32)
    img = np.broadcast_to(colour, (16, 16, 3)).copy()
    cam = dataclasses.replace(C.random_camera(rng), phase=phase, demosaic=method)
    out = C.noiseless(img, cam)
    np.testing.assert_allclose(out[2:-2, 2:-2], img[2:-2, 2:-2], atol=2 / 255)


def test_unprocessing_and_developing_without_a_mosaic_is_the_identity():
    rng = np.random.default_rng(1)
    img = photo(64, 64, seed=1).astype(np.float32) / 255
    cam = C.random_camera(rng)
    raw = C.unprocess(img, cam)
    lin = np.clip(raw * cam.gains.astype(np.float32) @ np.linalg.inv(cam.rgb_to_cam).T.astype(np.float32), 0, 1)
    back = C._tone(lin ** (1 / cam.gamma), cam.tone)
    assert np.abs(back - img).max() < 2e-3


def _residual(shot: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = photo(128, 128, seed=seed).astype(np.float32) / 255
    noisy, clean = C.camera_noise(img, shot, rng)
    return noisy - clean, noisy


def test_the_noise_grows_with_the_shot_gain_and_is_correlated_in_space():
    stds = [np.mean([_residual(shot, s)[0].std() * 255 for s in range(3)]) for shot in (1e-3, 3e-3, 1e-2)]
    assert stds[0] < stds[1] < stds[2] and stds[0] > 3
    res = _residual(3e-3, 0)[0][..., 1]
    lag1 = np.corrcoef(res[:, :-1].ravel(), res[:, 1:].ravel())[0, 1]
    assert lag1 > 0.2  # demosaicing spreads each pixel's noise to its neighbours (white noise: about 0)


def test_a_white_noise_estimator_reads_well_under_the_true_level():
    from skimage.restoration import estimate_sigma

    res, noisy = _residual(3e-3, 2)
    estimated = estimate_sigma(noisy, channel_axis=-1, average_sigmas=True) * 255
    assert estimated < 0.6 * res.std() * 255


def test_camera_noise_in_the_degradation_changes_the_target_too():
    clean = photo(64, 64, seed=3).astype(np.float32) / 255
    spec = Degradation(kinds=("noise",), camera_probability=1.0)
    noisy, target = degrade_pair(clean, spec, np.random.default_rng(4))
    assert not np.array_equal(target, clean) and target.shape == clean.shape
    assert np.array_equal(noisy, degrade(clean, spec, np.random.default_rng(4)))
    assert np.array_equal(target, np.round(target * 255) / 255)  # an 8-bit development
    awgn = Degradation(kinds=("noise",))
    assert degrade_pair(clean, awgn, np.random.default_rng(4))[1] is clean


def test_camera_noise_has_no_device_form():
    from dgunet.degrade import degrade_split

    with pytest.raises(ValueError, match="camera"):
        degrade_split(np.zeros((8, 8, 3), np.float32), Degradation(camera_probability=0.5), np.random.default_rng(0))
