"""`ray job submit` against a Ray head on 127.0.0.1 with token auth, as the README says to run it on a cluster:
the CLI and the job take the token from ``RAY_AUTH_TOKEN_PATH``, and nothing of the head listens beyond
loopback while the job runs."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from tests.jobs import save_photos, write_spec
from tests.servers import RayHead
from tests.sockets import watching

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ray_head():
    env_path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # `ray` and `python` of this environment
    old = os.environ.get("PATH")
    os.environ["PATH"] = env_path
    head = RayHead(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    yield head
    head.stop()
    os.environ["PATH"] = old or ""


def test_ray_job_submit_restores_images(ray_head, tmp_path, tiny_weights):
    save_photos(tmp_path / "in" / "batch 1")
    out = {"uri": str(tmp_path / "out")}
    resources = {"cpus_per_actor": 1, "batch_size": 2}
    spec = write_spec(
        tmp_path / "spec.yaml", tiny_weights, input_uri=str(tmp_path / "in"), output=out, resources=resources
    )
    env = dict(os.environ)  # the session's RAY_AUTH_TOKEN_PATH: the token never goes on a command line
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        ray_head.dashboard,
        "--working-dir",
        str(REPO),
        "--",
        "python",
        "jobs/restore_bucket.py",
        "--spec",
        str(spec),
        "--run-id",
        "submitted",
    ]
    with watching(ray_head.proc.pid) as listeners:
        proc = ray_head.submit(cmd, cwd=REPO, env=env, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The head, its agents, the job's driver and its workers: all on loopback, the GCS and job API among them.
    assert not [str(x) for x in listeners if not x.loopback], sorted(map(str, listeners))
    ports = {x.port for x in listeners}
    assert {int(ray_head.address.rsplit(":", 1)[1]), int(ray_head.dashboard.rsplit(":", 1)[1])} <= ports
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    assert token not in " ".join(cmd) and token not in proc.stdout + proc.stderr
    assert "ok 3   failed 0" in proc.stdout
    outputs = sorted(p.relative_to(tmp_path / "out" / "images") for p in (tmp_path / "out" / "images").rglob("*.png"))
    assert [str(p) for p in outputs] == [f"batch 1/img{i}.png" for i in range(3)]
    rows = pads.dataset(str(tmp_path / "out" / "stats"), format="parquet").to_table().to_pylist()
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"} and {r["run_id"] for r in rows} == {"submitted"}
    # On a cluster the summary links the Ray dashboard, and it carries the run's metrics and report.
    summary = json.loads((tmp_path / "out" / "runs" / "submitted.json").read_text())
    assert summary["dashboard_url"] == ray_head.dashboard
    assert "Ray dashboard  " + ray_head.dashboard in proc.stdout
    assert summary["metrics"]["model_seconds_total"] > 0 and summary["execution_stats"]
    assert summary["report_uri"] == str(tmp_path / "out" / "reports" / "submitted.html")
