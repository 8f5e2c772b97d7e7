"""Object storage access, in one place: URIs to filesystems, listing, reading and atomic writing.

Any fsspec URL works (``s3://``, ``gs://``, ``az://``, ``file://``, plain paths). S3 credentials and
endpoints come the standard way (environment, profiles, instance roles); ``AWS_ENDPOINT_URL`` or an
explicit ``endpoint_url`` points at S3-compatible stores.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dgunet.io import write_file_atomic as write_file_atomic  # the one atomic local write

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".heic", ".heif", ".hif", ".avif"}
)


@dataclass(frozen=True)
class StorageOptions:
    """How to reach a store. Secrets are never taken from here: see docs/security.md on credentials."""

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


# Host names of cloud instance metadata services (AWS, GCP, Azure, OpenStack, ...), which hand the machine's
# own credentials to any process on it that asks; their addresses are link-local (169.254.169.254,
# fd00:ec2::254 on AWS's IPv6).
_METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal"})
_AWS_METADATA_V6 = "fd00:ec2::254"


def metadata_service_host(uri: str) -> str | None:
    """The host of ``uri`` when it is a cloud metadata service: a link-local address (169.254.0.0/16,
    fe80::/10, written in any form the resolver takes, such as ``2852039166``), AWS's IPv6 one, or one of
    their host names; else None. A name that merely resolves to such an address is not caught here."""
    import ipaddress
    import socket
    from urllib.parse import urlsplit

    if "://" not in uri:
        return None
    try:
        host = (urlsplit(uri).hostname or "").rstrip(".").lower()
    except ValueError:  # a malformed authority: nothing is fetched from it either
        return None
    if not host:
        return None
    if host in _METADATA_HOSTS:
        return host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(host))  # 2852039166, 0xa9fea9fe, 169.254.43518
        except OSError:
            return None
    mapped = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:169.254.169.254 is the IPv4 address
    if mapped.is_link_local or ip == ipaddress.ip_address(_AWS_METADATA_V6):
        return host
    return None


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


@dataclass(frozen=True)
class StoredObject:
    """One object as its store describes it (a listing entry, or the answer to a metadata request)."""

    uri: str
    size: int
    # What tells this version of the object from any other: ``"size=N mtime_ns=M"`` for local files,
    # ``"etag=E size=N modified=S"`` where the store gives an ETag (S3, GCS, Azure) or a modification
    # time, ``""`` where it gives neither (then a content hash stands in: :func:`content_version`).
    version: str
    modified: float | None  # last modification, seconds since the epoch, where the store gives it


def _seconds(value: Any) -> float | None:
    """A store's modification time (datetime, ISO string or epoch seconds) as epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def describe(protocol: str, path: str, info: dict[str, Any]) -> StoredObject:
    """The :class:`StoredObject` of ``path`` from its fsspec ``info`` (listing detail or ``fs.info``)."""
    size = int(info.get("size") or 0)
    if protocol == "file":
        st = os.stat(path)  # fsspec gives mtime as a float; nanoseconds tell close writes apart
        return StoredObject(
            to_uri(protocol, path), st.st_size, f"size={st.st_size} mtime_ns={st.st_mtime_ns}", st.st_mtime
        )
    # S3 (s3fs): ETag, LastModified; GCS (gcsfs): etag, updated; Azure (adlfs): etag, last_modified.
    etag = next((str(info[k]).strip('"') for k in ("ETag", "etag", "generation", "md5Hash") if info.get(k)), "")
    modified = next(
        (s for k in ("LastModified", "last_modified", "updated", "mtime") if (s := _seconds(info.get(k))) is not None),
        None,
    )
    if not etag and modified is None:
        return StoredObject(to_uri(protocol, path), size, "", None)
    # Whole seconds: a listing's LastModified may carry milliseconds that a HEAD request's lacks.
    stamp = "" if modified is None else str(int(modified))
    return StoredObject(to_uri(protocol, path), size, f"etag={etag} size={size} modified={stamp}", modified)


def content_version(data: bytes) -> str:
    """The version of an object whose store gives no ETag nor modification time: its bytes' sha256."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def list_objects(uri: str, options: StorageOptions | None = None) -> Iterator[StoredObject]:
    """Every image under ``uri`` (recursive, extensions case-insensitive), sorted, with its version.

    ``uri`` may also name a single image file. One listing: the versions come with it.
    """
    fs, root = filesystem(uri, options)
    protocol, _ = split_protocol(uri)
    if fs.isfile(root):
        yield describe(protocol, root, fs.info(root))
        return
    for path, info in sorted(fs.find(root, detail=True, withdirs=False).items()):
        if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
            yield describe(protocol, path, info)


def list_images(uri: str, options: StorageOptions | None = None) -> Iterator[tuple[str, int]]:
    """Every image under ``uri`` as ``(uri, size)``, sorted: :func:`list_objects` without versions."""
    for obj in list_objects(uri, options):
        yield obj.uri, obj.size


def describe_many(
    uris: Sequence[str], options: StorageOptions | None = None, *, threads: int = 16
) -> list[StoredObject | None]:
    """The metadata of each of ``uris`` (one request each, ``threads`` at a time); None where it is missing.

    For inputs that no listing describes (a manifest's entries).
    """
    if not uris:
        return []
    fs, _ = filesystem(uris[0], options)

    def one(uri: str) -> StoredObject | None:
        protocol, path = split_protocol(uri)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            return None
        return describe(protocol, path, info)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
        return list(pool.map(one, uris))


def read_bytes(uri: str, options: StorageOptions | None = None) -> bytes:
    fs, path = filesystem(uri, options)
    return fs.cat_file(path)


class ReadRefusedError(ValueError):
    """An input that is not read: not a regular file, or over the size limit; the message says which."""


def read_bounded(uri: str, fs, *, max_bytes: int) -> bytes:
    """The bytes of ``uri`` (on ``fs``, its filesystem), reading at most ``max_bytes`` + 1 of them.

    A local path is opened without blocking and read only where it is a regular file (a FIFO would block
    the read forever, ``/dev/zero`` never end); other stores are asked for one range of ``max_bytes`` + 1
    bytes. So whatever a listing said of its size, a file that grew, or lied, costs no more.

    Raises:
        ReadRefusedError: not a regular file, or more than ``max_bytes`` bytes.
    """
    protocol, path = split_protocol(uri)
    if protocol == "file":
        data = _read_regular_file(path, max_bytes + 1)
    else:
        try:
            data = fs.cat_file(path, start=0, end=max_bytes + 1)
        except OSError as exc:  # S3 answers a range of an empty object 416, which s3fs gives as EINVAL
            if exc.errno != errno.EINVAL or fs.size(path) != 0:
                raise
            data = b""
    if len(data) > max_bytes:
        raise ReadRefusedError(
            f"Expected at most input.max_bytes = {max_bytes} bytes, but got more instead "
            "(the file is larger than the listing said, or grew)."
        )
    return data


def read_head(uri: str, fs, size: int) -> bytes:
    """The first ``size`` bytes of ``uri`` (on ``fs``, its filesystem; all of it where it is shorter): a
    header, read as :func:`read_bounded` reads (a local path only where it is a regular file, one range
    request elsewhere).

    Raises:
        ReadRefusedError: a local path that is not a regular file.
    """
    protocol, path = split_protocol(uri)
    if protocol == "file":
        return _read_regular_file(path, size)
    try:
        return fs.cat_file(path, start=0, end=size)
    except OSError as exc:  # an empty object's range: 416, EINVAL in s3fs
        if exc.errno != errno.EINVAL or fs.size(path) != 0:
            raise
        return b""


def _read_regular_file(path: str, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))  # a FIFO opens at once
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = {stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device"}
            raise ReadRefusedError(
                f"Expected a regular file, but got a {kind.get(stat.S_IFMT(mode), 'special file')} instead."
            )
        os.set_blocking(fd, True)
        chunks, left = [], limit
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 22))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


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
