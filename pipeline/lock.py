"""One run at a time per output prefix: a lock object created with an exclusive write.

Scheduled clean-ups (cron, a Kubernetes CronJob, KubeRay's RayCronJob) may start a run while the last
one is still going. Both would plan the same inputs and restore them twice, so a run first creates
``<output>/runs/LOCK``: on S3 with a conditional PUT (``If-None-Match: *``, which S3 and SeaweedFS
honour), locally with ``O_CREAT | O_EXCL``. Exactly one creator wins; the other stops with
:class:`LockedError`. A lock older than ``stale_after`` seconds (a run that was killed) is taken over.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from dataclasses import dataclass

from .storage import StorageOptions, filesystem, join_uri, split_protocol


class LockedError(RuntimeError):
    """Another run holds the output prefix."""


@dataclass
class RunLock:
    output_uri: str
    run_id: str
    storage: StorageOptions
    stale_after: float = 24 * 3600.0

    @property
    def uri(self) -> str:
        return join_uri(self.output_uri, "runs", "LOCK")

    def _create(self, data: bytes) -> bool:
        """Create the lock object if it does not exist; True when this call created it."""
        protocol, path = split_protocol(self.uri)
        if protocol == "file":
            # Written whole under a private name, then hard-linked into place: link() fails if the lock
            # exists, and a reader never sees a lock without its content.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{self.run_id}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        fs, path = filesystem(self.uri, self.storage)
        for attempt in range(8):
            try:
                fs.pipe_file(path, data, mode="create")  # a conditional PUT, If-None-Match: *
                return True
            except OSError as exc:
                if isinstance(exc, FileExistsError) or _precondition_failed(exc):
                    return False
                # Racing conditional PUTs can fail with a server error (409 on S3, 500 on SeaweedFS)
                # whose outcome is unknown: the lock's content says who, if anyone, got it.
                holder = self.holder()
                if holder is not None:
                    return holder.get("run_id") == self.run_id
                if attempt == 7:
                    raise
                time.sleep(random.uniform(0.1, 0.5) * (attempt + 1))  # jitter: racers do not collide again
        return False

    def holder(self) -> dict | None:
        """The lock's content, or None when there is no lock."""
        fs, path = filesystem(self.uri, self.storage)
        try:
            return json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None

    def acquire(self) -> None:
        data = json.dumps(
            {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        ).encode()
        if self._create(data):
            return
        other = self.holder()
        if other is not None and other.get("run_id") == self.run_id:
            return  # a retried PUT of ours that had already gone through
        if other is not None and time.time() - other.get("started", 0) < self.stale_after:
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(other["started"]))
            raise LockedError(
                f"Another run ({other.get('run_id')} on {other.get('host')}, started {started}) is writing to "
                f"{self.output_uri}; remove {self.uri} if it is known to be dead."
            )
        if other is not None:
            self._remove()  # stale: the run that held it died
        if not self._create(data):
            raise LockedError(f"Another run took the lock {self.uri} first.")

    def release(self) -> None:
        holder = self.holder()
        if holder is not None and holder.get("run_id") == self.run_id:
            self._remove()

    def _remove(self) -> None:
        fs, path = filesystem(self.uri, self.storage)
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _precondition_failed(exc: BaseException) -> bool:
    """Whether an S3 error (or one it was raised from) is HTTP 412 Precondition Failed."""
    while exc is not None:
        response = getattr(exc, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
