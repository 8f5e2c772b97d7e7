"""HEIC/HEIF (pillow-heif, libheif's encoder) and AVIF (Pillow's plugin) as inputs, made by the real
encoders: 8 and 10-bit, EXIF with orientation and GPS, read by a whole run with ``output.format: same``."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from pipeline.run.cli import main
from pipeline.stages.decode import decode_image
from pipeline.stages.formats import READ_FORMATS
from pipeline.stages.metadata import read_metadata
from pipeline.storage import IMAGE_EXTENSIONS
from tests.images import photo
from tests.jobs import write_spec

GPS = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 0.0)}


def _banded() -> Image.Image:
    """40 high, 60 wide, its top rows red: where they end up shows the rotation applied."""
    arr = photo(40, 60, seed=3)
    arr[:8] = (255, 0, 0)
    return Image.fromarray(arr)


def _exif(orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "PhoneMaker"
    exif[0x8825] = GPS
    return exif


def heic(img: Image.Image, **kw) -> bytes:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    buf = io.BytesIO()
    img.save(buf, "HEIF", quality=90, **kw)
    return buf.getvalue()


def heic_10bit(seed: int = 0) -> bytes:
    from pillow_heif import from_bytes

    arr = (np.asarray(photo(32, 48, seed=seed), np.uint16) * 257).astype(np.uint16)
    buf = io.BytesIO()
    from_bytes(mode="RGB;16", size=(48, 32), data=arr.tobytes()).save(buf, quality=-1)  # 16-bit in: 10-bit HEIC
    return buf.getvalue()


def avif(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "AVIF", quality=90, **kw)
    return buf.getvalue()


def test_heic_and_avif_are_listed_and_read():
    assert {".heic", ".heif", ".avif"} <= IMAGE_EXTENSIONS and {"HEIF", "AVIF"} <= set(READ_FORMATS)


@pytest.mark.parametrize("encode", [heic, avif])
def test_orientation_is_applied_and_exif_with_gps_kept(encode):
    data = encode(_banded(), exif=_exif(6).tobytes())
    decoded = decode_image(data, max_pixels=10**6)
    px = decoded.pixels
    assert px.shape == (60, 40, 3) and px.dtype == np.uint8 and decoded.lossy  # rotated upright
    assert px[:, -4:, 0].mean() > 200 and px[:, :4, 1].mean() < px[:, -4:, 0].mean()  # the red band: right side
    meta = read_metadata(data, converted=True)
    exif = Image.Exif()
    exif.load(meta.exif)
    assert exif[0x010F] == "PhoneMaker" and exif.get_ifd(0x8825)[2] == GPS[2]


def test_a_10_bit_heic_decodes_to_16_bits():
    data = heic_10bit()
    assert Image.open(io.BytesIO(heic(Image.new("RGB", (2, 2))))).format == "HEIF"
    px = decode_image(data, max_pixels=10**6).pixels
    assert px.shape == (32, 48, 3) and px.dtype == np.uint16 and px.max() > 255 * 64  # 10 bits, scaled to 16


@pytest.mark.slow
def test_a_run_restores_phone_formats_into_png_with_their_metadata(ray_local, tmp_path, tiny_weights):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "phone").mkdir(parents=True)
    (src / "phone" / "IMG_0001.HEIC").write_bytes(heic(_banded(), exif=_exif(6).tobytes()))
    (src / "phone" / "deep.heif").write_bytes(heic_10bit())
    (src / "web.avif").write_bytes(avif(_banded(), exif=_exif(1).tobytes()))
    res = {"gpus_per_actor": 0, "cpus_per_actor": 1, "max_actors": 1, "batch_size": 3}
    spec = write_spec(
        tmp_path / "spec.yaml",
        tiny_weights,
        input_uri=str(src),
        output={"uri": str(out), "format": "same"},
        resources=res,
    )
    assert main(["--spec", str(spec), "--run-id", "phone", "--allow-failed-fraction", "0"]) == 0
    rows = {r["input_uri"].rsplit("/", 1)[-1]: r for r in pads.dataset(str(out / "stats")).to_table().to_pylist()}
    assert {r["status"] for r in rows.values()} == {"ok"} and len(rows) == 3
    # Formats the project does not write come out as PNG, and the row says so.
    assert {r["output_format"] for r in rows.values()} == {"png"}
    assert rows["deep.heif"]["bit_depth"] == 16 and rows["IMG_0001.HEIC"]["bit_depth"] == 8
    upright = Image.open(out / "images" / "phone" / "IMG_0001.png")
    assert upright.size == (40, 60) and upright.getexif().get(0x0112) == 1
    assert upright.getexif().get_ifd(0x8825)[2] == GPS[2] and "exif" in rows["IMG_0001.HEIC"]["metadata"]
    deep = Image.open(out / "images" / "phone" / "deep.png")
    assert deep.mode in ("I;16", "RGB") and np.asarray(Image.open(out / "images" / "web.png")).shape == (40, 60, 3)
    assert cv_depth(out / "images" / "phone" / "deep.png") == 16


def cv_depth(path) -> int:
    """Bits per sample of a PNG, from its IHDR."""
    return path.read_bytes()[24]
