"""Outputs written but never recorded are adopted by the next run, from their provenance alone; where the
provenance does not match (another input version, another model, a stranger's file) the input is
restored again. On S3 (SeaweedFS) and a local Ray."""

from __future__ import annotations

import io
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.rows import ADOPTED
from pipeline.run.job import run_restore
from pipeline.spec import parse_spec
from pipeline.stages.metadata import read_provenance
from tests.images import photo

pytestmark = pytest.mark.slow


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _rows(fs, bucket: str) -> list[dict]:
    fs.invalidate_cache()
    files = [p for p in fs.find(f"{bucket}/out/stats") if p.endswith(".parquet")]
    return pads.dataset(files, filesystem=fs, format="parquet").to_table().to_pylist()


def _forget(fs, bucket: str, names: set[str]) -> None:
    """Remove the stats rows of ``names`` by hand, as if their writes had never been recorded."""
    fs.invalidate_cache()
    for path in (p for p in fs.find(f"{bucket}/out/stats") if p.endswith(".parquet")):
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        keep = pa.array([u.rsplit("/", 1)[1] not in names for u in table.column("input_uri").to_pylist()], pa.bool_())
        buf = io.BytesIO()
        pq.write_table(table.filter(keep).replace_schema_metadata(table.schema.metadata), buf)
        fs.pipe(path, buf.getvalue())


def test_unrecorded_outputs_are_adopted_and_strangers_restored(
    ray_local, s3fs_client, s3_endpoint, tiny_weights, tmp_path
):
    fs, bucket = s3fs_client, f"adopt-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    for i in range(1, 6):
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
    assert (first.ok, first.failed) == (5, 0)
    out = f"{bucket}/out/images"
    record = read_provenance(fs.cat(f"{out}/img1.png"))
    assert record["input_uri"] == f"s3://{bucket}/in/img1.png" and record["run_id"] == "first"
    assert (
        record["input_version"]
        == next(r for r in _rows(fs, bucket) if r["input_uri"].endswith("img1.png"))["input_version"]
    )
    written = {n: fs.info(f"{out}/{n}")["ETag"] for n in ("img1.png", "img2.png", "img3.png", "img4.png")}

    # img1, img2: written, their rows lost; img3: lost, and a stranger's file in its place; img4: lost, and
    # its input overwritten since (the output is of the old version).
    _forget(fs, bucket, {"img1.png", "img2.png", "img3.png", "img4.png"})
    fs.pipe(f"{out}/img3.png", _png(photo(32, 40, seed=33)))
    fs.pipe(f"{bucket}/in/img4.png", _png(photo(32, 40, seed=44)))
    second = run_restore(spec, run_id="second")
    rows = {r["input_uri"].rsplit("/", 1)[1]: r for r in _rows(fs, bucket) if r["run_id"] == "second"}
    assert second.adopted == 2 and (second.ok, second.skipped) == (2, 1), second.render()
    assert {n for n, r in rows.items() if r["action"] == ADOPTED} == {"img1.png", "img2.png"}
    assert {n for n, r in rows.items() if r["action"] != ADOPTED} == {"img3.png", "img4.png"}
    for n in ("img1.png", "img2.png"):
        fs.invalidate_cache()
        assert fs.info(f"{out}/{n}")["ETag"] == written[n]  # kept as it was: not written again
        assert rows[n]["status"] == "ok" and rows[n]["output_uri"] == f"s3://{out}/{n}"
        assert (rows[n]["width"], rows[n]["height"], rows[n]["output_format"]) == (40, 32, "png")
    assert read_provenance(fs.cat(f"{out}/img3.png"))["run_id"] == "second"  # the stranger's file replaced

    # Another model adopts nothing of this one's: the provenance names the model that wrote the file.
    import torch

    from dgunet import create_model, save_checkpoint

    torch.manual_seed(1)
    other_weights = tmp_path / "other.pth"
    save_checkpoint(other_weights, create_model("denoise", weights=False, **widths), epoch=1)
    _forget(fs, bucket, {"img5.png"})
    other = parse_spec({**spec.model_dump(), "model": {**spec.model.model_dump(), "weights": str(other_weights)}})
    third = run_restore(other, run_id="third")
    assert (third.adopted, third.ok) == (0, 5), third.render()  # a new model: every input is its to restore
