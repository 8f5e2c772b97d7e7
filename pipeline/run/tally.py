"""The run's tally: what the summary counts (``runs/<run_id>.json``), whether or not a report is drawn.

:class:`RunTally` takes the stats rows as the driver streams them and keeps counts and sums only: ok and
failed inputs, images passed through, megapixels, where the time went, bytes, mean noise before and after,
the first failures with a count per kind, ok images per task that ran (``routes``; ``passed`` where none
did) and, under ``task: auto``, per degradation found (``detected``). :class:`~pipeline.run.report.ReportCollector`
draws the page from its own bounded state and from this tally's numbers.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import pyarrow as pa

from ..rows import OK, PASSED

MAX_KINDS = 500  # distinct failure kinds counted; any further ones are counted together
SUMMED = ("seconds", "decode_seconds", "encode_seconds", "input_bytes", "output_bytes")
MEANS = ("noise_before", "noise_after")


class RunTally:
    """Counts and sums of a run's stats rows, in constant memory (besides the first ``failures`` failures).

    >>> tally = RunTally()
    >>> tally.add(stats_table)  # doctest: +SKIP
    >>> tally.ok, tally.failed, tally.megapixels  # doctest: +SKIP
    """

    def __init__(self, *, failures: int = 200):
        """``failures``: how many failures are kept with their reasons (all are counted)."""
        self.max_failures = failures
        self.totals: Counter[str] = Counter()
        self.failures: list[dict] = []  # the first ones: {"input_uri", "error"}
        self.reasons: Counter[str] = Counter()  # failure kind (see _reason_kind) -> inputs
        self.routes: Counter[str] = Counter()  # ok images per task that ran, or "passed"
        self.detected: Counter[str] = Counter()  # task: auto: ok images per degradation the router found

    @property
    def ok(self) -> int:
        return int(self.totals["ok"])

    @property
    def failed(self) -> int:
        return int(self.totals["failed"])

    @property
    def passed(self) -> int:
        """Ok images that the gate passed through unrestored."""
        return int(self.totals["passed"])

    @property
    def megapixels(self) -> float:
        """Megapixels of the ok images."""
        return float(self.totals["megapixels"])

    def add(self, table: pa.Table) -> None:
        """Count a batch of stats rows (:data:`~pipeline.rows.STATS_SCHEMA`)."""
        columns = ["input_uri", "status", "action", "task", "degradation", "error", "width", "height", *SUMMED, *MEANS]
        for row in table.select(columns).to_pylist():
            self._add(row)

    def _add(self, row: dict) -> None:
        if row["status"] != OK:
            self.totals["failed"] += 1
            kind = _reason_kind(row["error"] or "")
            self.reasons[kind if kind in self.reasons or len(self.reasons) < MAX_KINDS else "(other kinds)"] += 1
            if len(self.failures) < self.max_failures:
                self.failures.append({"input_uri": row["input_uri"], "error": row["error"]})
            return
        self.totals["ok"] += 1
        self.totals["passed"] += row["action"] == PASSED
        self.routes[row["task"] or row["action"] or "passed"] += 1
        if row["degradation"]:
            self.detected[row["degradation"].split()[0]] += 1
        for column in SUMMED:
            self.totals[column] += row[column] or 0
        self.totals["megapixels"] += (row["width"] or 0) * (row["height"] or 0) / 1e6
        for column in MEANS:
            if row[column] is not None and math.isfinite(row[column]):
                self.totals[column] += row[column]
                self.totals[column + "_n"] += 1

    def metrics(self) -> dict[str, float]:
        """Per-run metrics for the JSON summary: where the time went, bytes, mean noise before and after."""
        t, ok = self.totals, max(1, self.ok)
        out = {
            "model_seconds_total": t["seconds"],
            "decode_seconds_total": t["decode_seconds"],
            "encode_write_seconds_total": t["encode_seconds"],
            "model_seconds_per_image": t["seconds"] / ok,
            "passed": self.passed,
            "input_bytes": int(t["input_bytes"]),
            "output_bytes": int(t["output_bytes"]),
        }
        for column in MEANS:
            if t[column + "_n"]:
                out[f"mean_{column}"] = t[column] / t[column + "_n"]
        out["failures_by_kind"] = dict(self.reasons.most_common(20))
        out["routes"] = dict(sorted(self.routes.items()))  # ok images per task that ran, or passed/adopted
        if self.detected:
            out["detected"] = dict(sorted(self.detected.items()))
        return out


def _reason_kind(error: str) -> str:
    """Group failures by stage and error type, numbers masked: ``decode: image of NxN = N pixels exceeds
    the limit of N pixels``, ``model: OutOfMemoryError``."""
    head = error.split(":")
    kind = ":".join(head[:2]).strip() if len(head) > 1 else error
    return re.sub(r"\d+(\.\d+)?", "N", kind)[:80]
