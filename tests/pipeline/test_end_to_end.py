"""restore_bucket end to end, S3 to S3, on a real S3 server and a local Ray."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pyarrow.dataset as pads
import pytest

from pipeline.run.job import run_restore
from pipeline.spec import parse_spec
from pipeline.stages.decode import decode_image
from tests.images import bad_files, good_files, photo

pytestmark = pytest.mark.slow


def _spec(bucket: str, endpoint: str, weights, **extra):
    path, widths = weights
    return parse_spec(
        {
            "task": "denoise",
            "model": {"arch": "dgunet", "weights": path, **widths},
            "input": {"uri": f"s3://{bucket}/archive"},
            "output": {"uri": f"s3://{bucket}/restored"},
            "storage": {"endpoint_url": endpoint},
            "resources": {"cpus_per_actor": 1, "batch_size": 2, "min_actors": 1, "max_actors": 1},
            "inference": {"tile": 64, "overlap": 16, "max_pixels": 4096},
            "allow_failed_fraction": 1.0,
            **extra,
        }
    )


def _snapshot(fs, prefix):
    return {p: (i["size"], i.get("ETag")) for p, i in fs.find(prefix, detail=True).items()}


def _stats(fs, bucket):
    fs.invalidate_cache()
    files = [p for p in fs.find(f"{bucket}/restored/stats") if p.endswith(".parquet")]
    return pads.dataset(files, filesystem=fs, format="parquet").to_table().to_pylist()


def test_s3_to_s3_full_incremental_cycle(ray_local, s3fs_client, s3_endpoint, tiny_weights):
    fs = s3fs_client
    bucket = f"e2e-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    good, bad = good_files(), bad_files()
    for name, data in {**good, **bad}.items():
        fs.pipe(f"{bucket}/archive/{name}", data)
    fs.pipe(f"{bucket}/archive/readme.txt", b"not listed: not an image extension")
    path, widths = tiny_weights
    fs.put(path, f"{bucket}/models/tiny.pth")  # the actors load their weights from S3 too
    spec = _spec(bucket, s3_endpoint, (f"s3://{bucket}/models/tiny.pth", widths))

    # First run: every good file restored, every bad one failed with a reason, nothing stops.
    archive_before = _snapshot(fs, f"{bucket}/archive")
    first = run_restore(spec, run_id="run1")
    assert (first.listed, first.ok, first.failed, first.skipped) == (len(good) + len(bad), len(good), len(bad), 0)
    rows = _stats(fs, bucket)
    assert len(rows) == len(good) + len(bad) and {r["run_id"] for r in rows} == {"run1"}
    by_input = {r["input_uri"].split("/archive/", 1)[1]: r for r in rows}
    for name in bad:
        assert by_input[name]["status"] == "failed" and by_input[name]["error"].startswith(("decode:", "read:"))
        assert by_input[name]["output_uri"] is None
    assert "exceeds the limit" in by_input["bad/bomb.png"]["error"]
    for name, data in good.items():
        row = by_input[name]
        assert row["status"] == "ok" and row["error"] is None, row
        assert row["model"].startswith("dgunet/denoise@sha256:") and len(row["model"].split(":")[-1]) == 64
        src = decode_image(data, max_pixels=10**8).pixels
        out = decode_image(fs.cat(row["output_uri"].removeprefix("s3://")), max_pixels=10**8).pixels
        assert out.shape == src.shape and out.dtype == src.dtype, name  # size, channels and bit depth kept
        assert (row["width"], row["height"], row["channels"]) == (src.shape[1], src.shape[0], src.shape[2])
        if src.shape[2] in (2, 4):
            assert np.array_equal(out[..., -1], src[..., -1]), name  # alpha untouched
        assert row["noise_before"] is not None or min(src.shape[:2]) < 8
        if row["action"] == "passed":  # the gate: too little noise to restore, so the input's pixels as they are
            assert row["noise_before"] < 4.5 and row["seconds"] == 0 and np.array_equal(out, src), name
        else:
            assert row["action"] == "restored" and row["seconds"] > 0, name
    assert by_input["ünïcödé/фото №1.png"]["output_uri"].endswith("/restored/images/ünïcödé/фото №1.png")
    assert by_input["rotated.JPG"]["output_uri"].endswith("/restored/images/rotated.png")
    summary = json.loads(fs.cat(f"{bucket}/restored/runs/run1.json"))
    assert summary["ok"] == len(good) and summary["failed"] == len(bad)
    fs.invalidate_cache()
    assert _snapshot(fs, f"{bucket}/archive") == archive_before  # the input prefix is only ever read
    written = {p.split("/")[1] for p in fs.find(bucket)} - {"archive", "models"}
    assert written == {"restored"}  # and nothing is written beside the output prefix

    # Second run over the unchanged archive: no model work, no image or stats written.
    images_before, stats_before = _snapshot(fs, f"{bucket}/restored/images"), _snapshot(fs, f"{bucket}/restored/stats")
    second = run_restore(spec, run_id="run2")
    assert (second.ok, second.failed, second.skipped, second.still_bad) == (0, 0, len(good), len(bad))
    fs.invalidate_cache()
    assert _snapshot(fs, f"{bucket}/restored/images") == images_before
    assert _snapshot(fs, f"{bucket}/restored/stats") == stats_before

    # Third run: a new upload, and a fixed bad file, are picked up; nothing else is touched.
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo(32, 24, 9)).save(buf, format="PNG")
    fs.pipe(f"{bucket}/archive/new/upload.png", buf.getvalue())
    fs.pipe(f"{bucket}/archive/bad/truncated.png", buf.getvalue())
    third = run_restore(spec, run_id="run3")
    assert (third.ok, third.failed, third.skipped) == (2, 0, len(good))
    rows = [r for r in _stats(fs, bucket) if r["run_id"] == "run3"]
    assert sorted(r["input_uri"].split("/archive/")[1] for r in rows) == ["bad/truncated.png", "new/upload.png"]
