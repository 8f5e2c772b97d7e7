"""Stopping a run early (stage side): a flag the driver raises, which stages check before new work.

When the driver is told to stop (:mod:`pipeline.shutdown`), it raises a :class:`StopFlag`, a small Ray
actor of the run. From then on the read stage reads nothing more (it drops its rows) and the model stage
starts no new batch (it marks its rows :data:`~pipeline.rows.STOPPED`, which the driver leaves out of the
stats); the next run plans them again. What the model has already restored is still written. Its stats
rows reach the driver through the pipeline, and, once the run is stopping, also through the flag itself
(:meth:`StopFlag.record`): the driver may have to stop listening to the pipeline before the rows of the
last images written arrive, and takes them from the flag instead, so that every image written has its row.
"""

from __future__ import annotations

import logging

import numpy as np

from .model_stage import RestoreModel
from .rows import STOPPED

log = logging.getLogger(__name__)


class StopFlag:
    """Raised once by the driver, read by the stages; ``ray.remote(num_cpus=0)`` makes it an actor."""

    def __init__(self) -> None:
        self._raised = False
        self._written: list[dict] = []

    def set(self) -> None:
        self._raised = True

    def is_set(self) -> bool:
        return self._raised

    def record(self, row: dict) -> None:
        """Keep the stats row of an image written while the run is stopping."""
        self._written.append(row)

    def take(self) -> list[dict]:
        """The rows recorded so far (each once)."""
        rows, self._written = self._written, []
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


def record_written(flag, row: dict) -> None:
    """Hand the stats ``row`` of an image just written to the run's stopping ``flag`` (and wait until it
    has it: the task may be ended as soon as it returns)."""
    import ray

    try:
        ray.get(flag.record.remote(row), timeout=30)
    except Exception as exc:  # the row still travels through the pipeline
        log.warning("Could not record a written image on the stop flag: %s", exc)


class StoppableRestoreModel(RestoreModel):
    """:class:`~pipeline.model_stage.RestoreModel` that starts no new batch once the run's flag is raised.

    Args:
        stop: the run's :class:`StopFlag` actor handle (None: never stops).
        **model: :class:`~pipeline.model_stage.RestoreModel`'s arguments.
    """

    def __init__(self, *, stop=None, **model):
        super().__init__(**model)
        self.stop = stop

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if stopped(self.stop):
            # Marked rather than dropped: the batch keeps its columns and their types for the next stage.
            batch = {**batch, "status": np.full(len(batch["status"]), STOPPED, dtype=object)}
        return super().__call__(batch)  # rows that are not ok pass through untouched
