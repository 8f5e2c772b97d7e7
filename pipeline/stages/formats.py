"""The image formats the pipeline reads, and the one way it opens a file's bytes.

Pillow picks a decoder from a file's first bytes, whatever its name says, among some 40 formats: an EPS
file named ``x.png`` would start Ghostscript. Every file the project opens from an archive or an output
prefix goes through :func:`open_image`, which lets Pillow try the decoders of :data:`READ_FORMATS` only;
bytes of any other format fail with a reason that names what they look like and what is read, and no
other decoder, nor any external program, runs.

    >>> open_image(png_bytes).format
    'PNG'
    >>> open_image(b"%!PS-Adobe-3.0 EPSF-3.0\\n...")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    UnreadFormatError: Expected an image in a format that is read (PNG, ...), but got EPS (PostScript) instead.
"""

from __future__ import annotations

import functools
import io

# Pillow's names of the formats every stage reads; MPO is a JPEG with more frames (phone cameras); HEIF
# (iPhones' HEIC) through pillow-heif's opener, whose wheels carry libheif; AVIF through Pillow's own plugin.
READ_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "WEBP", "BMP", "GIF", "HEIF", "AVIF")

# What Pillow is asked to try: an MPO opens through JPEG's opener (it has none of its own).
_OPENERS = tuple(f for f in READ_FORMATS if f != "MPO")

# What bytes of formats that are not read look like: only to name them in a failed row's reason.
_SIGNATURES = (
    (b"%!PS", "EPS (PostScript)"),
    (b"\xc5\xd0\xd3\xc6", "EPS (PostScript, DOS binary)"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD (Photoshop)"),
    (b"SIMPLE  =", "FITS"),
    (b"\x01\xda", "SGI"),
    (b"DDS ", "DDS"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"icns", "ICNS"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000 (codestream)"),
    (b"gimp xcf", "XCF (GIMP)"),
    (b"#?RADIANCE", "HDR (Radiance)"),
    (b"v/1\x01", "OpenEXR"),
    (b"qoif", "QOI"),
    (b"/* XPM */", "XPM"),
    (b"#define", "XBM"),
    (b"<?xml", "XML (SVG?)"),
    (b"<svg", "SVG"),
    (b"RIFF", "RIFF (not WebP)"),
)
# The first bytes of the formats that are read: a file that starts so and still does not open is damaged.
_READ_SIGNATURES = (
    (b"\x89PNG", "PNG"),
    (b"\xff\xd8", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
)


class UnreadFormatError(ValueError):
    """The bytes are not an image in one of :data:`READ_FORMATS`; the message names what they look like."""


# ISO base media files (HEIF, AVIF) say what they are in their ftyp box's major brand.
_FTYP_BRANDS = {b"heic": "HEIF", b"heix": "HEIF", b"heim": "HEIF", b"heis": "HEIF", b"mif1": "HEIF", b"msf1": "HEIF"}
_FTYP_BRANDS.update({b"avif": "AVIF", b"avis": "AVIF"})


def describe_format(data: bytes) -> str:
    """What ``data`` looks like, by its first bytes (for a reason, never to pick a decoder)."""
    head = bytes(data[:16])
    if head[4:8] == b"ftyp":
        name = _FTYP_BRANDS.get(head[8:12])
        return f"a {name} whose header is damaged" if name else f"an ISO media file ({head[8:12]!r}, not HEIF or AVIF)"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WEBP whose header is damaged"
    for magic, name in _READ_SIGNATURES:
        if head.startswith(magic):
            return f"a {name} whose header is damaged"
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    if len(head) >= 2 and head[:1] == b"P" and head[1:2] in b"1234567":
        return "PNM"
    if head[:1] == b"\x0a" and head[1:2] in b"\x00\x02\x03\x04\x05":
        return "PCX"
    return "bytes that are not a recognised image format"


def open_image(data: bytes):
    """``PIL.Image.open`` of ``data`` for the formats of :data:`READ_FORMATS` only (headers read, pixels not).

    Raises:
        UnreadFormatError: the bytes are in no format that is read.
        Image.DecompressionBombError, OSError, ValueError: as ``PIL.Image.open`` raises them.
    """
    from PIL import Image, UnidentifiedImageError

    _register_heif()
    try:
        img = Image.open(io.BytesIO(data), formats=_OPENERS)
    except UnidentifiedImageError:
        img = None
    if img is None or img.format not in READ_FORMATS:
        raise UnreadFormatError(
            f"Expected an image in a format that is read ({', '.join(READ_FORMATS)}), "
            f"but got {describe_format(data)} instead."
        )
    return img


@functools.cache
def _register_heif() -> None:
    """pillow-heif's HEIF opener, registered with Pillow once (its AVIF opener is not: Pillow's own reads
    AVIF). Without pillow-heif installed, HEIF files fail as a format that is not read."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    # Thumbnails are not wanted, and orientation is the container's (applied by libheif, EXIF's reset to 1).
    register_heif_opener(thumbnails=False)
