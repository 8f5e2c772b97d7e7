"""`ray job submit` against a Ray head on 127.0.0.1, as the README says to run it on a cluster."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from tests.jobs import save_photos, write_spec
from tests.servers import LOCAL_RAY_ENV, RayHead

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
    env = {**os.environ, **LOCAL_RAY_ENV}
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        ray_head.dashboard,
        "--working-dir",
        str(REPO),
        "--runtime-env-json",
        json.dumps({"env_vars": LOCAL_RAY_ENV}),
        "--",
        "python",
        "jobs/restore_bucket.py",
        "--spec",
        str(spec),
        "--run-id",
        "submitted",
    ]
    proc = ray_head.submit(cmd, cwd=REPO, env=env, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
