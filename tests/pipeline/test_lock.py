"""One run per output prefix: creating and taking over the lock, raced through the real storage code (local
files, a real S3 server), a holder's identity, and a run that loses its lock."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import pytest

from pipeline.run.lock import LockedError, RunLock
from pipeline.run.shutdown import GracefulStop
from pipeline.storage import StorageOptions, join_uri

LOCAL = StorageOptions()
DEAD = {"run_id": "dead", "host": "elsewhere", "pid": 1, "started": 0.0, "heartbeat": 0.0}  # silent since 1970


def _race(make_lock, n: int) -> list[RunLock]:
    """Start ``n`` acquirers at once; the locks that were acquired."""
    wins, barrier = [], threading.Barrier(n)

    def attempt(i):
        lock = make_lock(f"run{i}")
        barrier.wait()
        try:
            lock.acquire()
            wins.append(lock)
        except LockedError:
            pass

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return wins


def _race_rounds(output, storage: StorageOptions, write, *, rounds: int, racers: int) -> Counter:
    """``rounds`` races of ``racers`` threads for one output each: on even rounds every racer takes over the
    same stale lock (``write`` puts it there), on odd ones they create it. How many rounds had how many
    holders."""
    holders = Counter()
    for r in range(rounds):
        out = output(r)
        if r % 2 == 0:
            write(join_uri(out, "runs", "LOCK"), json.dumps(DEAD).encode())
        wins = _race(lambda rid, out=out: RunLock(out, rid, storage), racers)
        holders[len(wins)] += 1
        assert len(wins) != 1 or RunLock(out, "probe", storage).holder()["run_id"] == wins[0].run_id
        for lock in wins:
            lock.release()
    return holders


def _write_local(uri: str, data: bytes) -> None:
    from pipeline.storage import write_file_atomic

    write_file_atomic(uri, data)


def test_local_lock_excludes_release_and_stale_takeover(tmp_path):
    out = str(tmp_path / "out")
    first = RunLock(out, "first", LOCAL)
    first.acquire()
    with pytest.raises(LockedError, match="Another run \\(first"):
        RunLock(out, "second", LOCAL).acquire()
    RunLock(out, "second", LOCAL).release()  # not the holder: the lock stays
    RunLock(out, "first", LOCAL).release()  # nor another run of the same name
    assert first.holder()["run_id"] == "first" and first.still_held()
    first.release()
    assert not first.still_held()
    with RunLock(out, "third", LOCAL) as third:
        assert third.holder()["run_id"] == "third"
    # A lock left by a killed run elsewhere is taken over once it has not been renewed for stale_after.
    lock_file = tmp_path / "out" / "runs" / "LOCK"
    lock_file.write_text(json.dumps({**DEAD, "heartbeat": time.time() - 7200}))
    fourth = RunLock(out, "fourth", LOCAL, stale_after=3600)
    fourth.acquire()
    assert RunLock(out, "x", LOCAL).holder()["run_id"] == "fourth"
    fourth.release()
    lock_file.write_text("not a lock")  # bytes no run wrote: nobody renews them
    with RunLock(out, "fifth", LOCAL) as fifth:
        assert fifth.still_held()


def test_lock_of_a_killed_process_on_this_machine_is_taken_over_at_once(tmp_path):
    out = str(tmp_path / "out")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = json.loads(RunLock(out, "killed", LOCAL)._record())
        record["pid"] = child.pid
        (tmp_path / "out" / "runs").mkdir(parents=True)
        (tmp_path / "out" / "runs" / "LOCK").write_text(json.dumps(record))
        with pytest.raises(LockedError, match="killed"):
            RunLock(out, "restart", LOCAL).acquire()  # its process is alive: the lock holds
    finally:
        child.kill()
        child.wait()
    with RunLock(out, "restart", LOCAL) as restart:  # SIGKILLed: taken over without waiting
        assert restart.holder()["run_id"] == "restart"


@pytest.mark.parametrize("pid_ns", ["pid:[1]", None], ids=["other-namespace", "unrecorded"])
def test_a_holder_in_another_pid_namespace_is_judged_by_its_heartbeat_only(tmp_path, pid_ns):
    """A container sharing this host's name (and boot) but not its pids: its pid says nothing here, so its
    lock holds until it goes silent, even where no process of this machine has that pid."""
    out = str(tmp_path / "out")
    record = json.loads(RunLock(out, "container", LOCAL)._record())
    assert record["pid_ns"].startswith("pid:[")  # what this process records
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record.update(pid=int(dead_pid.stdout), pid_ns=pid_ns)
    (tmp_path / "out" / "runs").mkdir(parents=True)
    lock_file = tmp_path / "out" / "runs" / "LOCK"
    lock_file.write_text(json.dumps(record))
    with pytest.raises(LockedError, match="container"):
        RunLock(out, "here", LOCAL).acquire()
    lock_file.write_text(json.dumps({**record, "heartbeat": time.time() - 7200}))
    with RunLock(out, "here", LOCAL, stale_after=3600) as here:
        assert here.holder()["run_id"] == "here"


def test_heartbeat_keeps_a_long_run_locked(tmp_path):
    out = str(tmp_path / "out")
    with RunLock(out, "long", LOCAL, heartbeat_every=0.05) as long_run:
        first = long_run.holder()["heartbeat"]
        deadline = time.monotonic() + 30
        while long_run.holder()["heartbeat"] == first and time.monotonic() < deadline:
            time.sleep(0.01)
        assert long_run.holder()["heartbeat"] > first and long_run.still_held()
        # Another machine's run, with a staleness bound far longer than a beat, sees it alive.
        with pytest.raises(LockedError):
            RunLock(out, "other", LOCAL, stale_after=5).acquire()
    assert RunLock(out, "x", LOCAL).holder() is None
    assert RunLock(out, "y", LOCAL, stale_after=30).heartbeat_every == 7.5  # a quarter of a short bound


def test_local_race_has_one_holder_every_round(tmp_path):
    holders = _race_rounds(lambda r: str(tmp_path / f"out{r}"), LOCAL, _write_local, rounds=300, racers=6)
    assert holders == {1: 300}


def _process_racer(root: str, index: int, rounds: int, barrier, won) -> None:
    """One racing process: ``rounds`` acquisitions in step with the others (a child of the race below)."""
    for r in range(rounds):
        lock = RunLock(f"{root}/out{r}", f"process{index}", LOCAL)
        barrier.wait()
        try:
            lock.acquire()
            won[r * barrier.parties + index] = 1
        except LockedError:
            pass
        barrier.wait()  # every racer has tried before the winner lets go
        lock.release()


def test_local_race_between_processes_has_one_holder_every_round(tmp_path):
    racers, rounds = 4, 150
    for r in range(0, rounds, 2):  # a stale lock to take over on every other round
        _write_local(str(tmp_path / f"out{r}" / "runs" / "LOCK"), json.dumps(DEAD).encode())
    context = multiprocessing.get_context("spawn")
    barrier, won = context.Barrier(racers), context.Array("b", racers * rounds)
    args = [(str(tmp_path), i, rounds, barrier, won) for i in range(racers)]
    processes = [context.Process(target=_process_racer, args=a) for a in args]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * racers
    holders = Counter(sum(won[r * racers : (r + 1) * racers]) for r in range(rounds))
    assert holders == {1: rounds}


@pytest.mark.slow
def test_s3_race_has_one_holder_every_round(s3fs_client, s3_endpoint):
    """SeaweedFS answers racing conditional writes in whole seconds (it retries its own lock), so fewer rounds
    than locally."""
    bucket = f"lock-{uuid.uuid4().hex[:8]}"
    s3fs_client.mkdir(bucket)
    s3fs_client.pipe(f"{bucket}/restored/images/existing.png", b"x")  # an output prefix in use, as in real runs
    opts = StorageOptions(endpoint_url=s3_endpoint)
    holders = _race_rounds(
        lambda r: f"s3://{bucket}/restored{r}", opts, lambda uri, data: s3fs_client.pipe(uri, data), rounds=16, racers=4
    )
    assert holders == {1: 16}
    out = f"s3://{bucket}/restored"
    (winner,) = _race(lambda rid: RunLock(out, rid, opts), 4)
    with pytest.raises(LockedError):
        RunLock(out, "late", opts).acquire()
    winner.release()
    assert not s3fs_client.exists(f"{bucket}/restored/runs/LOCK")
    with RunLock(out, "after", opts) as after:
        assert after.still_held()


def test_a_run_whose_lock_is_taken_over_stops_and_leaves_the_new_holders_lock(tmp_path):
    """A holder that went silent too long (a paused VM) and was taken over: its next heartbeat finds another
    holder, raises the run's stop as SIGTERM does, and its release leaves the new holder's lock alone."""
    out = str(tmp_path / "out")
    stopped = threading.Event()
    taker = RunLock(out, "next", LOCAL, stale_after=0, heartbeat_every=60)  # any lock is stale to it
    with GracefulStop(30) as stop:
        stop.on_stop(stopped.set)
        with RunLock(out, "paused", LOCAL, heartbeat_every=0.05).on_loss(stop.request) as paused:
            taker.acquire()
            assert stopped.wait(30)
            assert stop.requested and stop.signal_name == "SIGTERM" and stop.exit_code == 143
            assert not paused.still_held()  # so compaction deletes nothing
    assert RunLock(out, "x", LOCAL).holder()["run_id"] == "next"  # the paused run's release left it alone
    taker.release()


@pytest.mark.slow
def test_a_real_run_that_loses_its_lock_stops_and_keeps_what_it_wrote(ray_local, tmp_path, tiny_weights, monkeypatch):
    """A run whose lock is taken over while its model works (held after two images by a fail point) stops as on
    SIGTERM: the images written and their stats rows stay, nothing more is restored, and the new holder's lock
    is left in place."""
    from pipeline.run.job import run_restore
    from pipeline.spec import parse_spec
    from tests.jobs import save_photos

    save_photos(tmp_path / "in", 6)
    out = tmp_path / "out"
    path, widths = tiny_weights
    spec = parse_spec(
        {
            "model": {"weights": path, **widths},
            "input": {"uri": str(tmp_path / "in")},
            "output": {"uri": str(out), "report": False, "lock_stale_minutes": 0.05},  # a heartbeat every 0.75 s
            "resources": {"cpus_per_actor": 1, "batch_size": 1},
        }
    )
    monkeypatch.setenv("DGUNET_FAILPOINTS", "model.hold=2")
    taker = RunLock(str(out), "taker", LOCAL, stale_after=0, heartbeat_every=60)

    def take_over_once_two_images_are_written():
        deadline = time.monotonic() + 300
        while len(list((out / "images").glob("*.png"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        taker.acquire()

    thread = threading.Thread(target=take_over_once_two_images_are_written, daemon=True)
    thread.start()
    summary = run_restore(spec, run_id="loser")
    thread.join()
    try:
        assert summary.interrupted == "SIGTERM" and summary.compaction is None
        assert 2 <= summary.ok < 6 and summary.ok == len(list((out / "images").glob("*.png")))
        assert json.loads((out / "runs" / "loser.json").read_text())["ok"] == summary.ok
        assert RunLock(str(out), "x", LOCAL).holder()["run_id"] == "taker"
    finally:
        taker.release()
