"""A run's summary: what it did, in counts, throughput, failures and where its outputs are; written as
``runs/<run_id>.json`` and printed by the job."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from ..printable import printable
from ..storage import join_uri


@dataclass
class RunSummary:
    run_id: str
    model: str
    input_uri: str
    output_uri: str
    listed: int = 0
    skipped: int = 0
    still_bad: int = 0
    changed: int = 0  # restored again: the input changed since an earlier run restored it
    vanished: int = 0  # inputs that earlier runs saw and that are gone now; their outputs stay
    reformatted: int = 0  # restored again: their output is in another format than output.format asks now
    adopted: int = 0  # not restored: their output was found written, unrecorded, by this model (pipeline.run.adoption)
    ok: int = 0
    failed: int = 0
    megapixels: float = 0.0
    plan_seconds: float = 0.0
    wall_seconds: float = 0.0
    stats_files: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # the first 100, with reasons
    interrupted: str | None = None  # the signal that stopped the run ("SIGTERM", "SIGINT"); None: it ran out
    dashboard_url: str | None = None
    report_uri: str | None = None
    metrics: dict = field(default_factory=dict)  # where the time went, bytes, mean noise, failures by kind
    execution_stats: list[str] = field(default_factory=list)  # Ray Data's per-operator stats, per pass
    compaction: dict | None = None  # the earlier runs' stats parts merged at the end (pipeline.run.compaction)

    @property
    def processed(self) -> int:
        return self.ok + self.failed

    @property
    def images_per_second(self) -> float:
        return self.processed / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def megapixels_per_second(self) -> float:
        return self.megapixels / self.wall_seconds if self.wall_seconds else 0.0

    def to_json(self) -> str:
        d = asdict(self)
        d.update(
            images_per_second=self.images_per_second,
            megapixels_per_second=self.megapixels_per_second,
            images_uri=join_uri(self.output_uri, "images"),
            stats_uri=join_uri(self.output_uri, "stats"),
        )
        return json.dumps(d, indent=1, default=str)

    def _routes(self) -> list[str]:
        """``routes  denoise 12, deblur 3, passed 40`` (and what the router found, under task: auto)."""
        out = []
        for key, label in (("routes", "routes  "), ("detected", "detected")):
            counts = (self.metrics or {}).get(key)
            if counts:
                out.append(f"  {label} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return out

    def render(self) -> str:
        lines = [
            f"run {self.run_id}  model {self.model}"
            + (f"  INTERRUPTED by {self.interrupted}" if self.interrupted else ""),
            f"  input    {printable(self.input_uri)}  ({self.listed} images listed)"
            + ("  NO IMAGES: nothing there has an image extension" if not self.listed and not self.vanished else ""),
            f"  ok {self.ok}   failed {self.failed}   skipped: {self.skipped} already done, "
            f"{self.still_bad} undecodable before and unchanged; {self.changed} changed since restored, "
            f"{self.vanished} vanished, {self.reformatted} into a new format"
            + (f", {self.adopted} adopted (written before, never recorded)" if self.adopted else ""),
            f"  {self.processed} images, {self.megapixels:.1f} MP in {self.wall_seconds:.1f} s: "
            f"{self.images_per_second:.2f} images/s, {self.megapixels_per_second:.2f} MP/s "
            f"(planning {self.plan_seconds:.1f} s)",
            *self._routes(),
            f"  images   {join_uri(self.output_uri, 'images')}",
            f"  stats    {join_uri(self.output_uri, 'stats')}",
            f"  summary  {join_uri(self.output_uri, 'runs', self.run_id + '.json')}",
        ]
        if self.compaction:
            c = self.compaction
            lines.append(
                f"  compacted {c['sources']} earlier stats parts ({c['rows_in']} rows) into {len(c['parts'])} "
                f"({c['rows_out']} rows) in {c['seconds']:.1f} s"
            )
        if self.report_uri:
            lines.append(f"  report   {self.report_uri}")
        if self.dashboard_url:
            lines.append(f"  Ray dashboard  {self.dashboard_url}")
        for f in self.failures[:10]:
            lines.append(f"  failed: {printable(f['input_uri'])}: {printable(f['error'])}")
        if self.failed > 10:
            lines.append(f"  ... {self.failed - 10} more failures in the stats")
        return "\n".join(lines)


def check_run_id(run_id: str) -> str:
    """``run_id``, if it is a name that stays one path segment under the output (``runs/<run_id>.json``,
    ``reports/<run_id>.html``, stats parts): letters, digits, ``.``, ``_`` and ``-``, and not ``.`` or ``..``.

    Raises:
        ValueError: any other name.
    """
    if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id) or run_id in (".", ".."):
        raise ValueError(
            f"--run-id: expected letters, digits, '.', '_' and '-' (not '.' or '..'), but got {run_id!r} instead."
        )
    return run_id
