"""The image formats the pipeline reads and writes, and the one way it opens a file's bytes.

What each output format holds is one row of :data:`OUTPUT_FORMATS` (its extensions, bit depths, alpha,
whether it is lossy, what metadata it carries, where our provenance goes); the spec's format names, the
encoder's checks, what an output carries of an input's metadata and how a written file's provenance is read
back all read the table. Adding an output format: a row here and its encoder (``ENCODERS`` in
:mod:`pipeline.stages.encode`).

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
import posixpath
from dataclasses import dataclass

METADATA = ("exif", "xmp", "iptc", "icc", "comment")  # what an output can carry of an input's metadata


@dataclass(frozen=True)
class OutputFormat:
    """One format that outputs are written in: a row of :data:`OUTPUT_FORMATS`."""

    name: str  # as output.format spells it
    extensions: tuple[str, ...]  # lower case; the first names the outputs
    pillow: str  # Pillow's name of it (what open_image says of the written file)
    bit_depths: tuple[int, ...]  # of the pixels it holds without loss
    alpha: bool  # holds an alpha channel
    gray: bool  # holds gray as one channel (else gray is written as RGB, and takes only RGB profiles)
    lossy: str  # "never", "optional" (output.quality makes it lossy) or "always" (output.quality applies)
    subsampling: bool  # output.jpeg_subsampling applies
    carries: frozenset[str]  # of METADATA
    provenance: str  # where our record goes: "text" (text chunks beside the input's text) or "xmp"
    gray_srgb: bool  # a gray image is tagged sRGB (else a gray image takes no profile: none is RGB)
    title: str  # as prose spells it

    def __post_init__(self) -> None:
        if self.lossy not in ("never", "optional", "always") or self.provenance not in ("text", "xmp"):
            raise ValueError(f"Expected lossy never/optional/always and provenance text/xmp in {self.name}.")
        if not self.carries <= set(METADATA):
            raise ValueError(f"Expected carries from {METADATA}, but got {sorted(self.carries)} instead.")


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    f.name: f
    for f in (
        OutputFormat(
            "png", (".png",), "PNG", (8, 16), alpha=True, gray=True, lossy="never", subsampling=False,
            carries=frozenset({"exif", "xmp", "iptc", "icc"}), provenance="text", gray_srgb=True, title="PNG",
        ),
        OutputFormat(
            "webp", (".webp",), "WEBP", (8,), alpha=True, gray=False, lossy="optional", subsampling=False,
            carries=frozenset({"exif", "xmp", "icc"}), provenance="xmp", gray_srgb=True, title="WebP",
        ),
        OutputFormat(
            "jpeg", (".jpg", ".jpeg", ".jpe"), "JPEG", (8,), alpha=False, gray=True, lossy="always",
            subsampling=True, carries=frozenset(METADATA), provenance="xmp", gray_srgb=False, title="JPEG",
        ),
        OutputFormat(
            "tiff", (".tif", ".tiff"), "TIFF", (8, 16), alpha=True, gray=True, lossy="never", subsampling=False,
            carries=frozenset({"exif", "xmp", "iptc", "icc"}), provenance="xmp", gray_srgb=False, title="TIFF",
        ),
    )
}  # fmt: skip
OUTPUT_NAMES = tuple(OUTPUT_FORMATS)
DEFAULT_OUTPUT = "png"  # for names with none of the table's extensions
_OUTPUT_OF_EXTENSION = {ext: f.name for f in OUTPUT_FORMATS.values() for ext in f.extensions}


def format_of(name: str) -> str:
    """The output format a file name asks for, by its extension: ``"a/b.JPEG"`` -> ``"jpeg"``; names without
    one of the table's extensions are PNG. The planner names outputs with it and the write stage reads their
    format back with it."""
    return _OUTPUT_OF_EXTENSION.get(posixpath.splitext(name)[1].lower(), DEFAULT_OUTPUT)


def output_format(pillow_name: str) -> OutputFormat | None:
    """The row of the output format that Pillow calls ``pillow_name`` (None: not one that is written)."""
    return next((f for f in OUTPUT_FORMATS.values() if f.pillow == pillow_name), None)


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
