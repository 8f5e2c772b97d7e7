"""The driver's SIGTERM/SIGINT handling, on its own: what a signal interrupts, and when."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time

import pytest

from pipeline.run.shutdown import GracefulStop, Interrupted


def _send_soon(sig: int, delay: float = 0.2) -> None:
    threading.Timer(delay, os.kill, (os.getpid(), sig)).start()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_planning_stops_at_once_and_the_exit_code_names_the_signal(sig):
    before = signal.getsignal(sig)
    called = threading.Event()
    with GracefulStop(30) as stop:
        stop.on_stop(called.set)
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            with stop.region("any"):
                _send_soon(sig)
                time.sleep(120)
        assert time.monotonic() - t0 < 60  # stopped at once, not at the sleep's end (a bound no load reaches)
        assert stop.requested and stop.signal_name == sig.name and stop.exit_code == 128 + sig
        assert called.wait(5)  # the callbacks (raising the stages' stop flag) ran, off the handler
        with pytest.raises(Interrupted):  # once stopping, no new planning starts
            with stop.region("any"):
                pass
    assert signal.getsignal(sig) is before  # the handlers are put back


def test_waiting_for_results_goes_on_until_the_drain_deadline():
    """A signal does not cut the wait for the stats of work in flight; the drain deadline (the grace less
    its reserve) does, even where the main thread is blocked on a queue. The reserve is long, so that the
    grace period's last-resort exit (which would end this process) cannot come first on a loaded machine."""
    with GracefulStop(32.0, reserve=30.0) as stop:
        t0 = time.monotonic()
        _send_soon(signal.SIGTERM)
        with pytest.raises(Interrupted):
            with stop.region("wait"):
                queue.Queue().get()  # blocks until the signal's handler raises
        waited = time.monotonic() - t0
        assert stop.requested and stop.drain_over
        assert 2.0 <= waited < 32.0, waited  # never before the deadline; the upper bound only catches a hang
        with pytest.raises(Interrupted):  # past the deadline, no new wait starts
            with stop.region("wait"):
                pass


def test_outside_regions_a_signal_only_sets_the_flags():
    with GracefulStop(30) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.requested and not stop.drain_over
        with stop.region("wait"):  # draining goes on
            pass
