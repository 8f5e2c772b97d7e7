"""Decoding every layout right, and failing bad files with a reason."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.stages.decode import DecodeError, decode_image
from pipeline.stages.encode import encode_png
from pipeline.stages.formats import READ_FORMATS
from tests.images import bad_files, eps_bytes, good_files, jpeg_with_orientation, photo, psd_bytes

GOOD, BAD = good_files(), bad_files()
LIMIT = 50_000_000

EXPECTED = {  # name -> (channels, dtype)
    "rgb.png": (3, np.uint8),
    "nested/deeper/gray.png": (1, np.uint8),
    "nested/rgba.png": (4, np.uint8),
    "nested/gray alpha.png": (2, np.uint8),
    "16bit/rgb16.png": (3, np.uint16),
    "16bit/gray16.png": (1, np.uint16),
    "palette.png": (4, np.uint8),
    "cmyk.jpg": (3, np.uint8),
    "rotated.JPG": (3, np.uint8),
    "animated.gif": (3, np.uint8),
    "tiny 1x1.png": (3, np.uint8),
    "odd size.bmp": (3, np.uint8),
    "scan.tiff": (3, np.uint8),
    "web.webp": (3, np.uint8),
    "ünïcödé/фото №1.png": (3, np.uint8),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_good_files_decode_to_expected_layout(name):
    d = decode_image(GOOD[name], max_pixels=LIMIT)
    channels, dtype = EXPECTED[name]
    assert d.pixels.ndim == 3 and d.pixels.shape[2] == channels and d.pixels.dtype == dtype


def test_sixteen_bits_are_kept():
    d = decode_image(GOOD["16bit/rgb16.png"], max_pixels=LIMIT)
    expected = photo().astype(np.uint16) * 257 + 3
    assert np.array_equal(d.pixels, expected)  # exact 16-bit values, RGB order


def test_exif_orientation_is_applied():
    arr = photo(24, 40, noise=0.0)  # smooth, so that JPEG's error is small
    d = decode_image(jpeg_with_orientation(arr, 6), max_pixels=LIMIT)
    assert d.pixels.shape[:2] == (40, 24)  # orientation 6: rotated 90 degrees clockwise for display
    assert np.abs(d.pixels.astype(int) - np.rot90(arr, -1).astype(int)).mean() < 3


def test_animated_gif_gives_first_frame():
    d = decode_image(GOOD["animated.gif"], max_pixels=LIMIT)
    assert d.frames == 3 and abs(int(d.pixels.mean()) - 200) < 8


def test_palette_transparency_becomes_alpha():
    d = decode_image(GOOD["palette.png"], max_pixels=LIMIT)
    assert d.pixels.shape[2] == 4 and set(np.unique(d.pixels[..., 3])) <= {0, 255}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad/empty.png", "empty file"),
        ("bad/truncated.png", "truncated"),
        ("bad/truncated.jpg", "(?i)truncated"),
        ("bad/not an image.png", "not a recognised image"),
        ("bad/random.jpg", "not a recognised image"),
        ("bad/bomb.png", "exceeds the limit"),
    ],
)
def test_bad_files_fail_with_reason(name, reason):
    with pytest.raises(DecodeError, match=reason):
        decode_image(BAD[name], max_pixels=LIMIT)


@pytest.mark.parametrize(("data", "what"), [(eps_bytes(), "EPS (PostScript)"), (psd_bytes(), "PSD (Photoshop)")])
def test_a_format_that_is_not_read_fails_naming_what_it_is_and_what_is_read(data, what):
    with pytest.raises(DecodeError) as err:
        decode_image(data, max_pixels=LIMIT)
    assert str(err.value) == (
        f"Expected an image in a format that is read ({', '.join(READ_FORMATS)}), but got {what} instead."
    )


def test_an_eps_named_png_starts_no_ghostscript(tmp_path):
    """Pillow would open EPS bytes with its EPS decoder, which runs ``gs`` on load: a ``gs`` on the PATH that
    leaves a mark shows that nothing started it."""
    mark = tmp_path / "gs ran"
    gs = tmp_path / "bin" / "gs"
    gs.parent.mkdir()
    gs.write_text(f"#!/bin/sh\ntouch '{mark}'\nexit 1\n")
    gs.chmod(0o755)
    (tmp_path / "x.png").write_bytes(eps_bytes())
    code = (
        "import sys\nfrom pipeline.stages.decode import DecodeError, decode_image\n"
        "try:\n    decode_image(open(sys.argv[1], 'rb').read(), max_pixels=10**6)\n"
        "except DecodeError as exc:\n    print(exc)\n"
    )
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PATH": f"{gs.parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.png")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "but got EPS (PostScript) instead" in out.stdout
    assert not mark.exists()


def test_pixel_limit_is_configurable():
    data = GOOD["rgb.png"]
    with pytest.raises(DecodeError, match="exceeds the limit of 100 pixels"):
        decode_image(data, max_pixels=100)


def test_pillows_own_bomb_guard_stays_on_for_every_other_image():
    """Decoding with the run's limit leaves Pillow's guard as it was for every other image the worker opens
    (metadata, profiles, anything else): a header declaring 10 gigapixels is still refused by a plain
    ``Image.open`` after decodes under a large and a small limit."""
    default = Image.MAX_IMAGE_PIXELS
    assert default is not None
    decode_image(GOOD["rgb.png"], max_pixels=10**12)
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode_image(BAD["bad/bomb.png"], max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == default
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(BAD["bad/bomb.png"]))


@pytest.mark.parametrize("name", sorted(GOOD))
def test_png_round_trip_keeps_depth_channels_and_pixels(name):
    pixels = decode_image(GOOD[name], max_pixels=LIMIT).pixels
    back = decode_image(encode_png(pixels, compress_level=1), max_pixels=LIMIT).pixels
    assert back.dtype == pixels.dtype and back.shape == pixels.shape
    assert np.array_equal(back, pixels)


def test_sixteen_bit_gray_alpha_is_written_as_rgba():
    la16 = np.dstack([np.full((4, 5), 1000, np.uint16), np.full((4, 5), 65535, np.uint16)])
    img = Image.open(io.BytesIO(encode_png(la16)))
    back = decode_image(encode_png(la16), max_pixels=LIMIT).pixels
    assert back.dtype == np.uint16 and back.shape == (4, 5, 4) and img.size == (5, 4)
    assert (back[..., :3] == 1000).all() and (back[..., 3] == 65535).all()
