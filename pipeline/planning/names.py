"""Output names: where an input's restored image goes, in which format, and which inputs could want one name.

Output names mirror the input's path relative to the input prefix with the extension replaced by the
output format's (``.png``, ``.webp``, ``.jpg``, ``.tif``; with ``output.format: same``, the input's own
format by its extension, ``.png`` for the others). Key segments that could escape the output prefix
(``..``, empty, absolute) are rewritten. The format of a name is read back from its extension by one
function, :func:`pipeline.stages.encode.format_of`, which the write stage uses too.
"""

from __future__ import annotations

import hashlib
import posixpath

from ..stages.encode import EXTENSIONS, format_of
from ..storage import split_protocol


def safe_relative(rel: str) -> str:
    """A relative key that stays under its prefix: no ``..``, ``.``, empty or absolute segments."""
    parts = []
    for seg in rel.replace("\\", "/").split("/"):
        if seg in ("", "."):
            continue
        parts.append("%2E%2E" if seg == ".." else seg)
    return "/".join(parts) or "_"


def relative_key(input_uri: str, prefix: str) -> str:
    """``input_uri``'s path relative to ``prefix`` (a folder, or the file itself)."""
    _, path = split_protocol(input_uri)
    _, root = split_protocol(prefix)
    root = root.rstrip("/")
    if path == root:
        return posixpath.basename(path)
    if not path.startswith(root + "/"):
        # Manifest entries outside the prefix keep their bucket/key path, made safe.
        return safe_relative(path)
    return safe_relative(path[len(root) + 1 :])


def under(uri: str, prefix: str) -> bool:
    """Whether ``uri`` is ``prefix`` or below it, on the same store."""
    (p1, path), (p2, root) = split_protocol(uri), split_protocol(prefix)
    root = root.rstrip("/")
    return p1 == p2 and (path == root or path.startswith(root + "/"))


def inside(uri: str, folder: str) -> bool:
    """Whether ``uri`` lies below ``folder`` (not ``folder`` itself), on the same store, with no empty,
    ``.`` or ``..`` segment on the way: what the output prefix says of a path is only trusted so.

    >>> inside("s3://b/out/images/a.png", "s3://b/out/images"), inside("s3://b/out/images/../x", "s3://b/out/images")
    (True, False)
    """
    (p1, path), (p2, root) = split_protocol(uri), split_protocol(folder)
    root = root.rstrip("/") + "/"
    if p1 != p2 or not path.startswith(root):
        return False
    return all(s not in ("", ".", "..") for s in path[len(root) :].split("/"))


def output_format_for(rel: str, output_format: str) -> str:
    """The format an input's output is written in: ``output_format``, or with ``"same"`` the input's own
    by its extension (``"a/b.JPEG"`` -> ``"jpeg"``), ``"png"`` for formats that are not written."""
    return format_of(rel) if output_format == "same" else output_format


def output_names(rel: str, fmt: str) -> list[str]:
    """The names an input may take, in order: ``a.jpg`` -> ``a.png``, ``a.jpg.png``, ``a-<hash>.png``."""
    stem, ext = posixpath.splitext(rel)
    new = EXTENSIONS[fmt]
    return [stem + new, f"{stem}{ext}{new}", f"{stem}-{hashlib.sha256(rel.encode()).hexdigest()[:8]}{new}"]


def name_key(uri: str) -> str:
    """What every name an input may take shares with the input's first name: its folder and its file
    name up to the first ``.`` or ``-`` (``out/images/a.png``, ``a.jpg.png``, ``a-1f2e3d4c.png``: ``out/images/a``).

    Each of :func:`output_names` keeps the stem and appends a ``.`` or ``-`` suffix, so two inputs that
    could want one name have one key, and a claim on a name is seen by every input that could want it.
    """
    folder, _, base = uri.rpartition("/")
    cut = min((i for i in (base.find("."), base.find("-")) if i >= 0), default=len(base))
    return f"{folder}/{base[:cut]}"
