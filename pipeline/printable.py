"""Names made safe to print: a file name is data that anyone who can upload chose.

A name with an ANSI escape, a newline or a bidi mark would, printed raw, recolour a terminal, forge a line
of a cron log, or show its characters in another order. Every name (and every message that may hold one)
that goes to a terminal or a log passes through :func:`printable`; JSON, Parquet and HTML keep the real
name (their writers escape what they must).

    >>> printable("evil\\x1b[2J\\nrun ok.png")
    'evil\\\\x1b[2J\\\\nrun ok.png'
    >>> printable("photo\\u202egnp.exe")
    'photo\\\\u202egnp.exe'
"""

from __future__ import annotations

import re

# C0 controls (newline and tab among them), DEL, C1 controls, and the marks that reorder text: the
# embeddings and overrides U+202A-U+202E, the isolates U+2066-U+2069, and LRM, RLM and ALM.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def printable(text: object) -> str:
    """``str(text)`` with control characters, newlines and bidi marks written as escapes (``\\x1b``,
    ``\\n``, ``\\u202e``): one line, shown as it is stored. A backslash stays as it is."""
    return _UNSAFE.sub(_escape, str(text))
