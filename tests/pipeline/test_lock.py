"""One run per output prefix: exclusive lock creation, locally and on a real S3 server."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest

from pipeline.lock import LockedError, RunLock
from pipeline.storage import StorageOptions


def _race(make_lock, n: int = 6) -> int:
    """Start ``n`` acquirers at once; return how many won."""
    wins, barrier = [], threading.Barrier(n)

    def attempt(i):
        lock = make_lock(f"run{i}")
        barrier.wait()
        try:
            lock.acquire()
            wins.append(i)
        except LockedError:
            pass

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(wins)


def test_local_lock_excludes_release_and_stale_takeover(tmp_path):
    out, opts = str(tmp_path / "out"), StorageOptions()
    first = RunLock(out, "first", opts)
    first.acquire()
    with pytest.raises(LockedError, match="Another run \\(first"):
        RunLock(out, "second", opts).acquire()
    RunLock(out, "second", opts).release()  # not the holder: the lock stays
    assert first.holder()["run_id"] == "first"
    first.release()
    with RunLock(out, "third", opts) as third:
        assert third.holder()["run_id"] == "third"
    # A lock left by a killed run elsewhere is taken over once it has not been renewed for stale_after.
    lock_file = tmp_path / "out" / "runs" / "LOCK"
    lock_file.write_text(json.dumps({"run_id": "dead", "host": "elsewhere", "pid": 1, "heartbeat": time.time() - 7200}))
    fourth = RunLock(out, "fourth", opts, stale_after=3600)
    fourth.acquire()
    assert RunLock(out, "x", opts).holder()["run_id"] == "fourth"
    fourth.release()


def test_lock_of_a_killed_process_on_this_machine_is_taken_over_at_once(tmp_path):
    out, opts = str(tmp_path / "out"), StorageOptions()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        held = RunLock(out, "killed", opts)
        record = json.loads(held._record())
        record["pid"] = child.pid
        (tmp_path / "out" / "runs").mkdir(parents=True)
        (tmp_path / "out" / "runs" / "LOCK").write_text(json.dumps(record))
        with pytest.raises(LockedError, match="killed"):
            RunLock(out, "restart", opts).acquire()  # its process is alive: the lock holds
    finally:
        child.kill()
        child.wait()
    with RunLock(out, "restart", opts) as restart:  # SIGKILLed: taken over without waiting
        assert restart.holder()["run_id"] == "restart"


def test_heartbeat_keeps_a_long_run_locked(tmp_path):
    out, opts = str(tmp_path / "out"), StorageOptions()
    with RunLock(out, "long", opts, heartbeat_every=0.2) as long_run:
        first = long_run.holder()["heartbeat"]
        time.sleep(1.0)
        renewed = long_run.holder()["heartbeat"]
        assert renewed > first
        # Another machine's run, with a staleness bound shorter than this run's age, still sees it alive.
        other = RunLock(out, "other", opts, stale_after=0.8)
        with pytest.raises(LockedError):
            other.acquire()
    assert RunLock(out, "x", opts).holder() is None


def test_local_race_has_one_winner(tmp_path):
    out = str(tmp_path / "out")
    assert _race(lambda rid: RunLock(out, rid, StorageOptions())) == 1


@pytest.mark.slow
def test_s3_conditional_create_has_one_winner(s3fs_client, s3_endpoint):
    bucket = f"lock-{uuid.uuid4().hex[:8]}"
    s3fs_client.mkdir(bucket)
    s3fs_client.pipe(f"{bucket}/restored/images/existing.png", b"x")  # an output prefix in use, as in real runs
    opts = StorageOptions(endpoint_url=s3_endpoint)
    out = f"s3://{bucket}/restored"
    assert _race(lambda rid: RunLock(out, rid, opts)) == 1
    holder = RunLock(out, "probe", opts).holder()
    with pytest.raises(LockedError):
        RunLock(out, "late", opts).acquire()
    RunLock(out, holder["run_id"], opts).release()
    RunLock(out, "after", opts).acquire()
