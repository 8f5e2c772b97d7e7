"""Stopping a run early: a flag the driver raises and hands to the stages, which check it before new work.

When the driver is told to stop (:mod:`pipeline.run.shutdown`), it raises a :class:`StopFlag`, a small Ray
actor of the run (:func:`start_flag`). The driver passes the flag's handle down to the stages as an
argument; no stage looks for it above. From then on the read stage reads nothing more (it drops its rows)
and the model stage starts no new batch (it marks its rows :data:`~pipeline.rows.STOPPED`, which the
driver leaves out of the stats); the next run plans them again. What the model has already restored is
still written.

The flag also holds the stats row of each image written until the driver has it: the write stage asks
the flag before it writes a batch of images (:meth:`StopFlag.begin`, one call for the batch) and hands it
the batch's rows once written (:meth:`StopFlag.finish`, one more), and the driver acknowledges the rows
the pipeline delivers. Two calls per write batch, not per image, so that one flag keeps up with a cluster
of writers (``bench/stop_flag.py``). A driver that has
to stop listening to the pipeline (at its drain deadline) closes the flag to new writes, waits a little
for the writes under way (:meth:`StopFlag.writing`), and takes the rows still held (:meth:`StopFlag.take`):
every image written by then has its row, and no write starts after it.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class StopFlag:
    """Raised once by the driver, read by the stages; ``ray.remote(num_cpus=0)`` makes it an actor."""

    def __init__(self) -> None:
        self._raised = False
        self._closed = False  # to new writes: the driver no longer takes rows
        self._writing: set[str] = set()  # input_uri of each image being written
        self._undelivered: dict[str, dict] = {}  # input_uri -> stats row of an image written

    def set(self) -> None:
        self._raised = True

    def is_set(self) -> bool:
        return self._raised

    def begin(self, uris: list[str]) -> bool:
        """Whether the images of ``uris`` (a write batch) may be written: not once the flag is closed."""
        if self._closed:
            return False
        self._writing.update(uris)
        return True

    def finish(self, rows: dict[str, dict | None]) -> None:
        """The writes of a batch ended; hold the stats row of each image written (``rows``: input_uri ->
        row, None where nothing was written) until the driver has it."""
        for uri, row in rows.items():
            self._writing.discard(uri)
            if row is not None:
                self._undelivered[uri] = row

    def close(self) -> None:
        """No write starts from now on."""
        self._closed = True

    def writing(self) -> int:
        """How many writes are under way."""
        return len(self._writing)

    def delivered(self, uris: list[str]) -> None:
        """The driver has the rows of ``uris`` (through the pipeline)."""
        for uri in uris:
            self._undelivered.pop(uri, None)

    def take(self) -> list[dict]:
        """The rows held, each once."""
        rows, self._undelivered = list(self._undelivered.values()), {}
        return rows


def start_flag():
    """A :class:`StopFlag` actor for one run (it ends with the driver that owns it)."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=-1)(StopFlag).remote()


def stopped(flag) -> bool:
    """Whether the driver has raised ``flag`` (a :class:`StopFlag` actor handle, or None: never)."""
    if flag is None:
        return False
    import ray

    try:
        return bool(ray.get(flag.is_set.remote(), timeout=30))
    except Exception as exc:  # an unreachable flag must not stop a healthy run, nor fail it
        log.warning("Could not read the run's stop flag: %s", exc)
        return False


def begin_writes(flag, uris: list[str]) -> bool:
    """Whether the run's ``flag`` lets the images of ``uris`` (a write batch) be written (False once the
    driver has closed it); an unreachable flag lets them."""
    import ray

    try:
        return bool(ray.get(flag.begin.remote(uris), timeout=30))
    except Exception as exc:  # an unreachable flag must not stop a healthy run
        log.warning("Could not ask the run's stop flag before a write: %s", exc)
        return True


def finish_writes(flag, rows: dict[str, dict | None]) -> None:
    """Tell the run's ``flag`` that a batch's writes ended, with the stats row of each image written
    (``rows``: input_uri -> row, None where none was), and wait until it has them: a task may be ended
    (the run stopping) as soon as its images are written."""
    import ray

    try:
        ray.get(flag.finish.remote(rows), timeout=30)
    except Exception as exc:  # the rows still travel through the pipeline
        log.warning("Could not record written images on the stop flag: %s", exc)


def close_and_take(flag, wait: float) -> tuple[list[dict], int]:
    """Close ``flag`` to new writes, wait up to ``wait`` seconds for the writes under way, and take the
    rows it holds: those rows, and how many writes were still under way."""
    import ray

    ray.get(flag.close.remote(), timeout=30)
    deadline = time.monotonic() + wait
    while (writing := ray.get(flag.writing.remote(), timeout=30)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return ray.get(flag.take.remote(), timeout=30), writing
