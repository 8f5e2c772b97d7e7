"""A run's metrics in Ray's metrics API, where a Ray cluster's operators look: Prometheus, Grafana and
Ray's dashboard.

The driver records them from the stats rows, as the stats writer takes them
(:class:`~pipeline.stats.StatsWriter`'s ``on_rows``): every row a run records (restored, passed, failed,
and adopted before the pipeline starts) passes there once, and no other, so the counters are the stats'
own counts, at a few metric calls per batch of rows. Ray exports a driver's metrics through its node's
metrics agent, as it does a worker's, and flushes them when the driver exits. Prometheus sees them with
Ray's ``ray_`` prefix, and a counter with ``_total`` after its name:

======================================  =======  ========================  ==========================================
name (as Prometheus shows it)           type     tags                      what
======================================  =======  ========================  ==========================================
``ray_dgunet_images_total``             counter  run_id, task, outcome     images by outcome: ``restored``,
                                                                           ``passed``, ``adopted``, ``failed``
``ray_dgunet_failures_total``           counter  run_id, task, kind        failed images by the stage that failed:
                                                                           ``read``, ``decode``, ``model``,
                                                                           ``write`` (the error's prefix), ``other``
``ray_dgunet_megapixels_total``         counter  run_id, task              megapixels of the images restored or passed
``ray_dgunet_input_bytes_total``        counter  run_id, task              bytes read (restored, passed, and failed
                                                                           after their read)
``ray_dgunet_output_bytes_total``       counter  run_id, task              bytes of the images written
``ray_dgunet_megapixels_per_second``    gauge    run_id                    megapixels restored or passed per second,
                                                                           the run's mean since its planning ended
======================================  =======  ========================  ==========================================

``task`` is the task that ran on the image (``denoise``, ``deblur``, ``derain``), else the run's
(``auto`` for an image that ``task: auto`` passed or that failed before routing). An adopted image was
written by an earlier run: it counts as an image only, with no bytes or megapixels. A series appears
with its first count.

The model's queue is Ray Data's own: the pipeline is named ``dgunet-<run_id>`` (:func:`tag_dataset`), so Ray
Data's per-operator gauges carry the run's id in their ``dataset`` tag (``dgunet-<run_id>_<uuid>_<n>``).
``ray_data_operator_queued_blocks`` of the model's operator (``MapBatches(RestoreModel)``, and
``MapBatches(restore_alone)`` in a pass that retries images one at a time) counts the batches waiting for an
actor: its input queue and the blocks it has taken that no actor runs yet; a block before the model is one
model batch. ``docs/grafana/dgunet-restore.json`` draws them all.

    >>> metrics = RunMetrics("20260101T000000Z-1a2b3c", task="denoise")
    >>> metrics.record(stats_table)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter

import pyarrow as pa

from ..rows import ADOPTED, FAILED, OK, RESTORED

log = logging.getLogger(__name__)

COUNTERS = {  # name (without Ray's ray_ prefix and Prometheus' _total) -> (tags, description)
    "dgunet_images": (("run_id", "task", "outcome"), "Images recorded: restored, passed, adopted or failed."),
    "dgunet_failures": (("run_id", "task", "kind"), "Failed images by the stage that failed (the error's prefix)."),
    "dgunet_megapixels": (("run_id", "task"), "Megapixels of the images restored or passed through."),
    "dgunet_input_bytes": (("run_id", "task"), "Bytes of the inputs read (a failed read counts none)."),
    "dgunet_output_bytes": (("run_id", "task"), "Bytes of the images written."),
}
GAUGES = {
    "dgunet_megapixels_per_second": (
        ("run_id",),
        "Megapixels restored or passed per second: the run's mean since its planning ended.",
    ),
}
FAILURE_KINDS = ("read", "decode", "model", "write")  # the stages' prefixes of a failed row's error
OTHER = "other"
_COLUMNS = ["status", "error", "action", "task", "width", "height", "input_bytes", "output_bytes"]


def prometheus_names() -> set[str]:
    """The names Prometheus shows for this module's metrics (Ray's ``ray_`` prefix; ``_total`` for a counter)."""
    return {f"ray_{name}_total" for name in COUNTERS} | {f"ray_{name}" for name in GAUGES}


def dataset_name(run_id: str) -> str:
    """The name of the run's Ray Data pipeline: the prefix of its ``dataset`` tag in Ray Data's metrics."""
    return f"dgunet-{run_id}"


def tag_dataset(ds, run_id: str):
    """``ds`` (a Ray Data ``Dataset``), named after the run (:func:`dataset_name`), so that Ray Data's own
    metrics (among them the model's queue) and its dashboard view carry the run's id."""
    ds.set_name(dataset_name(run_id))
    return ds


def failure_kind(error: str | None) -> str:
    """The stage a failed row's error names first (``decode: cannot identify image file ...`` -> ``decode``),
    or ``other``: a tag with a few values, never the error's text."""
    head = (error or "").split(":", 1)[0].strip()
    return head if head in FAILURE_KINDS else OTHER


def count_rows(table: pa.Table, *, task: str) -> Counter:
    """What stats rows (:data:`~pipeline.rows.STATS_SCHEMA`) add to each counter.

    Args:
        table: the rows.
        task: the run's task (``auto`` too), the tag of the rows on which no task's model ran.

    Returns:
        ``{(name, *tag values but the run's id): amount}``, e.g. ``("dgunet_images", "denoise", "passed"): 3``.
    """
    counts: Counter = Counter()
    for row in table.select(_COLUMNS).to_pylist():
        tag = row["task"] or task
        if row["status"] != OK:
            kind = failure_kind(row["error"])
            counts["dgunet_images", tag, FAILED] += 1
            counts["dgunet_failures", tag, kind] += 1
            if kind != "read":  # read whole before it failed (its size as listed)
                counts["dgunet_input_bytes", tag] += row["input_bytes"] or 0
            continue
        action = row["action"] or RESTORED
        counts["dgunet_images", tag, action] += 1
        if action == ADOPTED:  # written by an earlier run; only its header was read now
            continue
        counts["dgunet_megapixels", tag] += (row["width"] or 0) * (row["height"] or 0) / 1e6
        counts["dgunet_input_bytes", tag] += row["input_bytes"] or 0
        counts["dgunet_output_bytes", tag] += row["output_bytes"] or 0
    return counts


class RunMetrics:
    """A run's metrics, recorded from its stats rows in the driver and exported by Ray (see the module).

    Args:
        run_id: the run's id, the ``run_id`` tag of every series.
        task: the spec's task (``denoise``, ..., ``auto``).
    """

    def __init__(self, run_id: str, *, task: str):
        self.run_id, self.task = run_id, task
        self.start = time.monotonic()
        self.megapixels = 0.0
        self._warned = False

    def record(self, table: pa.Table) -> None:
        """Count a batch of stats rows. Metrics are for watching a run: one that Ray refuses is logged once,
        and the run goes on."""
        counts = count_rows(table, task=self.task)
        self.megapixels += sum(v for key, v in counts.items() if key[0] == "dgunet_megapixels")
        try:
            self._export(counts)
        except Exception as exc:
            if not self._warned:
                log.warning("Run metrics not exported: %s: %s", type(exc).__name__, exc)
                self._warned = True

    def _export(self, counts: Counter) -> None:
        counters, gauges = _instruments()
        for (name, *values), amount in counts.items():
            if amount > 0:  # Ray's counters take positive increments only
                keys = COUNTERS[name][0][1:]
                counters[name].inc(amount, {"run_id": self.run_id, **dict(zip(keys, values))})
        elapsed = time.monotonic() - self.start
        if elapsed > 0:
            gauges["dgunet_megapixels_per_second"].set(self.megapixels / elapsed, {"run_id": self.run_id})


@functools.cache
def _instruments() -> tuple[dict, dict]:
    """Ray's counters and gauges of :data:`COUNTERS` and :data:`GAUGES`, made once per process."""
    from ray.util.metrics import Counter as RayCounter
    from ray.util.metrics import Gauge

    counters = {name: RayCounter(name, description=text, tag_keys=tags) for name, (tags, text) in COUNTERS.items()}
    gauges = {name: Gauge(name, description=text, tag_keys=tags) for name, (tags, text) in GAUGES.items()}
    return counters, gauges
