"""Run ``jobs/restore_bucket.py`` in a fresh process (its own local Ray) and collect what it measured."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from procmem import PeakRSS

ROOT = Path(__file__).resolve().parents[1]
_OPERATOR = re.compile(
    r"Operator \d+ (?P<name>[^:]+): .*?\n\* Remote wall time: .*?(?P<total>[\d.]+)(?P<unit>us|ms|s) total", re.S
)
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_SPILLED = re.compile(r"Spilled to disk: (\d+)MB")


def operator_seconds(stats: str) -> dict[str, float]:
    """Ray Data's remote wall time per operator, summed over its tasks, from ``Dataset.stats()``."""
    return {m["name"]: float(m["total"]) * _UNITS[m["unit"]] for m in _OPERATOR.finditer(stats)}


def run_job(flags: list[str], *, env: dict, fs, output: str, run_id: str) -> dict:
    """Wall time (Ray's start included), peak RSS by role, and the run's own summary JSON."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "jobs/restore_bucket.py", *flags, "--output", output, "--run-id", run_id],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    mem = PeakRSS(proc.pid)
    mem.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    peaks = mem.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"restore_bucket exited {proc.returncode}:\n{out[-4000:]}")
    fs.invalidate_cache()
    summary = json.loads(fs.cat(f"{output.split('://', 1)[1]}/runs/{run_id}.json"))
    operators: dict[str, float] = {}
    for stats in summary.get("execution_stats", []):
        for k, v in operator_seconds(stats).items():
            operators[k] = operators.get(k, 0.0) + v
    # Ray Data prints "Spilled to disk" only when the object store spilled during the run.
    spilled = sum(int(m) for stats in summary.get("execution_stats", []) for m in _SPILLED.findall(stats))
    return {
        "wall_s": wall,
        "peak_rss_mb": peaks,
        "summary": summary,
        "operator_s": operators,
        "spilled_mb": spilled,
        "log": out,
    }
