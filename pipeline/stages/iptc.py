"""IPTC-IIM in image files: the containers it travels in, read by :mod:`pipeline.stages.metadata` and
written by :mod:`pipeline.stages.encode`.

JPEG carries IPTC-IIM in an APP13 segment of Photoshop image resources (``8BIM``, resource 0x0404);
PNG, by ImageMagick's and exiftool's convention, in a text chunk holding a hex "raw profile".

    >>> from_raw_profile(raw_profile("iptc", b"\\x1c\\x02\\x00")) == b"\\x1c\\x02\\x00"
    True
"""

from __future__ import annotations

import struct

PNG_IPTC_KEY = "Raw profile type iptc"  # ImageMagick's and exiftool's convention for IPTC in PNG


def photoshop_resource(irb: bytes, resource_id: int) -> bytes:
    """The data of one Photoshop image resource (``0x0404``: IPTC-IIM) from a ``8BIM`` block list."""
    i = 0
    while i + 12 <= len(irb) and irb[i : i + 4] == b"8BIM":
        rid = struct.unpack(">H", irb[i + 4 : i + 6])[0]
        name_len = irb[i + 6]
        j = i + 6 + ((1 + name_len + 1) & ~1)  # the Pascal name, padded to an even length
        size = struct.unpack(">I", irb[j : j + 4])[0]
        if rid == resource_id:
            return irb[j + 4 : j + 4 + size]
        i = j + 4 + size + (size & 1)
    return b""


def jpeg_app13(iptc: bytes) -> bytes:
    """A JPEG APP13 segment holding IPTC-IIM records (Photoshop's ``8BIM`` resource 0x0404)."""
    body = b"Photoshop 3.0\x00" + b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iptc))
    body += iptc + b"\x00" * (len(iptc) & 1)
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def raw_profile(kind: str, data: bytes) -> str:
    """ImageMagick's text form of a binary profile in PNG: ``"\\n<kind>\\n<length>\\n<hex, 72 per line>\\n"``."""
    hexed = data.hex()
    lines = "\n".join(hexed[i : i + 72] for i in range(0, len(hexed), 72))
    return f"\n{kind}\n{len(data):8d}\n{lines}\n"


def from_raw_profile(text: str) -> bytes:
    """The bytes of a :func:`raw_profile` text."""
    parts = text.strip().split("\n", 2)
    if len(parts) < 3:
        raise ValueError("Expected '<kind>, <length>, <hex>' in a raw profile, but got fewer lines instead.")
    data = bytes.fromhex("".join(parts[2].split()))
    if len(data) != int(parts[1]):
        raise ValueError(f"Expected {int(parts[1])} bytes in the raw profile, but got {len(data)} instead.")
    return data
