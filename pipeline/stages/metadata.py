"""Metadata carried from an input file to its restored output: read in the decode stage, written with
the output by :mod:`pipeline.stages.encode`.

What travels (as the ``metadata`` column, :meth:`Metadata.to_json`):

* EXIF (camera, dates, GPS, exposure), with the orientation tag set to 1, since the decoder writes the
  pixels upright, and without the embedded thumbnail (IFD1: it shows the unrestored image);
* XMP and IPTC-IIM where present; PNG text chunks and a JPEG comment;
* the input's ICC profile description, for the record. The decoder converts 8-bit colour to sRGB, so
  the output is tagged sRGB; where it keeps the pixels in the file's own space (16-bit files, gray
  profiles) the original profile travels and is written back, so a tag never lies about the pixels.

Reading never fails an image: what could not be read is listed in :attr:`Metadata.problems`, which the
stats keep (``metadata_error``).

    >>> meta = read_metadata(jpeg_bytes, converted=True)
    >>> meta.format, meta.exif[:6], meta.icc_description
    ('JPEG', b'Exif\\x00\\x00', 'Adobe RGB (1998)')
    >>> Metadata.from_json(meta.to_json()) == meta
    True
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import warnings
from dataclasses import asdict, dataclass, field
from xml.sax.saxutils import escape

from .encode import Tags
from .formats import OUTPUT_FORMATS, open_image, output_format
from .iptc import PNG_IPTC_KEY, from_raw_profile, photoshop_resource

ORIENTATION, EXIF_IFD, GPS_IFD = 0x0112, 0x8769, 0x8825
XMP_TAG, IPTC_TAG, ICC_TAG = 700, 33723, 34675
# IFD0 tags of a TIFF input that describe the photo (the rest describe the file's layout and are the
# encoder's business): description, make, model, orientation, software, date, artist, host computer,
# copyright, and the EXIF and GPS sub-directories.
_TIFF_EXIF_TAGS = {270, 271, 272, ORIENTATION, 305, 306, 315, 316, 33432, EXIF_IFD, GPS_IFD}
_NOT_TEXT = {"XML:com.adobe.xmp", PNG_IPTC_KEY, "Raw profile type exif", "Raw profile type xmp"}
XMP_NS = "http://ns.dgunet-restore.org/1.0/"  # the provenance record's XMP namespace
_DESCRIPTION = f'<rdf:Description rdf:about="" xmlns:dgunet="{XMP_NS}">'.encode()  # how our record opens
_DGUNET_ELEMENT = re.compile(rb"<dgunet:([\w.-]+)(?:\s[^>]*)?(?:/>|>.*?</dgunet:\1\s*>)", re.S)
_DGUNET_TAG = re.compile(rb"</?dgunet:[\w.-]+[^>]*>")


@dataclass(frozen=True)
class Metadata:
    """What an input file says about itself, minus its pixels. Every field may be empty."""

    format: str = ""  # the input's format as Pillow names it: "JPEG", "PNG", "TIFF", "WEBP", ...
    exif: bytes = b""  # b"Exif\0\0" + a TIFF structure; orientation 1, no thumbnail
    xmp: bytes = b""  # the XMP packet, as found
    iptc: bytes = b""  # IPTC-IIM records (0x1C 0x02 ...)
    text: dict[str, str] = field(default_factory=dict)  # PNG text chunks; a JPEG comment as "Comment"
    icc_description: str = ""  # the input's ICC profile, described; "" without one
    icc: bytes = b""  # the input's profile where the pixels are still in it (not converted to sRGB)
    problems: tuple[str, ...] = ()  # what could not be read, one line each

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("exif", "xmp", "iptc", "icc"):
            d[k] = base64.b64encode(d[k]).decode("ascii")
        d["problems"] = list(self.problems)
        return json.dumps(d)

    @classmethod
    def from_json(cls, s: str) -> Metadata:
        if not s:
            return cls()
        d = json.loads(s)
        for k in ("exif", "xmp", "iptc", "icc"):
            d[k] = base64.b64decode(d[k])
        d["problems"] = tuple(d["problems"])
        return cls(**d)


def read_metadata(data: bytes, *, converted: bool) -> Metadata:
    """Everything worth keeping from a file's bytes; never raises for what is inside the file.

    Args:
        data: the whole file.
        converted: whether the decoder converted the pixels from the file's ICC profile to sRGB (then the
            original profile is only described, not carried).
    """
    try:
        img = open_image(data)
    except Exception as exc:
        return Metadata(problems=(f"unreadable header: {exc}",))
    problems: list[str] = []
    out: dict = {"format": img.format or ""}
    for name, reader in (("exif", _exif), ("xmp", _xmp), ("iptc", _iptc), ("text", _text)):
        try:
            with warnings.catch_warnings(record=True) as caught:  # Pillow warns of corrupt EXIF, and reads on
                warnings.simplefilter("always")
                value = reader(img)
        except Exception as exc:  # a malformed block loses that block only, and says so
            problems.append(f"{name}: unreadable ({type(exc).__name__}: {exc})")
            continue
        if caught:
            problems.append(f"{name}: {'partly read' if value else 'unreadable'} ({caught[0].message})")
        if value:
            out[name] = value
    icc = img.info.get("icc_profile")
    if icc:
        try:
            out["icc_description"] = _describe(icc)
        except Exception as exc:
            out["icc_description"] = "unreadable profile"
            problems.append(f"icc: unreadable profile ({type(exc).__name__}: {exc})")
        if not converted:
            out["icc"] = icc
    return Metadata(**out, problems=tuple(" ".join(p.split())[:200] for p in problems))


def _describe(icc: bytes) -> str:
    from PIL import ImageCms

    return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()


def _exif(img) -> bytes:
    from PIL import Image

    if img.format == "TIFF":
        exif = img.getexif()  # the file's own IFD0, read from the header
        for tag in [t for t in exif if t not in _TIFF_EXIF_TAGS]:
            del exif[tag]
    elif "exif" in img.info:  # not img.getexif(): for a PNG without EXIF, that decodes the whole image
        exif = Image.Exif()
        exif.load(img.info["exif"])
    else:
        return b""
    if not exif:
        return b""
    if ORIENTATION in exif:
        exif[ORIENTATION] = 1
    # Exif.tobytes writes IFD0 and its EXIF, GPS and Interop sub-directories; IFD1 (the thumbnail) is left out.
    return exif.tobytes()


def _xmp(img) -> bytes:
    xmp = img.info.get("xmp", b"")
    return xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp)


def _iptc(img) -> bytes:
    if img.format == "JPEG":
        for marker, payload in getattr(img, "applist", []):
            if marker == "APP13" and payload.startswith(b"Photoshop 3.0\x00"):
                return photoshop_resource(payload[14:], 0x0404)
        return b""
    if img.format == "TIFF":
        value = img.tag_v2.get(IPTC_TAG)
        if value is None:
            return b""
        if isinstance(value, (tuple, list)):  # some writers store it as LONGs
            return b"".join(v if isinstance(v, bytes) else struct.pack(img.tag_v2._endian + "I", v) for v in value)
        return bytes(value)
    if img.format == "PNG" and PNG_IPTC_KEY in img.info:
        return from_raw_profile(img.info[PNG_IPTC_KEY])
    return b""


def _text(img) -> dict[str, str]:
    if img.format == "PNG":
        # Chunks before the image data, as ``info`` has them (``img.text`` would decode the whole image).
        return {k: str(v) for k, v in img.info.items() if isinstance(v, str) and k not in _NOT_TEXT}
    if img.format == "JPEG" and img.info.get("comment"):
        c = img.info["comment"]
        return {"Comment": c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)}
    return {}


def provenance(
    *, software: str, model: str, run_id: str, meta: Metadata, input_uri: str = "", input_version: str = ""
) -> dict[str, str]:
    """The record a restored file carries of what made it, as flat key/value pairs: the software, the
    model and the run, and the input it was made from (its URI and version: a later run that finds the
    file with no stats row adopts it, :mod:`pipeline.run.adoption`).

    >>> provenance(software="dgunet-restore 0.1.0", model="dgunet/denoise@sha256:ab12", run_id="r1",
    ...            meta=Metadata(format="JPEG", icc_description="Adobe RGB (1998)"))["source_icc"]
    'Adobe RGB (1998)'
    """
    record = {"software": software, "model": model, "run_id": run_id}
    if input_uri:
        record.update(input_uri=input_uri, input_version=input_version)
    if meta.format:
        record["source_format"] = meta.format
    if meta.icc_description:
        record["source_icc"] = meta.icc_description
    return record


def read_provenance(data: bytes) -> dict[str, str]:
    """The provenance record of a file this project wrote (:func:`provenance`), from its metadata alone:
    PNG text chunks, or the ``dgunet`` description that :func:`xmp_with` puts last in its XMP (what an input
    carried of our namespace was stripped then, so nothing before it, or after the packet, is read). No
    pixels are decoded. Empty where the file has none (or is not an image in a format that is read).

    >>> read_provenance(png_bytes)["model"]  # doctest: +SKIP
    'dgunet/denoise@sha256:ab12...'
    """
    from xml.sax.saxutils import unescape

    from PIL import UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = open_image(data)  # reads headers and metadata, not the pixels
            written = output_format(img.format)
            if written is not None and written.provenance == "text":
                text = {k: str(v) for k, v in img.info.items() if isinstance(v, str)}
                record = {k[len("dgunet:") :]: v for k, v in text.items() if k.startswith("dgunet:")}
                if "Software" in text:
                    record["software"] = text["Software"]
                return record if "model" in record else {}
            xmp = img.info.get("xmp") or (img.tag_v2.get(XMP_TAG, b"") if img.format == "TIFF" else b"")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return {}
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    found = re.findall(rb"<dgunet:(\w+)>([^<]*)</dgunet:\1>", _our_description(bytes(xmp)))
    return {k.decode(): unescape(v.decode("utf-8", "replace")) for k, v in found}


def _our_description(xmp: bytes) -> bytes:
    """The inside of the ``rdf:Description`` that :func:`xmp_with` wrote: the one that ends right before the
    packet's last ``</rdf:RDF>`` and opens as ours does; b"" where there is none."""
    end, close = xmp.rfind(b"</rdf:RDF>"), b"</rdf:Description>"
    body = xmp[: max(end, 0)]
    start = body.rfind(_DESCRIPTION)
    if start < 0 or not body.endswith(close):
        return b""
    inside = body[start + len(_DESCRIPTION) : -len(close)]
    return b"" if close in inside else inside


def without_ours(xmp: bytes) -> bytes:
    """``xmp`` without any element of the ``dgunet:`` prefix: an input's packet cannot bring a record of
    ours (forged, or an earlier output's) into the output beside the one :func:`xmp_with` adds."""
    while True:
        stripped = _DGUNET_ELEMENT.sub(b"", xmp)
        if stripped == xmp:
            return _DGUNET_TAG.sub(b"", stripped)  # a tag left unpaired
        xmp = stripped


def xmp_with(xmp: bytes, record: dict[str, str], text: dict[str, str]) -> bytes:
    """``xmp`` (or a new packet) with one more ``rdf:Description``: the provenance ``record`` under the
    ``dgunet`` namespace, and ``text`` (PNG text chunks, for formats that have no place for them) as a bag
    of ``key: value`` items.

    Raises:
        ValueError: ``xmp`` has no ``</rdf:RDF>`` to add to.
    """
    fields = "".join(f"<dgunet:{k}>{escape(v)}</dgunet:{k}>" for k, v in record.items())
    if text:
        items = "".join(f"<rdf:li>{escape(f'{k}: {v}')}</rdf:li>" for k, v in text.items())
        fields += f"<dgunet:source_text><rdf:Bag>{items}</rdf:Bag></dgunet:source_text>"
    desc = f"{_DESCRIPTION.decode()}{fields}</rdf:Description>"
    if not xmp:
        return (
            '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f"{desc}</rdf:RDF></x:xmpmeta>"
            '<?xpacket end="w"?>'
        ).encode()
    xmp = without_ours(xmp)
    end = xmp.rfind(b"</rdf:RDF>")
    if end < 0:
        raise ValueError("Expected an XMP packet with an rdf:RDF element, but got none instead.")
    return xmp[:end] + desc.encode("utf-8") + xmp[end:]


def tags_for(meta: Metadata, fmt: str, *, channels: int, record: dict[str, str]):
    """What the output in ``fmt`` carries of ``meta`` and the provenance ``record``, and what it says of it.

    PNG takes the provenance and the text as text chunks; the other formats take both in XMP (a JPEG
    comment goes back into a JPEG's COM segment).

    Returns:
        ``(tags, kept, problems)``: the :class:`~pipeline.stages.encode.Tags` to write; what was kept, in the
        order ``exif, xmp, iptc, icc | srgb, text:<n>, comment, provenance`` (``icc``: the original
        profile travels, the pixels being still in it; ``srgb``: tagged sRGB); what could not be read or
        has no place in ``fmt``, one line each.
    """
    row = OUTPUT_FORMATS[fmt]
    problems = list(meta.problems)
    text = dict(meta.text)
    comment = text.pop("Comment", "") if "comment" in row.carries else ""
    iptc, icc = meta.iptc, meta.icc
    if iptc and "iptc" not in row.carries:
        problems.append(f"iptc: dropped, {row.title} has no place for IPTC (XMP carries its successor)")
        iptc = b""
    if icc and not row.gray and icc[16:20] != b"RGB ":
        problems.append(
            f"icc: dropped, {row.title} stores gray as RGB and the profile ({meta.icc_description}) is not RGB"
        )
        icc = b""
    srgb = not icc and (channels >= 3 or row.gray_srgb)  # a gray JPEG or TIFF takes no RGB profile
    if row.provenance == "text":
        xmp, wrote_record = without_ours(meta.xmp), True
        text_out = {k: v for k, v in text.items() if not k.startswith("dgunet:")}  # only our record is ours
        if "Software" in text_out:  # PNG's keyword for what made the file is ours now; the input's is kept
            text_out["dgunet:source_software"] = text_out.pop("Software")
        text_out.update({("Software" if k == "software" else f"dgunet:{k}"): v for k, v in record.items()})
    else:
        text_out = {}
        try:
            xmp, wrote_record = xmp_with(meta.xmp, record, text), True
        except ValueError as exc:
            problems.append(f"provenance: not written, {exc}")
            xmp, wrote_record = without_ours(meta.xmp), False
    kept = [
        name
        for name, present in (
            ("exif", meta.exif),
            ("xmp", meta.xmp),
            ("iptc", iptc),
            ("icc", icc),
            ("srgb", srgb),
            (f"text:{len(text)}", text and wrote_record),
            ("comment", comment),
            ("provenance", wrote_record),
        )
        if present
    ]
    tags = Tags(exif=meta.exif, xmp=xmp, iptc=iptc, icc=icc, srgb=srgb, text=text_out, comment=comment)
    return tags, kept, problems
