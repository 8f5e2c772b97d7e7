"""Compaction of the stats parts: the plan after it is the plan before it, a kill at any step loses and
doubles no row once recovered, readers that take the latest row (DuckDB, Polars, the next plan) see the
same rows at every moment, and files that are not stats parts are named and never deleted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.planning.plan import make_plan
from pipeline.rows import STATS_SCHEMA
from pipeline.run.compaction import HISTORY, JOURNAL, compact_stats, latest_rows, maybe_compact, recover
from pipeline.run.lock import RunLock
from pipeline.stats import StatsFileError, stats_files, stats_index, write_stats_part
from pipeline.storage import StorageOptions, list_objects

NONE = StorageOptions()
ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
OLD = ["run_id", "input_uri", "output_uri", "status", "error", "model", "finished_at"]  # a part from before


def _row(src, out, name, *, run, day, status="ok", model="m", version=None):
    return {
        "run_id": run,
        "input_uri": str(src / name),
        "output_uri": str(out / "images" / name) if status == "ok" else "",
        "status": status,
        "error": "" if status == "ok" else "decode: cannot identify image file",
        "model": model,
        "input_version": version if version is not None else next(list_objects(str(src / name))).version,
        "finished_at": T0 + timedelta(days=day),
    }


def _part(out, rows, name, *, prefix=None, layout=True, schema=STATS_SCHEMA):
    (out / "stats").mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    if layout:
        write_stats_part(table, out / "stats" / name, input_uri=prefix)
    else:
        pq.write_table(table, out / "stats" / name)


def _archive(tmp_path: Path, nights: int = 6) -> tuple[Path, Path]:
    """An input prefix and an output with ``nights`` runs' parts, a part from before the sorted layout and
    a manifest run's part: re-restored inputs, a decode failure later fixed, one still failing, inputs
    overwritten since, one gone, another model's rows, outputs missing."""
    src, out = tmp_path / "in", tmp_path / "out"
    names = [f"{f}/img{i:02d}.png" for f in ("a", "b", "c") for i in range(8)] + ["top.png"]
    for n in names:
        (src / n).parent.mkdir(parents=True, exist_ok=True)
        (src / n).write_bytes(b"x" * (10 + len(n)))
    legacy = [{k: v for k, v in _row(src, out, n, run="old", day=0).items() if k in OLD} for n in names[:5]]
    _part(
        out, legacy, "run-old-part-00000.parquet", layout=False, schema=pa.schema([STATS_SCHEMA.field(c) for c in OLD])
    )
    for night in range(1, nights + 1):
        todo = names[(night - 1) * 4 : night * 4 + 2]  # overlapping: some inputs restored twice
        rows = [_row(src, out, n, run=f"n{night}", day=night) for n in todo]
        rows += [_row(src, out, "b/img03.png", run=f"n{night}", day=night, status="failed")] if night == 2 else []
        rows += [_row(src, out, todo[0], run=f"n{night}", day=night + 0.5, status="failed")] if night == nights else []
        rows += [_row(src, out, "gone.png", run=f"n{night}", day=night, version="v")] if night == 1 else []
        rows += [_row(src, out, n, run=f"n{night}", day=night, model="other") for n in todo[:2]]
        _part(out, rows, f"run-n{night}-part-00000.parquet", prefix=str(src))
    _part(out, [_row(src, out, "c/img07.png", run="man", day=3, version="stale")], "run-man-part-00000.parquet")
    for n in names[:-3]:
        (out / "images" / n).parent.mkdir(parents=True, exist_ok=True)
        (out / "images" / n).write_bytes(b"y")
    (src / "a/img01.png").write_bytes(b"overwritten since")
    return src, out


def _plan(src, out):
    plan = make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE, distributed=False)
    counts = (plan.listed, plan.planned, plan.skipped, plan.still_bad, plan.changed, plan.vanished)
    return counts, [(r["input_uri"], r["output_uri"]) for r in plan.todo]


def _latest_duckdb(out) -> set[tuple]:
    import duckdb

    return set(
        duckdb.sql(
            f"SELECT input_uri, model, status, output_uri, input_version FROM read_parquet('{out}/stats/*.parquet', "
            "union_by_name = true) QUALIFY row_number() OVER (PARTITION BY input_uri, model "
            "ORDER BY finished_at DESC NULLS FIRST) = 1"
        ).fetchall()
    )


def _latest_polars(out) -> set[tuple]:
    import polars as pl

    cols = ["input_uri", "model", "status", "output_uri", "input_version"]
    frame = (
        pl.scan_parquet(f"{out}/stats/*.parquet", missing_columns="insert", extra_columns="ignore")
        .sort("finished_at", descending=True, nulls_last=False)
        .unique(subset=["input_uri", "model"], keep="first", maintain_order=True)
        .select(cols)
        .collect()
    )
    return set(frame.iter_rows())


def _raw_rows(out) -> int:
    return sum(pq.read_metadata(p).num_rows for p in stats_files(str(out), NONE))


def test_the_plan_after_compaction_is_the_plan_before(tmp_path):
    src, out = _archive(tmp_path)
    before, latest = _plan(src, out), _latest_duckdb(out)
    assert stats_index(stats_files(str(out), NONE), input_uri=str(src), storage=NONE) is None  # shuffles
    done = compact_stats(str(out), storage=NONE)
    assert done.sources == 8 and done.rows_out == len(latest) < done.rows_in
    assert _plan(src, out) == before and min(before[0]) > 0, before[0]
    assert _latest_duckdb(out) == latest == _latest_polars(out)
    assert _raw_rows(out) == len(latest)  # superseded rows are gone: each input and model once
    files = stats_files(str(out), NONE)
    assert len(files) == 1 and Path(files[0]).name.startswith("compact-")
    # The pre-layout and manifest rows lie under the recorded prefix: the next plan needs no shuffle.
    assert stats_index(files, input_uri=str(src), storage=NONE) is not None
    assert not (out / "stats" / JOURNAL).exists()


def test_the_latest_row_is_the_one_planning_takes():
    t = [T0 + timedelta(days=d) for d in (1, 3, 2)]
    rows = [
        {"input_uri": "s3://b/in/x.png", "model": "m", "status": s, "finished_at": f}
        for s, f in [("failed", t[0]), ("ok", t[1]), ("failed", t[2])]
    ]
    rows += [
        {"input_uri": "s3://b/in/y.png", "model": "m", "status": "ok", "finished_at": t[0]},
        {"input_uri": "s3://b/in/y.png", "model": "m", "status": "failed", "finished_at": None},  # no time: latest
        {"input_uri": "s3://b/in/y.png", "model": "n", "status": "ok", "finished_at": t[0]},
    ]
    table = pa.Table.from_pylist([{k: r.get(k) for k in STATS_SCHEMA.names} for r in rows], schema=STATS_SCHEMA)
    latest, superseded = latest_rows(table)
    got = {(r["input_uri"][-5:], r["model"]): r["status"] for r in latest.to_pylist()}
    assert got == {("x.png", "m"): "ok", ("y.png", "m"): "failed", ("y.png", "n"): "ok"}
    assert superseded.num_rows == 3


def _compact_in_child(out, *, failpoint: str | None = None, wait: bool = True):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DGUNET_FAILPOINTS", None)
    if failpoint:
        env["DGUNET_FAILPOINTS"] = f"compact.kill={failpoint}"
    cmd = [sys.executable, str(ROOT / "jobs" / "compact_stats.py"), "--output", str(out)]
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("step", ["journal", "part", "written", "source"])
def test_a_kill_at_any_step_loses_and_doubles_no_row(tmp_path, step):
    src, out = _archive(tmp_path)
    before, latest, files = _plan(src, out), _latest_duckdb(out), stats_files(str(out), NONE)
    killed = _compact_in_child(out, failpoint=step)
    assert killed.returncode == 137, killed.stderr
    assert (out / "stats" / JOURNAL).exists()
    # Before anyone recovers: the readers that take the latest row see what they saw.
    assert _latest_duckdb(out) == latest == _latest_polars(out)
    assert _plan(src, out) == before
    # The next holder of the lock finishes (the parts were all written) or undoes (they may not be).
    done = recover(str(out), NONE)
    assert done.startswith("finished" if step in ("written", "source") else "undid")
    assert not (out / "stats" / JOURNAL).exists()
    now = stats_files(str(out), NONE)
    assert _raw_rows(out) == (
        len(latest) if step in ("written", "source") else sum(pq.read_metadata(f).num_rows for f in files)
    )
    assert (now == files) == (step not in ("written", "source"))
    assert _latest_duckdb(out) == latest and _plan(src, out) == before
    again = _compact_in_child(out)  # and a compaction after it ends as one that was never killed
    assert again.returncode == 0, again.stderr
    assert _raw_rows(out) == len(latest) and _latest_polars(out) == latest and _plan(src, out) == before


@pytest.mark.parametrize("after", [0.0, 0.05, 0.15])
def test_sigkill_mid_compaction_loses_and_doubles_no_row(tmp_path, after):
    """SIGKILL ``after`` seconds into the compaction's journal (while parts are written or deleted)."""
    src, out = _archive(tmp_path, nights=6)
    for night in range(7, 120):  # many parts, so that the kill lands while parts are written or deleted
        rows = [_row(src, out, "top.png", run=f"n{night}", day=night)]
        _part(out, rows, f"run-n{night}-part-00000.parquet", prefix=str(src))
    before, latest = _plan(src, out), _latest_duckdb(out)
    child = _compact_in_child(out, wait=False)
    deadline = time.monotonic() + 60
    while not (out / "stats" / JOURNAL).exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(after)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert _latest_duckdb(out) == latest == _latest_polars(out) and _plan(src, out) == before
    recover(str(out), NONE)
    compact_stats(str(out), storage=NONE)
    assert _raw_rows(out) == len(latest) and _latest_duckdb(out) == latest and _plan(src, out) == before


def test_files_that_are_not_stats_parts_are_named_and_never_deleted(tmp_path):
    src, out = _archive(tmp_path, nights=2)
    junk, foreign = out / "stats" / "junk.parquet", out / "stats" / "theirs.parquet"
    junk.write_bytes(b"not parquet at all")
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    before = sorted(stats_files(str(out), NONE))
    for bad in (junk, foreign):
        other = foreign if bad is junk else junk
        moved = other.rename(tmp_path / other.name)
        with pytest.raises(StatsFileError, match=str(bad)):
            compact_stats(str(out), storage=NONE)
        with pytest.raises(StatsFileError, match=str(bad)):
            make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE, distributed=False)
        manifest = tmp_path / "manifest.txt"
        manifest.write_text(str(src / "top.png") + "\n")
        with pytest.raises(StatsFileError, match=str(bad)):
            make_plan(input_uri=str(src), output_uri=str(out), model="m", storage=NONE, manifest=str(manifest))
        moved.rename(other)
    assert sorted(stats_files(str(out), NONE)) == before  # nothing deleted, nothing written
    run = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "compact_stats.py"), "--output", str(out)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1 and "junk.parquet" in run.stderr and "Traceback" not in run.stderr


def test_a_compaction_beside_a_run_is_refused_by_the_lock(tmp_path):
    src, out = _archive(tmp_path, nights=2)
    files = stats_files(str(out), NONE)
    with RunLock(str(out), "a-run", NONE):
        refused = _compact_in_child(out)
    assert refused.returncode == 3 and "a-run" in refused.stderr and "is writing to" in refused.stderr
    assert stats_files(str(out), NONE) == files


def test_runs_compact_the_earlier_parts_past_the_threshold_and_keep_their_own(tmp_path):
    src, out = _archive(tmp_path, nights=3)  # 5 parts: a legacy one, 3 nights, a manifest run's
    own = [_row(src, out, "top.png", run="now", day=9)]
    _part(out, own, "run-now-part-00000.parquet", prefix=str(src))
    kwargs = {"storage": NONE, "run_id": "now", "input_uri": str(src), "history_days": 0}
    assert maybe_compact(str(out), after=5, **kwargs) is None  # 5 earlier parts: not more than 5
    assert maybe_compact(str(out), after=0, **kwargs) is None  # 0: never
    before = _plan(src, out)
    done = maybe_compact(str(out), after=4, **kwargs)
    assert done is not None and done.sources == 5
    names = sorted(Path(p).name for p in stats_files(str(out), NONE))
    assert names[-1] == "run-now-part-00000.parquet" and len(names) == 2 and _plan(src, out) == before


def test_superseded_rows_are_kept_as_history_for_their_days(tmp_path):
    src, out = _archive(tmp_path, nights=3)
    done = compact_stats(str(out), storage=NONE, history_days=30)
    kept = pq.read_table(done.history)
    assert kept.num_rows == done.rows_in - done.rows_out > 0
    assert Path(done.history).parent == out / HISTORY  # outside stats/: planning never reads it
    old = out / HISTORY / "20250101T000000-0000aaaa.parquet"
    old.write_bytes(Path(done.history).read_bytes())
    assert compact_stats(str(out), storage=NONE, history_days=30).history_deleted == 1
    assert not old.exists() and Path(done.history).exists()
