"""One run per output prefix: exclusive lock creation, locally and on a real S3 server."""

from __future__ import annotations

import json
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
    # A lock left by a killed run is taken over once it is stale.
    (tmp_path / "out" / "runs" / "LOCK").write_text(json.dumps({"run_id": "dead", "started": time.time() - 7200}))
    RunLock(out, "fourth", opts, stale_after=3600).acquire()
    assert RunLock(out, "x", opts).holder()["run_id"] == "fourth"


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
