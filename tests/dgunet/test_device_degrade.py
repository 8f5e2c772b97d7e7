"""Noise and blur on the training device (``data.device_degradations``): what the CPU leaves undone, and
the device doing it as the CPU would."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dgunet.degrade import Degradation, DeviceOps, blur, degrade, degrade_split, disk_kernel, shake_kernel
from dgunet.patches import DeviceBatch, PatchSampler, apply_device_ops
from tests.images import photo

TEXTURE = photo(96, 128, seed=4, noise=0.08).astype(np.float32) / 255.0


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _image(x: torch.Tensor, i: int) -> np.ndarray:
    return x[i].permute(1, 2, 0).numpy()


def test_the_device_blur_is_the_cpu_blur_to_the_edges():
    kernels = [shake_kernel(21, np.random.default_rng(3)), disk_kernel(9), None]
    x = _batch([TEXTURE, TEXTURE[::-1].copy(), TEXTURE])
    out = apply_device_ops(x, DeviceBatch.of([DeviceOps(kernel=k) for k in kernels], seed=0), quantize=False)
    for i, k in enumerate(kernels):
        want = _image(x, i) if k is None else blur(_image(x, i), k)  # an image without a blur is left as it is
        np.testing.assert_allclose(_image(out, i), want, atol=2e-6)


def test_device_noise_has_each_images_level_and_is_clipped_then_quantised():
    grey = np.full((128, 128, 3), 0.5, np.float32)
    x = _batch([grey, grey, np.zeros_like(grey)])
    batch = DeviceBatch.of([DeviceOps(sigma=25.0), DeviceOps(), DeviceOps(sigma=25.0)], seed=5)
    out = apply_device_ops(x, batch, quantize=True)
    assert abs(float((_image(out, 0) - 0.5).std()) * 255 - 25) < 1.0
    assert np.array_equal(_image(out, 1), np.rint(grey * 255) / 255)  # no noise, but quantised
    assert _image(out, 2).min() == 0 and _image(out, 2).mean() > 0.03  # black: only the positive half survives
    assert torch.equal(out, torch.round(out * 255) / 255)
    again = apply_device_ops(x, batch, quantize=True)
    assert torch.equal(out, again)  # the batch's seed fixes its noise
    other = apply_device_ops(x, dataclasses.replace(batch, seed=6), quantize=True)
    assert not torch.equal(out, other)


def test_noise_then_blur_then_noise_in_that_order():
    k = disk_kernel(15)
    x = _batch([TEXTURE])
    blurred = apply_device_ops(x, DeviceBatch.of([DeviceOps(kernel=k)], seed=1), quantize=False)
    after = apply_device_ops(x, DeviceBatch.of([DeviceOps(kernel=k, sigma_after=5.0)], seed=1), quantize=False)
    before = apply_device_ops(x, DeviceBatch.of([DeviceOps(sigma=20.0, kernel=k)], seed=1), quantize=False)
    assert 4.0 < float((after - blurred).std()) * 255 < 6.0  # sensor noise on top of the blur
    assert float((before - blurred).std()) * 255 < 20 / 3  # noise before the blur is mostly blurred away


def test_the_cpu_leaves_noise_and_blur_to_the_device_unless_rain_or_jpeg_follows():
    noise_then_jpeg = Degradation(kinds=("noise", "jpeg"), sigma=(20, 20), jpeg_probability=1.0, quantize=False)
    done, ops = degrade_split(TEXTURE, noise_then_jpeg, np.random.default_rng(0))
    assert ops == DeviceOps() and float(np.abs(done - TEXTURE).mean()) > 0.01  # all done on the CPU
    noise_only = dataclasses.replace(noise_then_jpeg, jpeg_probability=0.0)
    left, ops = degrade_split(TEXTURE, noise_only, np.random.default_rng(0))
    assert np.array_equal(left, TEXTURE) and ops.sigma == 20 and ops.kernel is None
    shaken = Degradation(kinds=("blur",), blur_size=(11, 11), blur_noise=(2, 2), quantize=False)
    left, ops = degrade_split(TEXTURE, shaken, np.random.default_rng(0))
    assert np.array_equal(left, TEXTURE) and ops.kernel.shape == (11, 11) and ops.sigma_after == 2
    rain_after_blur = dataclasses.replace(shaken, kinds=("blur", "rain"))
    done, ops = degrade_split(TEXTURE, rain_after_blur, np.random.default_rng(0))
    assert ops == DeviceOps() and not np.array_equal(done, TEXTURE)
    two_blurs = dataclasses.replace(shaken, kinds=("blur", "blur"), blur_noise=(0, 0))  # no device form
    done, ops = degrade_split(TEXTURE, two_blurs, np.random.default_rng(0))
    assert ops == DeviceOps() and not np.array_equal(done, TEXTURE)


@pytest.mark.parametrize(
    "spec",
    [
        Degradation(kinds=("noise", "jpeg"), sigma=(25, 25), jpeg_probability=0.0),
        Degradation(kinds=("blur",), blur_size=(15, 15), blur_motion_probability=0.0, blur_noise=(3, 3)),
    ],
    ids=["denoise", "deblur"],
)
def test_batches_degraded_on_the_device_match_the_cpus(spec):
    # One 64-px image, so every crop is the whole of it, flipped or turned (which a disk blur ignores):
    # each path's PSNRs differ only by their noise pixels.
    image = (TEXTURE[:64, :64] * 255).astype(np.uint8)

    def psnrs(device_ops: bool) -> np.ndarray:
        sampler = PatchSampler([image], patch=64, batch=32, degradation=spec, device_ops=device_ops)
        drawn = sampler.sample(np.random.default_rng(11))
        degraded, clean = drawn[0], drawn[1]
        if device_ops:
            assert torch.equal(degraded, clean)  # the CPU left it all to the device
            degraded = apply_device_ops(degraded, drawn[2], quantize=spec.quantize)
        mse = ((degraded - clean) ** 2).mean(dim=(1, 2, 3))
        return (10 * torch.log10(1 / mse)).numpy()

    cpu, device = psnrs(False), psnrs(True)
    assert abs(float(np.median(device) - np.median(cpu))) < 0.1
    assert float(np.ptp(device)) < 0.5 and float(np.ptp(cpu)) < 0.5


def test_degrade_split_makes_the_same_kinds_of_image_as_degrade():
    spec = Degradation(kinds=("noise",), sigma=(25, 25), quantize=False)
    left, ops = degrade_split(TEXTURE, spec, np.random.default_rng(2))
    on_device = _image(apply_device_ops(_batch([left]), DeviceBatch.of([ops], seed=3), quantize=False), 0)
    on_cpu = degrade(TEXTURE, spec, np.random.default_rng(2))
    assert abs(float((on_device - TEXTURE).std() - (on_cpu - TEXTURE).std())) * 255 < 0.5
