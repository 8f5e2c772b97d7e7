"""A run's metrics (pipeline/run/metrics.py): what stats rows count, the Grafana dashboard's queries, and a real
run's counters scraped from its node's Prometheus endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from pipeline.rows import STATS_SCHEMA
from pipeline.run.metrics import count_rows, dataset_name, prometheus_names
from tests.images import bad_files, photo

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "dgunet-restore.json"
# Ray Data's own gauges that the dashboard draws for the model's operator.
RAY_DATA = {
    "ray_data_operator_queued_blocks",
    "ray_data_num_alive_actors",
    "ray_data_num_pending_actors",
    "ray_data_num_tasks_in_flight",
}


def _row(status="ok", action="restored", task=None, error="", size=(10, 20), in_bytes=100, out_bytes=50) -> dict:
    return {
        "status": status,
        "action": action if status == "ok" else None,
        "task": task,
        "error": error,
        "width": size[0],
        "height": size[1],
        "input_bytes": in_bytes,
        "output_bytes": out_bytes if status == "ok" else None,
    }


def test_stats_rows_count_by_outcome_failure_kind_and_task():
    rows = [
        _row(task="denoise"),
        _row(task="deblur", size=(100, 100)),
        _row(action="passed"),
        _row(action="adopted", in_bytes=7, out_bytes=9),
        _row(status="failed", error="decode: cannot identify image file", in_bytes=30),
        _row(status="failed", error="read: Expected at most input.max_bytes = 5 bytes", in_bytes=1000),
        _row(status="failed", error="model: the worker died on every attempt (2 with this image alone)", in_bytes=40),
        _row(status="failed", error="something else entirely", in_bytes=1),
    ]
    table = pa.Table.from_pylist([{k: r.get(k) for k in STATS_SCHEMA.names} for r in rows], schema=STATS_SCHEMA)
    counts = count_rows(table, task="auto")
    assert counts == {
        ("dgunet_images", "denoise", "restored"): 1,
        ("dgunet_images", "deblur", "restored"): 1,
        ("dgunet_images", "auto", "passed"): 1,
        ("dgunet_images", "auto", "adopted"): 1,
        ("dgunet_images", "auto", "failed"): 4,
        ("dgunet_failures", "auto", "decode"): 1,
        ("dgunet_failures", "auto", "read"): 1,
        ("dgunet_failures", "auto", "model"): 1,
        ("dgunet_failures", "auto", "other"): 1,
        ("dgunet_megapixels", "denoise"): 200 / 1e6,
        ("dgunet_megapixels", "deblur"): 10_000 / 1e6,
        ("dgunet_megapixels", "auto"): 200 / 1e6,
        # restored and passed, then the failures after their read (decode, model, other): not the read's, nor adopted
        ("dgunet_input_bytes", "denoise"): 100,
        ("dgunet_input_bytes", "deblur"): 100,
        ("dgunet_input_bytes", "auto"): 100 + 30 + 40 + 1,
        ("dgunet_output_bytes", "denoise"): 50,
        ("dgunet_output_bytes", "deblur"): 50,
        ("dgunet_output_bytes", "auto"): 50,
    }


def test_the_dashboard_draws_every_metric_a_run_exports_and_the_model_queue():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    drawn = {name for expr in exprs for name in re.findall(r"\b(ray_[a-z_]+)\{", expr)}
    assert drawn == prometheus_names() | RAY_DATA
    queue = [e for e in exprs if "ray_data_" in e]
    assert len(queue) == 4 and all(dataset_name("${RunId:regex}") + "_" in e and "RestoreModel" in e for e in queue)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "SessionName", "RunId", "Cluster"}
    assert all(p["datasource"] == "${datasource}" for p in dashboard["panels"])


def _scrape(port: int) -> list[tuple[str, dict, float]]:
    """Every sample the node's metrics agent exports now: (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def _ours(samples, run_id: str) -> dict[tuple, float]:
    """The run's own series: {(name, *its tags but run_id, sorted by key): value}."""
    found = {}
    for name, labels, value in samples:
        if name.startswith("ray_dgunet_") and labels.get("run_id") == run_id:
            tags = tuple(labels[k] for k in ("task", "outcome", "kind") if k in labels)
            found[(name, *tags)] = value
    return found


def _wait_for(port: int, expected: dict[str, dict], timeout: float = 120.0) -> list:
    """Scrape until every run's series are as ``expected`` (Ray exports every few seconds); the bound only
    catches a hang. Returns the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = _scrape(port)
        counters = {run: {k: v for k, v in _ours(samples, run).items() if k[0].endswith("_total")} for run in expected}
        if counters == expected or time.monotonic() > deadline:
            return samples
        time.sleep(1.0)


@pytest.mark.slow
def test_a_run_exports_its_counters_on_the_nodes_metrics_endpoint(ray_local, tmp_path, tiny_weights):
    from pipeline.run.job import run_restore
    from pipeline.spec import parse_spec

    node = ray_local._private.worker._global_node
    assert node.node_ip_address == "127.0.0.1"
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):  # noisy: restored
        Image.fromarray(photo(24, 32, seed=i)).save(inputs / f"img{i}.png")
    Image.fromarray(photo(24, 32, seed=5, noise=0.0)).save(inputs / "clean.png")  # below the gate: passed
    (inputs / "bad.png").write_bytes(bad_files()["bad/truncated.png"])  # fails to decode
    Image.fromarray(photo(256, 256, seed=9)).save(inputs / "big.png")  # over input.max_bytes: fails unread
    assert (inputs / "big.png").stat().st_size > 100_000 > max(p.stat().st_size for p in inputs.glob("[!b]*.png"))
    path, widths = tiny_weights
    spec = parse_spec(
        {
            "model": {"arch": "dgunet", "weights": path, **widths},
            "input": {"uri": str(inputs), "max_bytes": 100_000},
            "output": {"uri": str(tmp_path / "out")},
            "resources": {"cpus_per_actor": 1, "batch_size": 4},
            "allow_failed_fraction": 1.0,
        }
    )
    first = run_restore(spec, run_id="metrics-a")
    assert (first.ok, first.failed, first.metrics["passed"]) == (4, 2, 1)
    written = sum(p.stat().st_size for p in (tmp_path / "out" / "images").iterdir())
    # The outputs, unrecorded: the next run adopts them (their provenance names this model) and fails the others again.
    shutil.rmtree(tmp_path / "out" / "stats")
    second = run_restore(spec, run_id="metrics-b")
    assert (second.adopted, second.ok, second.failed) == (4, 0, 2)

    size = {p.name: p.stat().st_size for p in inputs.iterdir()}
    failures = {
        ("ray_dgunet_images_total", "denoise", "failed"): 2,
        ("ray_dgunet_failures_total", "denoise", "decode"): 1,
        ("ray_dgunet_failures_total", "denoise", "read"): 1,
    }
    expected = {
        "metrics-a": {
            ("ray_dgunet_images_total", "denoise", "restored"): 3,
            ("ray_dgunet_images_total", "denoise", "passed"): 1,
            **failures,
            ("ray_dgunet_megapixels_total", "denoise"): pytest.approx(4 * 24 * 32 / 1e6),
            ("ray_dgunet_input_bytes_total", "denoise"): sum(size.values()) - size["big.png"],
            ("ray_dgunet_output_bytes_total", "denoise"): written,
        },
        "metrics-b": {
            ("ray_dgunet_images_total", "denoise", "adopted"): 4,
            **failures,
            ("ray_dgunet_input_bytes_total", "denoise"): size["bad.png"],  # decoded, and failed
        },
    }
    samples = _wait_for(node.metrics_export_port, expected)
    for run in expected:
        assert {k: v for k, v in _ours(samples, run).items() if k[0].endswith("_total")} == expected[run], run
    rate = _ours(samples, "metrics-a")[("ray_dgunet_megapixels_per_second",)]
    # From the end of planning to the run's last row: at least the summary's mean, which counts to the run's end.
    assert first.megapixels_per_second <= rate < float("inf")
    # The model's queue: Ray Data's gauges of the model's operator, in the pipeline named after the run.
    model = {
        name
        for name, labels, _ in samples
        if labels.get("dataset", "").startswith(dataset_name("metrics-a") + "_")
        and labels.get("operator", "").startswith("MapBatches(RestoreModel)")
    }
    assert model >= RAY_DATA, sorted(model)
