"""The HTML run report: written by a real run, rendered by a real headless browser, small at 100k images."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline.rows import STATS_SCHEMA
from pipeline.run.job import run_restore
from pipeline.run.report import ReportCollector, ranking_measure
from pipeline.run.summary import RunSummary
from pipeline.run.tally import RunTally
from pipeline.spec import parse_spec
from tests.images import bad_files, photo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    return CHROMIUM


def _render(browser: str, page: Path, tmp_path: Path) -> tuple[dict[str, str], np.ndarray]:
    """Load ``page`` in headless chromium: the DOM after its scripts ran, and a screenshot."""
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--user-data-dir=" + str(tmp_path / "profile"),
    ]
    dom = subprocess.run(
        [*args, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()], capture_output=True, timeout=120
    ).stdout.decode()
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*args, "--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120
    )
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', dom.split(">", 2)[1]))  # on <html>
    return {**attrs, "dom": dom}, np.asarray(Image.open(shot).convert("RGB"))


@pytest.mark.slow
def test_a_run_writes_a_report_that_renders_in_a_browser(ray_local, tmp_path, tiny_weights, browser):
    (tmp_path / "in").mkdir()
    for i in range(10):
        Image.fromarray(photo(64 + 8 * i, 80, seed=i, noise=0.1)).save(tmp_path / "in" / f"photo{i}.png")
    for name, data in bad_files().items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(data)
    path, widths = tiny_weights
    spec = parse_spec(
        {
            "model": {"arch": "dgunet", "weights": path, **widths},
            "input": {"uri": str(tmp_path / "in")},
            "output": {"uri": str(tmp_path / "out"), "report_samples": 6},
            "resources": {"cpus_per_actor": 1},
            "inference": {"tile": 64, "overlap": 16, "max_pixels": 4096},
            "allow_failed_fraction": 1.0,
        }
    )
    summary = run_restore(spec, run_id="reported")
    page = tmp_path / "out" / "reports" / "reported.html"
    assert summary.report_uri == str(page) and page.exists()
    assert summary.metrics["model_seconds_total"] > 0 and summary.metrics["failures_by_kind"]
    dom, shot = _render(browser, page, tmp_path)
    # Every embedded image loaded with pixels in the browser: 6 sampled pairs and 4 worst and 4 best, two images each.
    assert dom["images-total"] == str(2 * (6 + 4 + 4)) and dom["images-loaded"] == dom["images-total"]
    for name in bad_files():
        assert os.path.basename(name) in dom["dom"]  # each failure is listed with its reason
    assert "decode" in dom["dom"] and "Throughput over time" in dom["dom"]
    assert shot.std() > 20  # the screenshot shows content, not a blank page


def _stats_batches(n: int, sources: list[tuple[str, str]], batch: int = 2000):
    """``n`` stats rows as a long run would stream them: mostly ok, 1% failed, quality stats varied."""
    rng = np.random.default_rng(0)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for lo in range(0, n, batch):
        k = min(batch, n - lo)
        idx = np.arange(lo, lo + k)
        failed = idx % 100 == 7
        cols = {name: [None] * k for name in STATS_SCHEMA.names}
        cols.update(
            run_id=["big"] * k,
            input_uri=[sources[i % len(sources)][0] if not f else f"s3://a/bad/{i}.jpg" for i, f in zip(idx, failed)],
            output_uri=[sources[i % len(sources)][1] if not f else None for i, f in zip(idx, failed)],
            status=["failed" if f else "ok" for f in failed],
            error=[f"decode: truncated file ({i % 3} bytes short)" if f else None for i, f in zip(idx, failed)],
            width=[64] * k,
            height=[64] * k,
            seconds=rng.uniform(0.1, 0.3, k).tolist(),
            noise_before=rng.uniform(5, 30, k).tolist(),
            noise_after=rng.uniform(0.5, 3, k).tolist(),
            sharpness_before=(10 ** rng.uniform(-3, -1, k)).tolist(),
            sharpness_after=(10 ** rng.uniform(-4, -2, k)).tolist(),
            finished_at=[start + timedelta(seconds=float(i) / 40) for i in idx],
        )
        yield pa.table(cols, schema=STATS_SCHEMA)


def _big_report(n: int, sources) -> tuple[str, float]:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    collector, tally = ReportCollector(start=start, rank=ranking_measure("denoise", paired=False)), RunTally()
    t0 = time.perf_counter()
    for table in _stats_batches(n, sources):
        collector.add(table)
        tally.add(table)
    summary = RunSummary(run_id="big", model="dgunet/denoise@sha256:0", input_uri="s3://a", output_uri="s3://b")
    summary.ok, summary.failed, summary.wall_seconds = n - n // 100, n // 100, n / 40
    page = collector.render(summary, tally, max_pixels=10**8)
    return page, time.perf_counter() - t0


@pytest.mark.slow
def test_report_of_a_100k_image_run_stays_small_and_renders(tmp_path, browser):
    sources = []
    for i in range(20):  # the rows point at real image pairs, which the report reads back for its pairs
        before, after = tmp_path / f"in{i}.png", tmp_path / f"out{i}.png"
        Image.fromarray(photo(64, 64, seed=i, noise=0.15)).save(before)
        Image.fromarray(photo(64, 64, seed=i, noise=0.0)).save(after)
        sources.append((str(before), str(after)))
    smaller, _ = _big_report(30_000, sources)
    page, seconds = _big_report(100_000, sources)
    print(f"100k-row report: {len(page) / 1e3:.0f} kB in {seconds:.1f} s (30k rows: {len(smaller) / 1e3:.0f} kB)")
    assert len(page) < 1_000_000
    assert len(page) < 1.2 * len(smaller)  # bounded: past its caps the page does not grow with the run
    assert "The first 200 of 1,000 are listed" in page
    assert page.count("decode: truncated file (N bytes short)") == 1  # one kind, whatever the numbers
    path = tmp_path / "big.html"
    path.write_text(page)
    dom, shot = _render(browser, path, tmp_path)
    assert int(dom["images-total"]) == 2 * (8 + 4 + 4) and dom["images-loaded"] == dom["images-total"]
    assert shot.std() > 20
