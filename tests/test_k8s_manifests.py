"""KubeRay manifests: they parse, carry the fields KubeRay requires, and run the real entrypoint."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _job_spec(doc: dict) -> dict:
    return doc["spec"]["jobTemplate"] if doc["kind"] == "RayCronJob" else doc["spec"]


@pytest.mark.parametrize("name", ["rayjob.yaml", "raycronjob.yaml"])
def test_kuberay_manifest(name):
    doc = yaml.safe_load((ROOT / "k8s" / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in ("RayJob", "RayCronJob")
    assert doc["metadata"]["name"]
    if doc["kind"] == "RayCronJob":
        assert len(doc["spec"]["schedule"].split()) == 5
    job = _job_spec(doc)
    cluster = job["rayClusterSpec"]
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and group["minReplicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
    # The entrypoint is the real job, with flags it accepts and a spec that exists.
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["python", "jobs/restore_bucket.py"]
    from jobs.restore_bucket import parse_args

    args = parse_args(argv[2:])
    assert args.spec.exists() if args.spec.is_absolute() else (ROOT / args.spec).exists()
    assert "secret" not in (ROOT / "k8s" / name).read_text().lower()
