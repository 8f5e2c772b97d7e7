"""Reading and writing bytes, torch-free: what checkpoints, exports and the pipeline's storage share."""

from __future__ import annotations

import os
import uuid


def read_bytes(uri: str | os.PathLike) -> bytes:
    """All bytes of a local path or fsspec URL (``s3://``, ``gs://``, ``https://``, ``file://``...)."""
    import fsspec  # a plain path opens as a local file

    with fsspec.open(os.fspath(uri), "rb") as f:
        return f.read()


def write_file_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write a local file so that no reader sees it partly written: a temporary file in the same
    folder, fsync'd, then renamed over ``path`` (an atomic replace on POSIX)."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
