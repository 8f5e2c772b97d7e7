"""Encoding restored pixels as PNG, WebP, JPEG or TIFF, with the metadata the output carries.

The rules, checked by :func:`check_fits` before anything is encoded: 16-bit pixels go only to PNG and
TIFF, alpha never to JPEG.

* **png**: OpenCV's encoder (libpng; the zlib level is ours) for 8 and 16 bits, gray, RGB and RGBA;
  Pillow for 8-bit gray + alpha, which OpenCV cannot write. Metadata chunks are spliced in after IHDR.
* **webp**: lossless, or lossy at a quality; gray is written as RGB (WebP has no gray).
* **jpeg**: quality and chroma subsampling (4:4:4 by default: restored detail is kept in colour too).
* **tiff**: 8 or 16 bits, Adobe deflate with horizontal prediction, written here (Pillow has no 16-bit
  RGB, and tifffile no EXIF directory), so that a 16-bit master keeps its EXIF.

    >>> data = encode_image(pixels, "jpeg", EncodeOptions(quality=90), Tags(exif=exif, srgb=True))
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .formats import OUTPUT_FORMATS, OUTPUT_NAMES
from .formats import format_of as format_of  # where the write stage and the planner have long found it
from .iptc import PNG_IPTC_KEY, jpeg_app13, raw_profile

EXTENSIONS = {f.name: f.extensions[0] for f in OUTPUT_FORMATS.values()}  # what outputs are named with


SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}  # Pillow's numbers
DEFAULT_JPEG_QUALITY = 92


@dataclass(frozen=True)
class EncodeOptions:
    """How each format is written (from the spec's ``output`` section)."""

    compress_level: int = 1  # PNG zlib level, 0-9
    quality: int | None = None  # JPEG (None: 92) and WebP (None: lossless), 1-100
    subsampling: str = "4:4:4"  # JPEG chroma subsampling
    tiff_compress_level: int = 6  # TIFF deflate level, 0-9


@dataclass(frozen=True)
class Tags:
    """What a file carries beside its pixels (see :func:`pipeline.stages.metadata.tags_for`)."""

    exif: bytes = b""  # b"Exif\0\0" + TIFF structure, or the TIFF structure alone
    xmp: bytes = b""
    iptc: bytes = b""  # IPTC-IIM records
    icc: bytes = b""  # a profile to embed as is
    srgb: bool = False  # tag the pixels as sRGB (ignored when ``icc`` is given)
    text: dict[str, str] = field(default_factory=dict)  # PNG text chunks
    comment: str = ""  # JPEG COM


def check_fits(pixels: np.ndarray, fmt: str) -> None:
    """Refuse pixels that ``fmt`` cannot hold without loss of depth or alpha (its row of
    :data:`~pipeline.stages.formats.OUTPUT_FORMATS`).

    Raises:
        ValueError: a bit depth or alpha that ``fmt`` does not hold; the message names ``output.format``.
    """
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"Expected output.format in {OUTPUT_NAMES}, but got {fmt!r} instead.")
    row, depth = OUTPUT_FORMATS[fmt], 8 * pixels.dtype.itemsize
    if depth not in row.bit_depths:
        able = _either(f.name for f in OUTPUT_FORMATS.values() if depth in f.bit_depths)
        raise ValueError(
            f"Expected {'/'.join(map(str, row.bit_depths))}-bit pixels for output.format {fmt} ({depth}-bit goes "
            f"only to {able}), but got {depth}-bit pixels instead."
        )
    if pixels.shape[2] in (2, 4) and not row.alpha:
        able = _either(f.name for f in OUTPUT_FORMATS.values() if f.alpha)
        raise ValueError(
            f"Expected pixels without alpha for output.format {fmt} (alpha goes to {able}), "
            f"but got {pixels.shape[2]} channels with alpha instead."
        )


def _either(names) -> str:
    *first, last = names
    return f"{', '.join(first)} or {last}" if first else last


def encode_image(pixels: np.ndarray, fmt: str, options: EncodeOptions = EncodeOptions(), tags: Tags = Tags()) -> bytes:
    """``(H, W, C)`` uint8/uint16 pixels (C in 1..4: gray, gray + alpha, RGB, RGBA) to a file's bytes, by
    the format's encoder (:data:`ENCODERS`).

    Raises:
        ValueError: the pixels do not fit ``fmt`` (:func:`check_fits`), or the encoder failed.
    """
    check_fits(pixels, fmt)
    return ENCODERS[fmt](pixels, options, tags)


def _png_file(pixels: np.ndarray, options: EncodeOptions, tags: Tags) -> bytes:
    return png_with_chunks(encode_png(pixels, compress_level=options.compress_level), tags)


def _tiff_file(pixels: np.ndarray, options: EncodeOptions, tags: Tags) -> bytes:
    return encode_tiff(pixels, tags, level=options.tiff_compress_level)


def _pillow_image(pixels: np.ndarray, tags: Tags):
    """The Pillow image of ``pixels`` and the keywords every Pillow encoder takes of ``tags``."""
    from PIL import Image

    arr = np.ascontiguousarray(pixels)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    kw: dict = {k: v for k, v in (("exif", tags.exif), ("xmp", tags.xmp)) if v}
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr, mode=mode), kw


def _webp_file(pixels: np.ndarray, options: EncodeOptions, tags: Tags) -> bytes:
    img, kw = _pillow_image(pixels, tags)
    img = img.convert("RGBA") if pixels.shape[2] in (2, 4) else img.convert("RGB")
    icc = tags.icc or (srgb_profile() if tags.srgb else b"")
    if icc:
        kw["icc_profile"] = icc
    buf = io.BytesIO()
    if options.quality is None:
        img.save(buf, format="WEBP", lossless=True, exact=True, **kw)  # exact: keep colour under alpha 0
    else:
        img.save(buf, format="WEBP", quality=options.quality, **kw)
    return buf.getvalue()


def _jpeg_file(pixels: np.ndarray, options: EncodeOptions, tags: Tags) -> bytes:
    img, kw = _pillow_image(pixels, tags)
    icc = tags.icc or (srgb_profile() if tags.srgb else b"")
    if icc and (pixels.shape[2] == 3) == _is_rgb_profile(icc):  # a gray JPEG takes no RGB profile, and so on
        kw["icc_profile"] = icc
    if tags.iptc:
        kw["extra"] = jpeg_app13(tags.iptc)
    if tags.comment:
        kw["comment"] = tags.comment
    buf = io.BytesIO()
    quality = options.quality or DEFAULT_JPEG_QUALITY
    img.save(buf, format="JPEG", quality=quality, subsampling=SUBSAMPLING[options.subsampling], **kw)
    return buf.getvalue()


def encode_png(pixels: np.ndarray, *, compress_level: int = 1) -> bytes:
    """``(H, W, C)`` uint8/uint16 pixels (C in 1..4) to PNG bytes, without metadata."""
    import cv2

    c = pixels.shape[2]
    if c == 2:
        if pixels.dtype == np.uint8:
            from PIL import Image

            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(pixels), mode="LA").save(
                buf, format="PNG", compress_level=compress_level
            )
            return buf.getvalue()
        gray, alpha = pixels[..., :1], pixels[..., 1:]
        pixels = np.concatenate([gray, gray, gray, alpha], axis=2)  # 16-bit gray + alpha as RGBA
        c = 4
    if c == 3:
        arr = pixels[..., ::-1]
    elif c == 4:
        arr = pixels[..., [2, 1, 0, 3]]
    else:
        arr = pixels[..., 0]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise ValueError(f"PNG encoding failed for pixels of shape {pixels.shape} and dtype {pixels.dtype}.")
    return buf.tobytes()


@functools.cache
def srgb_profile() -> bytes:
    """LittleCMS's sRGB profile, as embedded in outputs tagged sRGB."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _is_rgb_profile(icc: bytes) -> bool:
    return icc[16:20] == b"RGB "  # the profile header's colour space field


# -- PNG chunks --------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _text_chunk(key: str, value: str) -> bytes:
    try:
        return _chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:  # iTXt: UTF-8, uncompressed, no language tag
        return _chunk(b"iTXt", key.encode("utf-8")[:79] + b"\0\0\0\0\0" + value.encode("utf-8"))


def png_with_chunks(png: bytes, tags: Tags) -> bytes:
    """``png`` with colour (``iCCP`` or ``sRGB``), ``eXIf``, XMP (``iTXt XML:com.adobe.xmp``), IPTC (a
    ``zTXt`` raw profile) and text chunks inserted after IHDR, before the image data.

    >>> png_with_chunks(png, Tags(srgb=True, text={"Software": "dgunet-restore"}))[33:41]
    b'\\x00\\x00\\x00\\x01sRGB'
    """
    chunks = []
    if tags.icc:
        chunks.append(_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(tags.icc)))
    elif tags.srgb:
        chunks.append(_chunk(b"sRGB", b"\0"))  # rendering intent: perceptual
    if tags.exif:
        chunks.append(_chunk(b"eXIf", tags.exif[6:] if tags.exif.startswith(b"Exif\0\0") else tags.exif))
    if tags.xmp:
        chunks.append(_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + tags.xmp))
    if tags.iptc:
        profile = raw_profile("iptc", tags.iptc).encode("latin-1")
        chunks.append(_chunk(b"zTXt", PNG_IPTC_KEY.encode("latin-1") + b"\0\0" + zlib.compress(profile)))
    chunks += [_text_chunk(k, v) for k, v in tags.text.items()]
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length and type, its 13 bytes, CRC
    if png[12:16] != b"IHDR":
        raise ValueError(f"Expected a PNG starting with IHDR, but got {png[12:16]!r} instead.")
    return png[:ihdr_end] + b"".join(chunks) + png[ihdr_end:]


# -- TIFF --------------------------------------------------------------------------------------------


def encode_tiff(pixels: np.ndarray, tags: Tags = Tags(), *, level: int = 6) -> bytes:
    """``(H, W, C)`` uint8/uint16 pixels to a little-endian baseline TIFF: one IFD, chunky samples, Adobe
    deflate with horizontal differencing (predictor 2) in strips of about 256 KiB, with EXIF (IFD0 tags
    and the EXIF and GPS directories), XMP, IPTC and an ICC profile where ``tags`` has them."""
    from PIL import Image, TiffImagePlugin, TiffTags

    if pixels.shape[2] == 2 and pixels.dtype == np.uint16:  # as in PNG: readers (Pillow) lack 16-bit gray + alpha
        pixels = np.concatenate([pixels[..., :1]] * 3 + [pixels[..., 1:]], axis=2)
    h, w, c = pixels.shape
    arr = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
    diff = arr.copy()
    diff[:, 1:] -= arr[:, :-1]  # unsigned wrap-around is what predictor 2 means
    row_bytes = w * c * arr.itemsize
    rows_per_strip = max(1, min(h, (1 << 18) // row_bytes))
    strips = [zlib.compress(diff[y : y + rows_per_strip].tobytes(), level) for y in range(0, h, rows_per_strip)]
    offsets = np.cumsum([0] + [len(s) + (len(s) & 1) for s in strips[:-1]]).tolist()

    ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if tags.exif:
        exif = Image.Exif()
        exif.load(tags.exif)
        for tag, value in exif.items():
            ifd[tag] = exif.get_ifd(tag) if tag in (0x8769, 0x8825) else value
    bits = 8 * arr.itemsize
    ifd[256], ifd[257] = w, h
    ifd[258] = (bits,) * c
    ifd[259] = 8  # Adobe deflate
    ifd[262] = 2 if c >= 3 else 1  # RGB, or min-is-black
    ifd[277] = c
    ifd[278] = rows_per_strip
    ifd[273] = tuple(offsets)  # relative: Pillow adds where the data starts, after the directory
    ifd[279] = tuple(len(s) for s in strips)
    ifd[284] = 1  # chunky
    ifd[317] = 2  # horizontal differencing
    ifd[339] = (1,) * c  # unsigned integers
    if c in (2, 4):
        ifd[338] = 2  # unassociated alpha
    for tag in (273, 279):
        ifd.tagtype[tag] = TiffTags.LONG
    icc = tags.icc or (srgb_profile() if tags.srgb and c >= 3 else b"")
    for tag, value in ((700, tags.xmp), (33723, tags.iptc), (34675, icc)):
        if value:
            ifd[tag] = value
            ifd.tagtype[tag] = TiffTags.BYTE if tag == 700 else TiffTags.UNDEFINED
    body = ifd.tobytes(8)
    data = b"".join(s + b"\0" * (len(s) & 1) for s in strips)
    return b"II*\0" + struct.pack("<I", 8) + body + data


# Each output format's encoder (a row of pipeline.stages.formats.OUTPUT_FORMATS each; a test holds it).
ENCODERS = {"png": _png_file, "webp": _webp_file, "jpeg": _jpeg_file, "tiff": _tiff_file}
