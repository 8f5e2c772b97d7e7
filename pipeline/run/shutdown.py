"""Stopping a run on SIGTERM or SIGINT without losing what it did (driver side).

Kubernetes stops a pod with SIGTERM (pod deletion, ``activeDeadlineSeconds``, a node drain, a spot
notice) and gives it ``terminationGracePeriodSeconds`` (30) before SIGKILL; a person stops a run with
Ctrl-C. :class:`GracefulStop` turns either into an orderly end within ``grace`` seconds:

1. At once: the stages are told to take no new work (the callbacks of :meth:`GracefulStop.on_stop`
   raise the run's :class:`~pipeline.stages.stop.StopFlag`); images already restored are still written.
2. The driver keeps taking the stats rows of what finishes, until the pipeline has drained or the drain
   deadline (``grace`` less a reserve for step 3) has passed, whichever comes first.
3. It writes the stats rows it has, the run summary marked ``interrupted``, releases the run lock and
   exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).

A second signal ends the process at once, as does the end of the grace period if step 3 hangs (a lock
left behind is taken over by the next run, see :mod:`pipeline.run.lock`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):  # noqa: N818  (like KeyboardInterrupt: not an error of the code)
    """Raised in the driver's main thread where it waits, to stop waiting for work it gave up."""


class GracefulStop:
    """SIGTERM and SIGINT handlers of the driver, installed for the ``with`` block (main thread only).

    Args:
        grace: seconds from the first signal to the end of the process.
        reserve: seconds of ``grace`` kept for writing the stats, the summary and releasing the lock
            (default: a third of ``grace``, at most 10).

    Regions of the driver's main thread (:meth:`region`) say what a signal may interrupt: ``"any"``
    (planning: nothing is lost by stopping at once), ``"wait"`` (waiting for the next stats rows: stopped
    only at the drain deadline), and elsewhere nothing (writing stats: the loop checks :attr:`requested`
    and :attr:`drain_over` itself).
    """

    def __init__(self, grace: float, *, reserve: float | None = None):
        self.grace = float(grace)
        self.reserve = min(10.0, self.grace / 3) if reserve is None else float(reserve)
        self.signum: int | None = None
        self.received_at: float | None = None  # time.monotonic() of the first signal
        self._region: str | None = None
        self._requested = threading.Event()
        self._drain_over = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._previous: dict[int, object] = {}
        self._closed = threading.Event()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    @property
    def drain_over(self) -> bool:
        return self._drain_over.is_set()

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum else None

    @property
    def exit_code(self) -> int:
        """``128 + signal``, the shells' convention: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + (self.signum or 0)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (on a helper thread, not in the signal handler) when a stop is requested;
        at once if one already was."""
        self._callbacks.append(callback)
        if self.requested:
            self._run_callback(callback)

    def request(self, reason: str) -> None:
        """Stop the run as SIGTERM would (the same steps, exit code and summary), for a reason of the
        program's own: the run's lock taken over by another run (see :mod:`pipeline.run.lock`). Callable from any
        thread; nothing more happens when a stop was already requested."""
        if self.signum is not None:
            return
        self.signum, self.received_at = signal.SIGTERM, time.monotonic()
        self._requested.set()
        log.warning("%s: taking no new work; writing what is done and stopping within %.0f s.", reason, self.grace)
        threading.Thread(target=self._after_signal, name="graceful-stop", daemon=True).start()

    @contextmanager
    def region(self, kind: str) -> Iterator[None]:
        """Mark what a signal may interrupt while the block runs: ``"any"`` or ``"wait"``."""
        if kind not in ("any", "wait"):
            raise ValueError(f"Expected a region of 'any' or 'wait', but got {kind!r} instead.")
        if (kind == "any" and self.requested) or self.drain_over:
            raise Interrupted
        previous, self._region = self._region, kind
        try:
            yield
        finally:
            self._region = previous

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is not threading.main_thread():
            log.warning("Not in the main thread: SIGTERM and SIGINT keep their handlers; a signal ends the run.")
            return self
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._closed.set()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self._drain_over.is_set():  # the nudge of the drain deadline, or a signal after it
            if self._region is not None:
                raise Interrupted
            return
        if self.signum is not None:
            log.error("Second signal (%s): exiting now, without writing what is pending.", signal.Signals(signum).name)
            os._exit(self.exit_code)
        self.signum, self.received_at = signum, time.monotonic()
        self._requested.set()
        log.warning(
            "%s: taking no new work; writing what is done and stopping within %.0f s.", self.signal_name, self.grace
        )
        threading.Thread(target=self._after_signal, name="graceful-stop", daemon=True).start()
        if self._region == "any":
            raise Interrupted

    def _run_callback(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("A stop callback failed; the run stops anyway.")

    def _after_signal(self) -> None:
        """The helper thread: run the callbacks, end the drain at its deadline, end the process at the end
        of the grace period if the driver has not finished by then."""
        for callback in list(self._callbacks):
            self._run_callback(callback)
        if self._closed.wait(max(0.0, self.grace - self.reserve)):
            return
        self._drain_over.set()
        if not self._previous:  # no handlers of ours (not the main thread; a stop by request): no nudge, no exit
            return
        # Wake the main thread wherever it waits (a blocked lock or queue wakes on a signal): its handler
        # now raises Interrupted inside a region.
        signal.pthread_kill(threading.main_thread().ident, self.signum)
        if self._closed.wait(self.reserve):
            return
        log.error("The run did not finish within the %.0f s grace period: exiting now.", self.grace)
        os._exit(self.exit_code)
