"""Every output format against the pipeline's own decoder: lossless ones give back the exact pixels of
every layout they hold, lossy ones close pixels, and the rest is refused with the key named."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.stages.decode import decode_image
from pipeline.stages.encode import EncodeOptions, check_fits, encode_image
from tests.images import photo

RGB = photo(20, 28, seed=7)
LAYOUTS = {  # name -> (H, W, C) pixels
    "gray": RGB[..., :1].copy(),
    "gray+alpha": np.dstack([RGB[..., 0], RGB[..., 1]]),
    "rgb": RGB,
    "rgba": np.dstack([RGB, RGB[..., 2]]),
}
LAYOUTS.update({f"{k} 16-bit": v.astype(np.uint16) * 257 + 5 for k, v in list(LAYOUTS.items())})


def _fits(name: str, fmt: str) -> bool:
    return not (("16-bit" in name and fmt in ("webp", "jpeg")) or ("alpha" in name and fmt == "jpeg"))


@pytest.mark.parametrize("fmt", ["png", "tiff", "webp"])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_lossless_formats_give_back_the_pixels(name, fmt):
    pixels = LAYOUTS[name]
    if not _fits(name, fmt):
        with pytest.raises(ValueError, match=f"output.format {fmt}"):
            encode_image(pixels, fmt)
        return
    back = decode_image(encode_image(pixels, fmt), max_pixels=10**6).pixels
    if fmt == "webp" and pixels.shape[2] <= 2:  # WebP has no gray: written as RGB(A)
        back = back[..., [0, 3]] if pixels.shape[2] == 2 else back[..., :1]
    if back.shape[2] == 4 and pixels.shape[2] == 2:  # 16-bit gray + alpha is written as RGBA
        back = back[..., [0, 3]]
    assert back.dtype == pixels.dtype and np.array_equal(back, pixels)


@pytest.mark.parametrize("name", ["gray", "rgb"])
def test_jpeg_is_close_and_refuses_what_it_cannot_hold(name):
    pixels = LAYOUTS[name]
    back = decode_image(encode_image(pixels, "jpeg", EncodeOptions(quality=95)), max_pixels=10**6).pixels
    assert back.shape == pixels.shape and np.abs(back.astype(int) - pixels).mean() < 4
    with pytest.raises(ValueError, match=r"Expected 8-bit pixels for output\.format jpeg .* but got 16-bit"):
        check_fits(LAYOUTS[f"{name} 16-bit"], "jpeg")
    with pytest.raises(ValueError, match=r"Expected pixels without alpha for output\.format jpeg"):
        check_fits(LAYOUTS["rgba"], "jpeg")
