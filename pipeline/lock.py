"""One run at a time per output prefix: a lock object created with an exclusive write.

Scheduled clean-ups (cron, a Kubernetes CronJob, KubeRay's RayCronJob) may start a run while the last
one is still going. Both would plan the same inputs and restore them twice, so a run first creates
``<output>/runs/LOCK``: on S3 with a conditional PUT (``If-None-Match: *``, which S3 and SeaweedFS
honour), locally with a hard link. Exactly one creator wins; the other stops with :class:`LockedError`.

A killed run cannot remove its lock, so a lock is taken over when its holder is known to be dead: it ran
on this machine (same host name and boot) and its process is gone, as after a driver that was killed and
restarted on the same head node; or it has not renewed its ``heartbeat`` (a live holder renews it every
``heartbeat_every`` seconds) for ``stale_after`` seconds, whatever machine it ran on.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field

from .storage import StorageOptions, filesystem, join_uri, split_protocol, write_bytes_atomic

log = logging.getLogger(__name__)


class LockedError(RuntimeError):
    """Another run holds the output prefix."""


@dataclass
class RunLock:
    output_uri: str
    run_id: str
    storage: StorageOptions
    stale_after: float = 15 * 60.0
    heartbeat_every: float = 60.0
    _started: float = field(default=0.0, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _beat: threading.Thread | None = field(default=None, init=False, repr=False)

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

    def _record(self) -> bytes:
        now = time.time()
        return json.dumps(
            {
                "run_id": self.run_id,
                "host": socket.gethostname(),
                "boot_id": _boot_id(),
                "pid": os.getpid(),
                "started": self._started or now,
                "heartbeat": now,
            }
        ).encode()

    def dead_reason(self, holder: dict) -> str | None:
        """Why the run holding the lock is known to be dead, or None while it may be alive."""
        same_machine = holder.get("host") == socket.gethostname() and holder.get("boot_id") == _boot_id()
        if same_machine and holder.get("boot_id") and not _alive(int(holder.get("pid", 0))):
            return f"its process {holder.get('pid')} on this machine is gone"
        silent = time.time() - float(holder.get("heartbeat", holder.get("started", 0)))
        if silent >= self.stale_after:
            return f"it has not renewed the lock for {silent / 60:.0f} min"
        return None

    def acquire(self) -> None:
        self._started = time.time()
        if not self._create(self._record()):
            other = self.holder()
            if other is None or other.get("run_id") != self.run_id:  # else: a retried PUT of ours went through
                self._take_over(other)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._beat.start()

    def _take_over(self, other: dict | None) -> None:
        """Take the lock from a holder known to be dead; raise :class:`LockedError` while it may live."""
        reason = self.dead_reason(other) if other is not None else "it was released meanwhile"
        if reason is None:
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(other.get("started", 0)))
            raise LockedError(
                f"Another run ({other.get('run_id')} on {other.get('host')}, pid {other.get('pid')}, started "
                f"{started}) is writing to {self.output_uri}; remove {self.uri} if it is known to be dead."
            )
        log.warning("Taking over the run lock of %s: %s.", other and other.get("run_id"), reason)
        if other is not None:
            self._remove()
        if not self._create(self._record()):
            raise LockedError(f"Another run took the lock {self.uri} first.")

    def _heartbeat(self) -> None:
        """Renew the lock while the run lives; stop renewing if another run has taken it over."""
        while not self._stop.wait(self.heartbeat_every):
            try:
                holder = self.holder()
                if holder is None or holder.get("run_id") != self.run_id:
                    log.error("The run lock %s is no longer ours (now %s).", self.uri, holder and holder.get("run_id"))
                    return
                write_bytes_atomic(self.uri, self._record(), self.storage)  # readers never see half a lock
            except Exception as exc:  # a missed beat is retried at the next one
                log.warning("Could not renew the run lock %s: %s", self.uri, exc)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
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


def _boot_id() -> str | None:
    """This boot of this machine (Linux); tells a dead pid from one of an earlier boot or another box."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True  # unknown: assume alive, and rely on the heartbeat
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
