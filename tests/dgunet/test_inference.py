"""Any-size inference: shapes, dtypes, channels, tiling, ensemble, precision, flat images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dgunet import InferenceOptions, restore, restore_tensor
from dgunet.inference import pad_to_multiple, tile_starts


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((1, 1), np.uint8),
        ((5, 7, 3), np.uint8),
        ((17, 33, 3), np.uint16),
        ((20, 9), np.float32),
        ((16, 16, 1), np.uint8),
        ((19, 23, 4), np.uint8),
        ((12, 30, 2), np.uint16),
        ((40, 24, 3), np.float64),
    ],
)
def test_same_shape_dtype_and_range(tiny_model, shape, dtype):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        img = rng.integers(0, np.iinfo(dtype).max + 1, size=shape).astype(dtype)
    else:
        img = rng.random(shape).astype(dtype)
    out = restore(tiny_model, img)
    assert out.shape == img.shape and out.dtype == img.dtype
    if np.issubdtype(dtype, np.floating):
        assert out.min() >= 0 and out.max() <= 1
    if len(shape) == 3 and shape[2] in (2, 4):
        assert np.array_equal(out[..., -1], img[..., -1])  # alpha untouched


def test_grayscale_goes_through_rgb_model(tiny_model):
    gray = np.random.default_rng(1).integers(0, 256, (24, 24), dtype=np.uint8)
    rgb = restore(tiny_model, np.repeat(gray[..., None], 3, axis=2)).astype(np.float32)
    out = restore(tiny_model, gray)
    assert np.abs(out.astype(np.float32) - rgb.mean(axis=2)).max() <= 1


def test_tensor_layouts(tiny_model):
    x = torch.rand(2, 3, 20, 28)
    out = restore(tiny_model, x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert restore(tiny_model, x[0]).shape == (3, 20, 28)


def test_padding_reflects_and_handles_tiny_images():
    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    assert pad_to_multiple(x).shape == (1, 1, 16, 16)
    y = torch.rand(1, 3, 21, 30)
    p = pad_to_multiple(y)
    assert p.shape == (1, 3, 24, 32)
    assert torch.equal(p[..., 21, :30], y[..., 19, :])  # reflect: row 21 mirrors row 19


def test_tile_starts_cover_with_overlap():
    starts = tile_starts(1000, 256, 32)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 32 for a, b in zip(starts, starts[1:]))


class _Local(nn.Module):
    """A purely local network: tiling with overlap beyond its receptive field must be exact."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 5, padding=2, padding_mode="reflect")

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


def test_tiled_blend_equals_whole_for_local_network():
    model = _Local().eval()
    x = torch.rand(1, 3, 152, 208)  # multiples of 8: no padding at the border either way
    whole = restore_tensor(model, x, InferenceOptions(max_pixels=10**9))
    tiled = restore_tensor(model, x, InferenceOptions(max_pixels=1000, tile=64, overlap=16, tile_batch=3))
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_tiled_dgunet_close_to_whole(tiny_model):
    x = torch.rand(1, 3, 96, 128)
    whole = restore_tensor(tiny_model, x, InferenceOptions(max_pixels=10**9))
    tiled = restore_tensor(tiny_model, x, InferenceOptions(max_pixels=1000, tile=64, overlap=16))
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    assert (tiled - whole).abs().mean().item() < 0.05  # global ops make tiling an approximation


def test_self_ensemble_of_equivariant_model_is_identity():
    model = nn.Identity()
    model.register_parameter("p", nn.Parameter(torch.zeros(1)))  # restore_tensor reads the device
    x = torch.rand(1, 3, 16, 24)
    assert torch.allclose(restore_tensor(model, x, InferenceOptions(ensemble=True)), x, atol=1e-6)


def test_ensemble_averages_eight_runs(tiny_model):
    x = torch.rand(1, 3, 16, 24)
    ens = restore_tensor(tiny_model, x, InferenceOptions(ensemble=True))
    manual = []
    for k in range(4):
        for flip in (False, True):
            xi = torch.rot90(x, k, dims=(-2, -1))
            xi = xi.flip(-1) if flip else xi
            with torch.no_grad():
                yi = tiny_model(pad_to_multiple(xi))[..., : xi.shape[-2], : xi.shape[-1]]
            yi = yi.flip(-1) if flip else yi
            manual.append(torch.rot90(yi, -k, dims=(-2, -1)))
    assert torch.allclose(ens, torch.stack(manual).mean(0).clamp(0, 1), atol=1e-5)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_flat_images_give_no_nan(tiny_model, value):
    img = np.full((64, 48, 3), value, np.uint8)
    out = restore_tensor(tiny_model, torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
    assert torch.isfinite(out).all()


def test_bfloat16_autocast_keeps_inverse_in_float32(tiny_model):
    x = torch.rand(1, 3, 32, 32)
    fp32 = restore_tensor(tiny_model, x)
    bf16 = restore_tensor(tiny_model, x, InferenceOptions(precision="bfloat16"))
    assert torch.isfinite(bf16).all() and (bf16 - fp32).abs().mean().item() < 0.02


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="precision"):
        InferenceOptions(precision="fp8")
    with pytest.raises(ValueError, match="tile"):
        InferenceOptions(tile=100)


def test_weights_can_recommend_options(tiny_model):
    from types import SimpleNamespace

    from dgunet import recommended_options

    x = torch.rand(1, 3, 80, 96)
    assert recommended_options(tiny_model) == InferenceOptions()
    tiled = InferenceOptions(max_pixels=1, tile=32, overlap=8)
    tiny_model.weights = SimpleNamespace(inference={"max_pixels": 1, "tile": 32, "overlap": 8})
    assert recommended_options(tiny_model) == tiled
    assert torch.equal(restore_tensor(tiny_model, x), restore_tensor(tiny_model, x, tiled))
    assert not torch.equal(restore_tensor(tiny_model, x), restore_tensor(tiny_model, x, InferenceOptions()))
