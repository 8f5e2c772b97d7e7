"""Incremental runs on S3 (SeaweedFS) and a local Ray: what an overwritten, added or deleted input does."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from pipeline.run.job import run_restore
from pipeline.spec import parse_spec
from pipeline.stats import stats_index
from tests.images import photo

pytestmark = pytest.mark.slow


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=0)  # stored: the size follows the pixel count
    return buf.getvalue()


def _rows(fs, bucket: str, run_id: str) -> list[dict]:
    fs.invalidate_cache()
    files = [p for p in fs.find(f"{bucket}/out/stats") if p.endswith(".parquet")]
    rows = pads.dataset(files, filesystem=fs, format="parquet").to_table().to_pylist()
    return [r for r in rows if r["run_id"] == run_id]


def test_overwritten_added_and_deleted_inputs(ray_local, s3fs_client, s3_endpoint, tiny_weights):
    fs, bucket = s3fs_client, f"incr-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    for i in range(1, 7):
        fs.pipe(f"{bucket}/in/img{i}.png", _png(photo(32, 40, seed=i)))
    path, widths = tiny_weights
    spec = parse_spec(
        {
            "model": {"weights": path, **widths},
            "input": {"uri": f"s3://{bucket}/in"},
            "output": {"uri": f"s3://{bucket}/out", "report": False},
            "storage": {"endpoint_url": s3_endpoint},
            "resources": {"cpus_per_actor": 1, "batch_size": 2},
            "inference": {"tile": 64, "overlap": 16, "max_pixels": 4096},
        }
    )
    first = run_restore(spec, run_id="first")
    assert (first.ok, first.failed, first.skipped) == (6, 0, 0)
    versions = {r["input_uri"]: r["input_version"] for r in _rows(fs, bucket, "first")}
    etags = {f"s3://{p}": i["ETag"].strip('"') for p, i in fs.find(f"{bucket}/in", detail=True).items()}
    for uri, version in versions.items():
        assert version.startswith(f"etag={etags[uri]} size=") and " modified=" in version, version
    # The parts say what the next plan needs to plan without a shuffle (the runs below plan that way).
    parts = [f"s3://{p}" for p in fs.find(f"{bucket}/out/stats")]
    assert stats_index(parts, input_uri=spec.input.uri, storage=spec.storage.options()) is not None

    # img1: another photo of another size; img2: other bytes of the same size; img9: a new upload.
    old2 = fs.cat(f"{bucket}/in/img2.png")
    new2 = _png(photo(32, 40, seed=22))
    assert len(new2) == len(old2) and new2 != old2
    fs.pipe(f"{bucket}/in/img1.png", _png(photo(48, 40, seed=11)))
    fs.pipe(f"{bucket}/in/img2.png", new2)
    fs.pipe(f"{bucket}/in/img9.png", _png(photo(32, 40, seed=9)))
    second = run_restore(spec, run_id="second")
    assert (second.ok, second.failed, second.skipped, second.changed, second.vanished) == (3, 0, 4, 2, 0)
    rows = {r["input_uri"].rsplit("/", 1)[1]: r for r in _rows(fs, bucket, "second")}
    assert sorted(rows) == ["img1.png", "img2.png", "img9.png"]
    assert rows["img2.png"]["input_version"] != versions[f"s3://{bucket}/in/img2.png"]
    # The changed inputs' outputs were replaced under their names: img1's is of the new size.
    assert rows["img1.png"]["output_uri"] == f"s3://{bucket}/out/images/img1.png"
    with Image.open(io.BytesIO(fs.cat(f"{bucket}/out/images/img1.png"))) as img:
        assert img.size == (40, 48)

    # A third run over what is there now does nothing.
    third = run_restore(spec, run_id="third")
    assert (third.ok, third.failed, third.skipped, third.changed) == (0, 0, 7, 0)

    # A deleted input: nothing is restored, its old output stays, and the summary counts it.
    fs.rm(f"{bucket}/in/img3.png")
    fourth = run_restore(spec, run_id="fourth")
    assert (fourth.listed, fourth.ok, fourth.skipped, fourth.vanished) == (6, 0, 6, 1)
    fs.invalidate_cache()
    assert fs.exists(f"{bucket}/out/images/img3.png")
    assert json.loads(fs.cat(f"{bucket}/out/runs/fourth.json"))["vanished"] == 1


def test_manifest_entries_are_described_like_listed_ones(s3fs_client, s3_endpoint):
    """A manifest entry's version (a HEAD request) equals its listing's, so a fixed file that once failed
    to decode is retried from a manifest too, and a missing entry that was seen before counts as vanished."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.planning.plan import make_plan
    from pipeline.rows import STATS_SCHEMA
    from pipeline.storage import StorageOptions, describe_many, list_objects

    fs, bucket = s3fs_client, f"mani-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    storage = StorageOptions(endpoint_url=s3_endpoint)
    for name in ("bad.png", "fixed.png", "gone.png"):
        fs.pipe(f"{bucket}/in/{name}", b"not a png")
    listed = list(list_objects(f"s3://{bucket}/in", storage))
    assert describe_many([o.uri for o in listed], storage) == listed
    rows = [
        {"input_uri": o.uri, "status": "failed", "error": "decode: not an image", "model": "m"}
        | {"input_bytes": o.size, "input_version": o.version, "run_id": "old"}
        for o in listed
    ]
    table = pa.Table.from_pylist([{k: r.get(k) for k in STATS_SCHEMA.names} for r in rows], STATS_SCHEMA)
    with fs.open(f"{bucket}/out/stats/run-old-part-00000.parquet", "wb") as f:
        pq.write_table(table, f)
    fs.pipe(f"{bucket}/in/fixed.png", b"now a png")  # same size
    fs.rm(f"{bucket}/in/gone.png")
    fs.pipe(f"{bucket}/list.txt", "".join(f"{o.uri}\n" for o in listed).encode())
    plan = make_plan(
        input_uri=f"s3://{bucket}/in",
        output_uri=f"s3://{bucket}/out",
        model="m",
        storage=storage,
        manifest=f"s3://{bucket}/list.txt",
    )
    assert [r["input_uri"] for r in plan.todo] == [f"s3://{bucket}/in/fixed.png"]
    assert (plan.still_bad, plan.changed, plan.vanished) == (1, 1, 1)
