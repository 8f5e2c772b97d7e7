"""Object storage access, in one place: URIs to filesystems, listing, reading and atomic writing.

Any fsspec URL works (``s3://``, ``gs://``, ``az://``, ``file://``, plain paths). S3 credentials and
endpoints come the standard way (environment, profiles, instance roles); ``AWS_ENDPOINT_URL`` or an
explicit ``endpoint_url`` points at S3-compatible stores.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dgunet.checkpoint import write_file_atomic

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"})


@dataclass(frozen=True)
class StorageOptions:
    """How to reach a store. Secrets are never taken from here: see the README on credentials."""

    endpoint_url: str | None = None
    region: str | None = None
    anon: bool = False
    # Seconds to open a connection, and to wait for any bytes of an answer; a request that runs into
    # either is retried like a dropped connection. botocore's own defaults are 60 s for both.
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def fsspec_kwargs(self, protocol: str) -> dict[str, Any]:
        if protocol not in ("s3", "s3a"):
            return {}
        kw: dict[str, Any] = {}
        client: dict[str, Any] = {}
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            kw["endpoint_url"] = endpoint
        if self.region:
            client["region_name"] = self.region
        if client:
            kw["client_kwargs"] = client
        if self.anon:
            kw["anon"] = True
        # Listings must be fresh: a scheduled run plans against what is there now.
        kw["use_listings_cache"] = False
        # Retry throttling and dropped connections with backoff (botocore's adaptive mode).
        kw["config_kwargs"] = {
            "retries": {"max_attempts": 10, "mode": "adaptive"},
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
        }
        return kw


def split_protocol(uri: str) -> tuple[str, str]:
    """``("s3", "bucket/key")`` for ``s3://bucket/key``; ``("file", "/abs/path")`` for local paths."""
    if "://" in uri:
        protocol, path = uri.split("://", 1)
        if protocol == "file":
            return "file", os.path.abspath(path)
        return protocol, path
    return "file", os.path.abspath(os.path.expanduser(uri))


def filesystem(uri: str, options: StorageOptions | None = None):
    """The fsspec filesystem of ``uri`` and the path within it."""
    import fsspec

    protocol, path = split_protocol(uri)
    fs = fsspec.filesystem(protocol, **(options or StorageOptions()).fsspec_kwargs(protocol))
    return fs, path


def join_uri(base: str, *parts: str) -> str:
    protocol, path = split_protocol(base)
    joined = posixpath.join(path, *parts)
    return joined if protocol == "file" else f"{protocol}://{joined}"


def to_uri(protocol: str, path: str) -> str:
    return path if protocol == "file" else f"{protocol}://{path}"


def list_images(uri: str, options: StorageOptions | None = None) -> Iterator[tuple[str, int]]:
    """Every image under ``uri`` (recursive, extensions case-insensitive): ``(uri, size)``, sorted.

    ``uri`` may also name a single image file.
    """
    fs, root = filesystem(uri, options)
    protocol, _ = split_protocol(uri)
    if fs.isfile(root):
        yield to_uri(protocol, root), fs.size(root)
        return
    for path, info in sorted(fs.find(root, detail=True, withdirs=False).items()):
        if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
            yield to_uri(protocol, path), int(info.get("size") or 0)


def read_bytes(uri: str, options: StorageOptions | None = None) -> bytes:
    fs, path = filesystem(uri, options)
    return fs.cat_file(path)


def write_bytes_atomic(uri: str, data: bytes, options: StorageOptions | None = None) -> None:
    """Write ``data`` so that no reader ever sees a partial object.

    Local files: written to a temporary name in the same folder, fsync'd, then renamed over the target.
    Object stores: a single PUT (or a multipart upload completed at the end) is atomic already.
    """
    fs, path = filesystem(uri, options)
    protocol, _ = split_protocol(uri)
    if protocol == "file":
        write_file_atomic(path, data)
    else:
        fs.pipe_file(path, data)


def exists(uri: str, options: StorageOptions | None = None) -> bool:
    fs, path = filesystem(uri, options)
    return fs.exists(path)
