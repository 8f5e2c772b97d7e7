"""Decoding image bytes into pixels, one file per row; a bad file becomes a ``failed`` row.

What :func:`decode_image` guarantees, where ``ray.data.read_images`` does not:

* EXIF orientation applied; ICC-tagged colour converted to sRGB;
* 16-bit PNG and TIFF, and 10 and 12-bit HEIF (HEIC), kept at 16 bits (uint16), 8-bit images as uint8;
  AVIF is read by Pillow's plugin at 8 bits, whatever its depth;
* grayscale stays 1 channel, alpha is kept (gray + alpha: 2 channels, RGBA: 4); palette images expand
  to RGB or RGBA; CMYK and other colour spaces convert to RGB; animated images give their first frame;
* only the formats of :data:`~pipeline.stages.formats.READ_FORMATS` are opened: bytes of any other
  format (an EPS named ``x.png``) fail with a reason naming what they are, and no other decoder runs;
* the pixel count is checked from the header before anything is decoded (decompression bombs), and
  truncated or non-image files raise :class:`DecodeError` with the reason; Pillow's own bomb guard stays
  on for every image the process opens (:func:`pillow_limit`).
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..rows import OK, Col, fail
from .formats import UnreadFormatError, open_image
from .metadata import Metadata, read_metadata

_TO_RGB_MODES = {"CMYK", "YCbCr", "LAB", "HSV", "RGBX"}


class DecodeError(ValueError):
    """The bytes are not a decodable image within the limits; the message says why."""


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # (H, W, C) uint8 or uint16, C in 1..4
    mode: str  # the file's own mode, e.g. "RGB", "I;16", "P", "CMYK"
    frames: int  # frames in the file (only the first is used)
    lossy: bool = False  # JPEG or lossy WebP: compression artefacts that a noise estimate does not see


def _is_16bit(img, data: bytes) -> bool:
    if img.format == "PNG" and data[12:16] == b"IHDR":
        return data[24] == 16
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) == 16
    if img.format == "HEIF":  # 10 and 12 bits, as pillow-heif says (its Pillow image is 8-bit)
        return int(img.info.get("bit_depth") or 8) > 8
    return False


def _is_lossy(img, data: bytes) -> bool:
    if img.format in ("JPEG", "MPO", "HEIF", "AVIF"):  # phones' HEIC and AVIF are lossy (HEVC, AV1)
        return True
    return img.format == "WEBP" and data[12:16] == b"VP8 "  # "VP8L" is lossless, "VP8X" may be either


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """EXIF orientation 1-8 applied to an ``(H, W, C)`` array (for decoders that ignore it)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.rot90(a[:, ::-1], 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a[:, ::-1], -1),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _decode_16bit(data: bytes, orientation: int) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DecodeError("16-bit image could not be decoded (truncated or corrupt)")
    if arr.ndim == 2:
        arr = arr[..., None]
    elif arr.shape[2] == 3:
        arr = arr[..., ::-1]  # BGR -> RGB
    elif arr.shape[2] == 4:
        arr = arr[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    return _apply_orientation(np.ascontiguousarray(arr.astype(np.uint16, copy=False)), orientation)


def _decode_heif_16bit(data: bytes, orientation: int) -> np.ndarray:
    """A 10 or 12-bit HEIF's pixels as uint16 (libheif scales them to 16 bits), the container's rotation and
    mirroring applied by libheif (pillow-heif then resets EXIF's orientation to 1)."""
    from pillow_heif import open_heif

    heif = open_heif(data, convert_hdr_to_8bit=False)
    arr = np.asarray(heif)
    arr = arr[..., None] if arr.ndim == 2 else arr
    return _apply_orientation(np.ascontiguousarray(arr.astype(np.uint16, copy=False)), orientation)


def _to_srgb(img):
    from PIL import ImageCms

    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img  # a broken profile: keep the pixels as they are


@contextmanager
def pillow_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's own decompression-bomb guard at ``max_pixels`` for the images opened inside (it refuses
    twice that as it reads a header; :func:`decode_image` checks the header itself for the rest), and at
    Pillow's default for every other image this process opens: the guard is never lifted."""
    from PIL import Image

    default, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = default


def decode_image(data: bytes, *, max_pixels: int) -> Decoded:
    """Decode one file's bytes into ``(H, W, C)`` pixels; see the module docstring.

    Raises:
        DecodeError: empty, truncated, not an image, or more than ``max_pixels`` pixels.
    """
    from PIL import Image, ImageOps

    if not data:
        raise DecodeError("empty file")
    try:
        with pillow_limit(max_pixels):
            img = open_image(data)  # the formats that are read, and no other decoder
    except UnreadFormatError as exc:
        raise DecodeError(str(exc)) from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"image exceeds the limit of {max_pixels} pixels ({exc})") from None
    except Exception as exc:
        raise DecodeError(f"unreadable image header: {exc}") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise DecodeError(f"image declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise DecodeError(f"image of {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels")
    frames = getattr(img, "n_frames", 1)
    mode, lossy = img.mode, _is_lossy(img, data)
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:
        orientation = 1
    try:
        if _is_16bit(img, data) and mode not in ("I;16", "I;16B", "I;16L", "I"):
            decode16 = _decode_heif_16bit if img.format == "HEIF" else _decode_16bit
            return Decoded(decode16(data, orientation), mode, frames, lossy)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            img = ImageOps.exif_transpose(img)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"truncated or corrupt image data: {exc}") from None
    return Decoded(_pixels(img), mode, frames, lossy)


def _pixels(img) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(img, dtype=np.uint16)[..., None].copy()
    if mode in ("I", "F"):
        arr = np.asarray(img)
        if mode == "F":  # floating point data: assumed in [0, 1]
            arr = np.clip(arr, 0, 1) * 65535
        return np.clip(arr, 0, 65535).astype(np.uint16)[..., None]
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode in ("1", "L"):
        img = img.convert("L")
    elif mode in ("LA", "La"):
        img = img.convert("LA")
    elif mode in ("RGBa",):
        img = img.convert("RGBA")
    elif mode in _TO_RGB_MODES:
        img = _to_srgb(img) if mode == "CMYK" else img
        img = img.convert("RGB")
    img = _to_srgb(img)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None].copy() if arr.ndim == 2 else arr.copy()


def decode_batch(batch: dict[str, np.ndarray], *, max_pixels: int) -> dict[str, np.ndarray]:
    """Ray Data stage: ``data`` (file bytes) to ``pixels`` (raw bytes), ``shape`` (H, W, C) and ``dtype``,
    with ``lossy`` (the file's compression) and ``metadata``
    (:meth:`pipeline.stages.metadata.Metadata.to_json`: EXIF, XMP, IPTC, text, ICC; "" for failed rows),
    which the write stage carries into the output. What degrades the image is the next stage's to measure
    (:func:`pipeline.stages.measure.measure_batch`).

    Rows that already failed (e.g. unreadable objects) pass through; a file that does not decode fails
    its own row only.
    """
    n = len(batch[Col.INPUT_URI])
    columns = _empty_columns(n)
    status, error = list(batch[Col.STATUS]), list(batch[Col.ERROR])
    for i in range(n):
        if status[i] != OK:
            continue
        t0 = time.perf_counter()
        try:
            pixels, values = _decode_row(batch[Col.DATA][i], max_pixels=max_pixels)
        except DecodeError as exc:
            status[i], error[i] = fail(f"decode: {exc}")
            continue
        values[Col.DECODE_SECONDS] = time.perf_counter() - t0
        for col, value in values.items():
            columns[col][i] = value
    out = {k: v for k, v in batch.items() if k != Col.DATA}
    out.update({col: np.array(v, dtype=object) if isinstance(v, list) else v for col, v in columns.items()})
    out.update({Col.STATUS: np.array(status, dtype=object), Col.ERROR: np.array(error, dtype=object)})
    return out


def _empty_columns(n: int) -> dict[str, Any]:
    """The columns this stage adds, for ``n`` rows, as a row that does not decode leaves them (lists become
    object arrays)."""
    return {
        Col.PIXELS: [b""] * n,
        Col.SHAPE: np.zeros((n, 3), np.int64),
        Col.DTYPE: [""] * n,
        Col.MODE: [""] * n,
        Col.DECODE_SECONDS: np.zeros(n),
        Col.LOSSY: np.zeros(n, bool),
        Col.METADATA: [""] * n,
    }


def _decode_row(data: bytes, *, max_pixels: int) -> tuple[np.ndarray, dict[str, Any]]:
    """One file's pixels ``(H, W, C)``, and its row's values of ``pixels`` (raw bytes), ``shape``, ``dtype``,
    ``mode``, ``lossy`` and ``metadata``.

    Raises:
        DecodeError: as :func:`decode_image`.
    """
    d = decode_image(data, max_pixels=max_pixels)
    # The decoder converts 8-bit colour with an ICC profile to sRGB; 16-bit and gray pixels stay in theirs.
    converted = d.pixels.dtype == np.uint8 and d.pixels.shape[2] >= 3
    return d.pixels, {
        Col.PIXELS: d.pixels.tobytes(),
        Col.SHAPE: d.pixels.shape,
        Col.DTYPE: d.pixels.dtype.name,
        Col.MODE: d.mode,
        Col.LOSSY: d.lossy,
        Col.METADATA: _metadata_json(data, converted=converted, max_pixels=max_pixels),
    }


def _metadata_json(data: bytes, *, converted: bool, max_pixels: int) -> str:
    """The file's metadata (:meth:`~pipeline.stages.metadata.Metadata.to_json`); metadata that cannot be read
    is a problem named in it, never a failure of the image."""
    try:
        with pillow_limit(max_pixels):  # the same image, opened again for its metadata
            meta = read_metadata(data, converted=converted)
    except Exception as exc:  # metadata never fails an image; the stats say what was lost
        meta = Metadata(problems=(f"metadata: unreadable ({type(exc).__name__}: {exc})"[:200],))
    return meta.to_json()
