"""Conditional writes of one small object: create it if absent, replace or delete it if unchanged.

What the run lock needs from storage (see :mod:`pipeline.run.lock`): of any number of writers that read the
same version of an object, exactly one changes it. On S3 (and SeaweedFS, MinIO, ...) these are conditional
requests: ``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace or delete. Locally, each change is
made under an exclusive ``flock`` of a guard file beside the object (``.<name>.guard``, which stays), where
the object is read, compared and written (a temporary file renamed over it, so that a reader outside the
guard never sees half an object); the kernel drops the guard of a process that dies.

Example::

    obj = ConditionalObject("s3://bucket/out/runs/LOCK")
    mine = obj.create(b"mine")               # None: it exists already
    theirs = obj.replace(b"theirs", mine)    # None: changed since `mine` was written (or read)
    obj.delete(theirs)                       # False: changed since
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..storage import StorageOptions, filesystem, split_protocol, write_file_atomic

# A request whose outcome is unknown (a 500 from SeaweedFS, a 409 ConditionalRequestConflict from S3 between
# racing conditional writes, a dropped connection) is retried this many times while the object is as before.
ATTEMPTS = 8


@dataclass(frozen=True)
class Version:
    """The object as read or written: its bytes, and the tag that tells this version from any other (its
    ETag on S3, the bytes' sha256 locally)."""

    data: bytes
    tag: str


class ConditionalObject:
    """One small object at ``uri`` (a local path or an S3 URI), changed only where it is as expected.

    Args:
        uri: where the object lives.
        storage: how to reach the store (endpoint, region; never credentials).
    """

    def __init__(self, uri: str, storage: StorageOptions | None = None):
        self.uri = uri
        self.storage = storage or StorageOptions()
        self._protocol, self._path = split_protocol(uri)
        if self._protocol not in ("file", "s3", "s3a"):
            raise ValueError(
                f"Expected a local path or an s3:// URI (stores with conditional writes), but got {uri!r} instead."
            )

    def read(self) -> Version | None:
        """The object's bytes and tag, read together; None when there is no object."""
        if self._protocol == "file":
            try:
                with open(self._path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return None
            return Version(data, _sha256(data))
        return self._s3_read()

    def create(self, data: bytes) -> Version | None:
        """Write ``data`` where there is no object yet: the version written, or None when one exists."""
        if self._protocol == "file":
            with self._guard():
                return None if os.path.exists(self._path) else self._write_local(data)
        return self._s3_put(data, None)

    def replace(self, data: bytes, expected: Version) -> Version | None:
        """Write ``data`` over the object if it is still ``expected``: the version written, or None when it
        was changed or deleted since."""
        if self._protocol == "file":
            with self._guard():
                current = self.read()
                return self._write_local(data) if current is not None and current.tag == expected.tag else None
        return self._s3_put(data, expected)

    def delete(self, expected: Version) -> bool:
        """Delete the object if it is still ``expected``; False when it was changed or deleted since."""
        if self._protocol == "file":
            with self._guard():
                current = self.read()
                if current is None or current.tag != expected.tag:
                    return False
                os.unlink(self._path)
                return True
        fs, path = filesystem(self.uri, self.storage)
        bucket, key, _ = fs.split_path(path)
        try:
            fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=expected.tag)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if precondition_failed(exc):
                return False
            raise
        finally:
            fs.invalidate_cache(path)
        return True

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """The exclusive ``flock`` of the guard file beside a local object (each call opens the file anew,
        so threads of one process exclude each other too)."""
        import fcntl

        folder, name = os.path.split(self._path)
        os.makedirs(folder, exist_ok=True)
        fd = os.open(os.path.join(folder, f".{name}.guard"), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # drops the flock

    def _write_local(self, data: bytes) -> Version:
        write_file_atomic(self._path, data)
        return Version(data, _sha256(data))

    def _s3_read(self) -> Version | None:
        from fsspec.asyn import sync

        fs, path = filesystem(self.uri, self.storage)
        bucket, key, _ = fs.split_path(path)

        async def get() -> Version:
            response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
            try:
                return Version(await response["Body"].read(), response["ETag"])
            finally:
                response["Body"].close()

        try:
            return sync(fs.loop, get)
        except FileNotFoundError:
            return None

    def _s3_put(self, data: bytes, expected: Version | None) -> Version | None:
        """A conditional PUT: ``If-None-Match: *`` (``expected`` None) or ``If-Match`` on its ETag. Where
        the outcome is unknown, the object says it: ``data`` (unique to the caller) if the write went
        through, another version if someone else's did, the expected one if none did (then tried again)."""
        fs, path = filesystem(self.uri, self.storage)
        condition = {"mode": "create"} if expected is None else {"IfMatch": expected.tag}
        for attempt in range(ATTEMPTS):
            try:
                response = fs.pipe_file(path, data, **condition)
                return Version(data, response["ETag"])
            except OSError as exc:
                refused = isinstance(exc, FileExistsError) or precondition_failed(exc)
                current = self.read()
                if current is not None and current.data == data:
                    return current  # ours: a request retried by botocore after it had gone through
                unchanged = current is None if expected is None else current is not None and current.tag == expected.tag
                if refused or not unchanged:
                    return None
                if attempt == ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.1, 0.5) * (attempt + 1))  # jitter: racers do not collide again
        return None


def precondition_failed(exc: BaseException | None) -> bool:
    """Whether an S3 error (or one it was raised from) is HTTP 412 Precondition Failed."""
    while exc is not None:
        response = getattr(exc, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
