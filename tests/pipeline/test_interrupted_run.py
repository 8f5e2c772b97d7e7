"""A driver killed mid-run (SIGKILL), or stopped (SIGTERM, SIGINT), and started again: every image restored
exactly once, no secrets (S3's or Ray's token) leaked; a stopped run keeps the stats of what it wrote and
releases its lock."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from pipeline.run.shutdown import GracefulStop
from pipeline.stages.metadata import read_provenance
from tests.images import photo
from tests.servers import S3_ENV

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # bounds a hang only: two runs, each held

ROOT = Path(__file__).resolve().parents[2]
N = 30
HOLD = "fail point model.hold"


def _address(ray) -> str:
    """The session Ray's GCS address, which a second driver joins with the session's token (from
    ``RAY_AUTH_TOKEN_PATH``, never on its command line): on loopback."""
    address = ray.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:"), address
    return address


def _start(spec: Path, address: str, run_id: str, log: Path, *, failpoints: str = "") -> subprocess.Popen:
    """A run of ``spec``; ``failpoints``: its ``DGUNET_FAILPOINTS`` (see :mod:`pipeline.faults`)."""
    cmd = [sys.executable, "jobs/restore_bucket.py", "--spec", str(spec), "--address", address, "--run-id", run_id]
    env = {**os.environ, "DGUNET_FAILPOINTS": failpoints}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 300.0) -> int:
    """The run's exit code; a run still going after ``timeout`` is killed and fails the test with its log."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the run did not end within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _wait_for(predicate, proc, log: Path, timeout=480.0):
    """Poll ``predicate`` until it holds. The runs are held at a fail point until the test acts, so the
    state waited for is reached on any machine; ``timeout`` only bounds a hang (a run's start on a loaded
    machine takes minutes), failing with the log. A run that fails the wait is killed, so that its held
    model actor does not keep the session Ray's CPUs from the tests after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}):\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    pytest.fail(f"the run did not reach the state waited for within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _archive(fs, name: str, n: int, s3_endpoint: str, tiny_weights, spec: Path, **output) -> str:
    """A bucket of ``n`` photos under ``in/`` and a spec restoring them to ``out/`` with one model actor;
    the bucket's name."""
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(photo(96, 128, seed=i)).save(buf, format="PNG")
        fs.pipe(f"{bucket}/in/{i // 50}/img{i:03d}.png", buf.getvalue())
    path, widths = tiny_weights
    spec.write_text(
        yaml.safe_dump(
            {
                "model": {"arch": "dgunet", "weights": path, **widths},
                "input": {"uri": f"s3://{bucket}/in"},
                "output": {"uri": f"s3://{bucket}/out", "stats_part_rows": 3, **output},
                "storage": {"endpoint_url": s3_endpoint},
                "resources": {"cpus_per_actor": 1, "batch_size": 2},
                "inference": {"tile": 64, "overlap": 16, "max_pixels": 4096},
            }
        )
    )
    return bucket


def _stats_rows(fs, bucket: str) -> list[dict]:
    fs.invalidate_cache()
    return [r for p in fs.find(f"{bucket}/out/stats") for r in pq.read_table(fs.open(p, "rb")).to_pylist()]


def test_driver_killed_midway_then_restarted_restores_each_image_once(
    ray_local, s3fs_client, s3_endpoint, tiny_weights, tmp_path
):
    fs, spec = s3fs_client, tmp_path / "spec.yaml"
    bucket = _archive(fs, "kill", N, s3_endpoint, tiny_weights, spec)
    address = _address(ray_local)

    def listing(prefix):
        fs.invalidate_cache()
        return [p for p in fs.find(f"{bucket}/out/{prefix}")]

    # First run: held after 10 images (fail point model.hold), SIGKILLed once their stats parts are out.
    log = tmp_path / "first.log"
    first = _start(spec, address, "first", log, failpoints="model.hold=10")
    _wait_for(lambda: HOLD in log.read_text() and len(listing("images")) == 10 and listing("stats"), first, log)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(listing("images")) == 10
    assert fs.exists(f"{bucket}/out/runs/LOCK")  # a killed run leaves its lock behind

    # Second run, as a scheduler would start it: takes over the dead run's lock and finishes the job.
    second = _start(spec, address, "second", tmp_path / "second.log")
    assert _finish(second, tmp_path / "second.log") == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert "ok" in log and not fs.exists(f"{bucket}/out/runs/LOCK")

    parts = listing("stats")
    rows = [r for p in parts for r in pq.read_table(fs.open(p, "rb")).to_pylist()]
    ok = [r for r in rows if r["status"] == "ok"]
    inputs = {f"s3://{bucket}/in/{i // 50}/img{i:03d}.png" for i in range(N)}
    assert sorted(r["input_uri"] for r in ok) == sorted(inputs)  # exactly once: no duplicates, none missing
    assert not [r for r in rows if r["status"] != "ok"]
    first_ok = [r for r in ok if r["run_id"] == "first"]
    assert 0 < len(first_ok) < N  # the killed run's finished parts count; the second skipped those
    # Every output exists, is a whole PNG of the right size, and nothing else is in images/.
    outputs = sorted(r["output_uri"] for r in ok)
    assert sorted(f"s3://{p}" for p in listing("images")) == outputs
    for uri in outputs:
        with Image.open(io.BytesIO(fs.cat(uri))) as img:
            img.load()
            assert img.size == (128, 96)

    # Credentials appear nowhere: logs of both drivers, Ray's session logs, stats, summaries.
    # The same for the Ray token that the second drivers joined with.
    secrets = [S3_ENV["AWS_SECRET_ACCESS_KEY"].encode(), Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_bytes().strip()]
    logs = (tmp_path / "first.log").read_bytes() + (tmp_path / "second.log").read_bytes()
    session = Path(ray_local._private.worker._global_node.get_session_dir_path())
    for secret in secrets:
        assert secret not in logs
        for p in listing(""):
            assert secret not in fs.cat(p), p
        for f in session.rglob("*"):
            if f.is_file() and f.stat().st_size < 50e6:
                assert secret not in f.read_bytes(), f


GRACE = 20


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_driver_stopped_by_a_signal_keeps_what_it_did(ray_local, s3fs_client, s3_endpoint, tiny_weights, tmp_path, sig):
    """SIGTERM (Kubernetes) or SIGINT (Ctrl-C) mid-run: within the grace period the driver writes the stats
    of every image it wrote and a summary marked interrupted, releases its lock and exits 128 + signal;
    the next run restores only what is missing."""
    n = 16
    fs, spec = s3fs_client, tmp_path / "spec.yaml"
    bucket = _archive(fs, "stop", n, s3_endpoint, tiny_weights, spec, shutdown_grace_seconds=GRACE)
    address = _address(ray_local)

    def images():
        fs.invalidate_cache()
        return sorted(f"s3://{p}" for p in fs.find(f"{bucket}/out/images"))

    # The model actor restores 4 images, then holds its next batch until the run is stopped (fail point
    # model.hold): the signal comes mid-run, with the same images done, on any machine.
    log = tmp_path / "first.log"
    first = _start(spec, address, "first", log, failpoints="model.hold=4")
    _wait_for(lambda: HOLD in log.read_text() and len(images()) == 4, first, log)
    first.send_signal(sig)
    t0 = time.monotonic()
    rc = first.wait(timeout=GRACE + 60)
    stopped_in = time.monotonic() - t0
    log = (tmp_path / "first.log").read_text()
    assert rc == 128 + sig, log[-3000:]
    assert stopped_in < GRACE, f"stopping took {stopped_in:.1f} s"
    assert f"INTERRUPTED by {sig.name}" in log and "Traceback" not in log, log[-3000:]

    written = images()
    assert len(written) == 4, "the held batch and those after it were not left for the next run"
    rows = _stats_rows(fs, bucket)
    assert {r["status"] for r in rows} == {"ok"} and {r["run_id"] for r in rows} == {"first"}
    assert sorted(r["output_uri"] for r in rows) == written  # a row for every image written, and no other
    summary = json.loads(fs.cat(f"{bucket}/out/runs/first.json"))
    assert summary["interrupted"] == sig.name and summary["ok"] == len(rows)
    assert not fs.exists(f"{bucket}/out/runs/LOCK")

    second = _start(spec, address, "second", tmp_path / "second.log")
    assert _finish(second, tmp_path / "second.log") == 0, (tmp_path / "second.log").read_text()[-3000:]
    summary = json.loads(fs.cat(f"{bucket}/out/runs/second.json"))
    assert (summary["skipped"], summary["ok"], summary["interrupted"]) == (len(rows), n - len(rows), None)
    done = [r for r in _stats_rows(fs, bucket) if r["status"] == "ok"]
    inputs = {f"s3://{bucket}/in/{i // 50}/img{i:03d}.png" for i in range(n)}
    assert sorted(r["input_uri"] for r in done) == sorted(inputs)  # each exactly once over both runs
    assert len(images()) == n


def test_a_stop_that_cannot_drain_ends_within_the_grace_period(
    ray_local, s3fs_client, s3_endpoint, tiny_weights, tmp_path
):
    """A write that hangs (fail point write.stall) keeps the pipeline from draining: the driver gives up
    waiting at its drain deadline (the grace less its reserve), still writes the stats of what was written
    and its summary, releases the lock, and exits 143 within the grace period, on its own path (not the
    grace period's last-resort exit). The reserve (10 s) is what the test's margin is: the stats, summary
    and lock take about 1.5 s of it here."""
    n, grace = 30, 30
    reserve = GracefulStop(grace).reserve
    fs, spec = s3fs_client, tmp_path / "spec.yaml"
    bucket = _archive(fs, "stall", n, s3_endpoint, tiny_weights, spec, shutdown_grace_seconds=grace)
    address = _address(ray_local)
    log = tmp_path / "first.log"
    first = _start(spec, address, "first", log, failpoints="write.stall=img004")
    _wait_for(lambda: b"fail point write.stall" in log.read_bytes(), first, log)
    first.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    rc = first.wait(timeout=grace + 60)
    stopped_in = time.monotonic() - t0
    assert rc == 143, log.read_text()[-3000:]
    # It waited for the drain until its deadline (never less: the stalled write never drains), then ended
    # by itself before the grace period's end.
    assert grace - reserve <= stopped_in < grace, f"stopping took {stopped_in:.1f} s"
    assert "did not finish within" not in log.read_text(), log.read_text()[-3000:]

    rows = _stats_rows(fs, bucket)
    fs.invalidate_cache()
    time.sleep(2)  # the hung write dies with its driver's job: it never writes
    written = sorted(f"s3://{p}" for p in fs.find(f"{bucket}/out/images"))
    recorded = {r["output_uri"] for r in rows}
    assert recorded <= set(written) and "img004" not in " ".join(written), log.read_text()[-3000:]
    # The images of the stalled write batch written before img004 may have no row (the flag takes a batch's
    # rows when the batch ends); each says in its provenance what it was made from: the next run adopts it.
    for uri in set(written) - recorded:
        record = read_provenance(fs.cat(uri))
        assert record["run_id"] == "first" and record["input_uri"].startswith(f"s3://{bucket}/in/"), uri
    assert json.loads(fs.cat(f"{bucket}/out/runs/first.json"))["interrupted"] == "SIGTERM"
    assert not fs.exists(f"{bucket}/out/runs/LOCK")
