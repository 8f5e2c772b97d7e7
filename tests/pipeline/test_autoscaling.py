"""A job scales a GPU node group up from zero on Ray's own autoscaler, then the idle node is released.

The head has no CPUs for tasks and the only worker type declares one GPU with ``min_workers: 0``: nothing
of the job can run until the autoscaler starts a node. The nodes are local processes (Ray's fake
multi-node provider, :mod:`tests.fake_nodes`); this machine has no GPU, so the model actor that asked for
one falls back to the CPU, as it does on any node where CUDA is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from tests.jobs import save_photos, write_spec
from tests.servers import AutoscalingRayHead
from tests.sockets import watching

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

GPU_NODE = "gpu_worker"
ADDED = f"Adding 1 node(s) of type {GPU_NODE}."
REMOVED = f"Removing 1 nodes of type {GPU_NODE} (idle)."


@pytest.fixture(scope="module")
def autoscaling_head():
    head = AutoscalingRayHead(
        tempfile.mkdtemp(prefix="ah", dir="/tmp"),
        # Two CPUs on the GPU node: one for the model actor, one for reading, decoding and writing.
        {GPU_NODE: {"resources": {"CPU": 2, "GPU": 1, "memory": 4 * 2**30}, "min_workers": 0, "max_workers": 1}},
        idle_timeout_s=10,
    )
    yield head
    head.stop()


def test_job_scales_a_gpu_group_up_from_zero_and_the_idle_node_is_released(autoscaling_head, tmp_path, tiny_weights):
    head = autoscaling_head
    assert ADDED not in head.autoscaler_log()  # min_workers 0: no node before the job asks
    names = save_photos(tmp_path / "in")
    out = {"uri": str(tmp_path / "out"), "report": False}
    gpu = {"gpus_per_actor": 1, "cpus_per_actor": 1, "memory_per_actor_gb": 0.5, "batch_size": 2}
    spec = write_spec(tmp_path / "spec.yaml", tiny_weights, input_uri=str(tmp_path / "in"), output=out, resources=gpu)
    assert head.address.startswith("127.0.0.1:")
    env = {**os.environ, "RAY_ADDRESS": head.address}  # with the session's RAY_AUTH_TOKEN_PATH
    with watching(head.proc.pid, os.getpid()) as listeners:  # the head and its nodes; the job's driver
        proc = subprocess.run(
            [sys.executable, "jobs/restore_bucket.py", "--spec", str(spec), "--run-id", "scaled"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=480,
        )
    log = head.autoscaler_log()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + log[-3000:]
    assert not [str(x) for x in listeners if not x.loopback], sorted(map(str, listeners))
    assert len({x.pid for x in listeners if x.process == "raylet"}) >= 2  # the head's and the added node's
    assert "ok 3   failed 0" in proc.stdout
    assert log.count(ADDED) == 1, log[-3000:]  # the job's GPU actor brought exactly one node up
    rows = pads.dataset(str(tmp_path / "out" / "stats"), format="parquet").to_table().to_pylist()
    assert sorted(r["input_uri"].rsplit("/", 1)[-1] for r in rows) == names
    assert {r["status"] for r in rows} == {"ok"}
    assert sorted(p.name for p in (tmp_path / "out" / "images").rglob("*.png")) == names
    # The job is over: the node idles past idle_timeout and the autoscaler gives it back.
    assert head.wait_for(REMOVED, timeout=90), head.autoscaler_log()[-3000:]
