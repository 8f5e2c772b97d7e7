"""One run at a time per output prefix: a lock object that only one run can create or take over.

Scheduled clean-ups (cron, a Kubernetes CronJob, KubeRay's RayCronJob) may start a run while the last
one is still going. Both would plan the same inputs and restore them twice, so a run first creates
``<output>/runs/LOCK``, and every change to it is conditional on the version last read
(:mod:`pipeline.run.conditional`: ``If-None-Match: *`` and ``If-Match: <ETag>`` on S3, an exclusive ``flock``
locally). Of any number of runs that create the lock, or take over the same stale one, exactly one wins;
the others stop with :class:`LockedError`.

A killed run cannot remove its lock, so a lock is taken over when its holder is known to be dead: it ran
on this machine (same host name, boot and pid namespace: a container that shares the host name but not
the pids is another machine here) and its process is gone, as after a driver that was killed and restarted
on the same head node; or it has not renewed its ``heartbeat`` (a live holder renews it every
``heartbeat_every`` seconds) for ``stale_after`` seconds, whatever machine it ran on.

A run whose heartbeat finds the lock taken over (it was silent too long: a paused VM, a partitioned node)
has lost it: the lock calls ``on_lost`` (the job raises its graceful stop there), and :meth:`RunLock.still_held`
says so to whatever would delete files (compaction). Release deletes the lock only while it is this run's.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..storage import StorageOptions, join_uri
from .conditional import ConditionalObject, Version

log = logging.getLogger(__name__)


class LockedError(RuntimeError):
    """Another run holds the output prefix."""


@dataclass
class RunLock:
    """The lock of ``output_uri`` for the run ``run_id``; a context manager that acquires and releases it.

    Args:
        output_uri: the output prefix; the lock is ``<output_uri>/runs/LOCK``.
        run_id: the run's name, recorded in the lock.
        storage: how to reach the store.
        stale_after: seconds without a heartbeat after which another run takes the lock over.
        heartbeat_every: seconds between renewals of a held lock (default: a minute, or a quarter of
            ``stale_after`` where that is shorter, so that a live run is never stale).
        on_lost: called once, with a line that says so, when another run has taken this run's lock over (on
            the heartbeat's thread, or in :meth:`still_held`).
    """

    output_uri: str
    run_id: str
    storage: StorageOptions
    stale_after: float = 15 * 60.0
    heartbeat_every: float | None = None
    on_lost: Callable[[str], None] | None = None
    _started: float = field(default=0.0, init=False, repr=False)
    _token: str = field(default="", init=False, repr=False)  # this acquisition's, unique: run ids may repeat
    _version: Version | None = field(default=None, init=False, repr=False)
    _lost: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _beat: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.heartbeat_every is None:
            self.heartbeat_every = min(60.0, max(self.stale_after / 4, 0.1))

    @property
    def uri(self) -> str:
        return join_uri(self.output_uri, "runs", "LOCK")

    @property
    def _object(self) -> ConditionalObject:
        return ConditionalObject(self.uri, self.storage)

    def holder(self) -> dict | None:
        """The lock's content, or None when there is no lock."""
        current = self._object.read()
        return None if current is None else _parse(current.data)

    def _record(self) -> bytes:
        now = time.time()
        return json.dumps(
            {
                "run_id": self.run_id,
                "token": self._token,
                **_identity(),
                "pid": os.getpid(),
                "started": self._started or now,
                "heartbeat": now,
            }
        ).encode()

    def _ours(self, version: Version | None) -> bool:
        return version is not None and _parse(version.data).get("token") == self._token

    def dead_reason(self, holder: dict) -> str | None:
        """Why the run holding the lock is known to be dead, or None while it may be alive."""
        here = _identity()
        same_machine = all(here.values()) and all(holder.get(key) == value for key, value in here.items())
        if same_machine and not _alive(int(holder.get("pid") or 0)):
            return f"its process {holder.get('pid')} on this machine is gone"
        try:
            silent = time.time() - float(holder.get("heartbeat", holder.get("started", 0)))
        except (TypeError, ValueError):
            silent = float("inf")  # not a lock this code wrote: nobody renews it
        if silent >= self.stale_after:
            return f"it has not renewed the lock for {silent / 60:.0f} min"
        return None

    def acquire(self) -> None:
        """Create the lock, or take it over from a dead holder; start the heartbeat.

        Raises:
            LockedError: another run holds the lock and may be alive, or took it first.
        """
        self._started, self._token = time.time(), uuid.uuid4().hex
        self._lost.clear()
        obj = self._object
        self._version = obj.create(self._record())
        if self._version is None:
            self._version = self._take_over(obj, obj.read())
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._beat.start()

    def _take_over(self, obj: ConditionalObject, current: Version | None) -> Version:
        """Replace the lock ``current`` of a holder known to be dead, if nobody changed it since it was read;
        raise :class:`LockedError` while its holder may live, or when another run changed it first."""
        if current is None:  # released since: created anew, unless another run was first
            if (created := obj.create(self._record())) is not None:
                return created
            raise LockedError(f"Another run took the lock {self.uri} first.")
        other = _parse(current.data)
        reason = self.dead_reason(other)
        if reason is None:
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(other.get("started") or 0)))
            raise LockedError(
                f"Another run ({other.get('run_id')} on {other.get('host')}, pid {other.get('pid')}, started "
                f"{started}) is writing to {self.output_uri}; remove {self.uri} if it is known to be dead."
            )
        log.warning("Taking over the run lock of %s: %s.", other.get("run_id"), reason)
        taken = obj.replace(self._record(), current)  # only if still the dead holder's lock
        if taken is None:
            raise LockedError(f"Another run took the lock {self.uri} first.")
        return taken

    def _heartbeat(self) -> None:
        """Renew the lock while the run lives; once another run has taken it over, say so and stop."""
        while not self._stop.wait(self.heartbeat_every):
            try:
                if not self._renew():
                    return
            except Exception as exc:  # a missed beat is retried at the next one
                log.warning("Could not renew the run lock %s: %s", self.uri, exc)

    def _renew(self) -> bool:
        """One heartbeat: the lock rewritten if it is as this run last wrote it; False once it is lost."""
        obj = self._object
        renewed = obj.replace(self._record(), self._version) if self._version is not None else None
        if renewed is not None:
            self._version = renewed
            return True
        current = obj.read()
        if self._ours(current):  # ours still, at a version not known here (a write whose answer was lost)
            self._version = current
            return True
        self._lose(None if current is None else _parse(current.data))
        return False

    def on_loss(self, callback: Callable[[str], None]) -> RunLock:
        """Call ``callback`` when another run takes this lock over (see ``on_lost``); the lock, to enter."""
        self.on_lost = callback
        return self

    def _lose(self, holder: dict | None) -> None:
        if self._lost.is_set():
            return
        self._lost.set()
        now = "no run" if holder is None else f"run {holder.get('run_id')} on {holder.get('host')}"
        reason = f"The run lock {self.uri} is no longer this run's (now {now})"
        log.error("%s: stopping; what is written stays.", reason)
        if self.on_lost is not None:
            try:
                self.on_lost(reason)
            except Exception:
                log.exception("Stopping the run after losing its lock failed.")

    def still_held(self) -> bool:
        """Whether the lock is still this run's, as storage says now: check it before deleting anything."""
        if self._lost.is_set() or not self._token:
            return False
        current = self._object.read()
        if not self._ours(current):
            self._lose(None if current is None else _parse(current.data))
            return False
        return True

    def release(self) -> None:
        """Stop the heartbeat and delete the lock, if (and only as long as) it is this run's."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        obj = self._object
        current = obj.read()
        try:
            if self._token and self._ours(current) and not obj.delete(current):
                log.warning("The run lock %s changed while it was released; left to its new holder.", self.uri)
        except OSError as exc:  # e.g. a store that refuses a conditional DELETE
            log.warning("Could not remove the run lock %s (%s); the next run takes it over once stale.", self.uri, exc)
        self._token = ""

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _parse(data: bytes) -> dict:
    """A lock's record; ``{}`` for bytes that are not one (nobody renews such a lock: it is stale)."""
    try:
        record = json.loads(data)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _identity() -> dict[str, str | None]:
    """What tells this machine from another for a pid: the host name, this boot (a pid of an earlier boot is
    gone) and the pid namespace (a container that shares the host name may not share the pids)."""
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid_ns": _pid_namespace()}


def _boot_id() -> str | None:
    """This boot of this machine (Linux)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    """This process's pid namespace, as ``pid:[4026531836]`` (Linux)."""
    try:
        return os.readlink("/proc/self/ns/pid")
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
