"""The run's tally: the summary's counts come from the stats rows, whether or not a report is drawn."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from PIL import Image

from pipeline.rows import STATS_SCHEMA
from pipeline.run.job import run_restore
from pipeline.run.tally import RunTally
from pipeline.spec import parse_spec
from tests.images import bad_files, photo


def _rows(rows: list[dict]) -> pa.Table:
    columns = {name: [r.get(name) for r in rows] for name in STATS_SCHEMA.names}
    return pa.table(columns, schema=STATS_SCHEMA)


def test_tally_counts_ok_failed_passed_and_megapixels():
    tally = RunTally(failures=1)
    ok = {"status": "ok", "action": "restored", "width": 1000, "height": 500, "seconds": 0.5, "noise_before": 20.0}
    tally.add(_rows([ok, {**ok, "action": "passed", "seconds": 0.0, "noise_before": 2.0}]))
    failed = [{"input_uri": f"s3://b/{i}.png", "status": "failed", "error": f"decode: {i} bad"} for i in (1, 2)]
    tally.add(_rows(failed))
    assert (tally.ok, tally.failed, tally.passed, tally.megapixels) == (2, 2, 1, 1.0)
    assert tally.failures == [{"input_uri": "s3://b/1.png", "error": "decode: 1 bad"}]  # the first, all counted
    metrics = tally.metrics()
    assert metrics["model_seconds_per_image"] == 0.25 and metrics["mean_noise_before"] == 11.0
    assert metrics["failures_by_kind"] == {"decode: N bad": 2}


@pytest.mark.slow
def test_a_run_without_report_still_counts(ray_local, tmp_path, tiny_weights):
    (tmp_path / "in").mkdir()
    for i in range(2):
        Image.fromarray(photo(40, 50, seed=i)).save(tmp_path / "in" / f"photo{i}.png")
    (tmp_path / "in" / "bad.png").write_bytes(bad_files()["bad/truncated.png"])
    path, widths = tiny_weights
    spec = parse_spec(
        {
            "model": {"weights": path, **widths},
            "input": {"uri": str(tmp_path / "in")},
            "output": {"uri": str(tmp_path / "out"), "report": False},
            "resources": {"cpus_per_actor": 1},
            "allow_failed_fraction": 1.0,
        }
    )
    summary = run_restore(spec, run_id="unreported")
    assert (summary.ok, summary.failed) == (2, 1)
    assert summary.megapixels == pytest.approx(2 * 40 * 50 / 1e6)
    assert len(summary.failures) == 1 and summary.failures[0]["input_uri"].endswith("/in/bad.png")
    assert summary.metrics["model_seconds_total"] > 0 and summary.metrics["failures_by_kind"]
    assert summary.report_uri is None and not (tmp_path / "out" / "reports").exists()
    written = json.loads((tmp_path / "out" / "runs" / "unreported.json").read_text())
    assert (written["ok"], written["failed"], written["megapixels"]) == (2, 1, summary.megapixels)
