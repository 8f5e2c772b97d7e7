"""The bundled deblurring model, as ``jobs/specs/deblur.yaml`` runs it, through a whole run on S3 (SeaweedFS)
and a local Ray: it sharpens a shaken photo, and a sharp photo comes back close to itself (no gate: the
model leaves sharp photos above 40 dB on the held-out crops)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from pipeline.job import run_restore
from pipeline.rows import RESTORED
from pipeline.spec import parse_spec

SPEC = Path(__file__).resolve().parents[2] / "jobs" / "specs" / "deblur.yaml"

pytestmark = pytest.mark.slow


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_the_spec_s_deblurring_model_on_s3(ray_local, s3fs_client, s3_endpoint):
    import skimage.data
    import yaml

    from dgunet.degrade import add_noise, blur, shake_kernel, to_uint8
    from dgunet.registry import default_weights

    model = yaml.safe_load(SPEC.read_text())["model"]
    assert model["weights"] is None  # the bundled model

    fs, bucket = s3fs_client, f"blur-{uuid.uuid4().hex[:8]}"
    cat = skimage.data.coffee()[100:292, 150:342].copy()
    # Camera shake of 11 px with sensor noise, as the model trained on it
    kernel = shake_kernel(11, np.random.default_rng(1))
    shaken = to_uint8(add_noise(blur(cat.astype(np.float32) / 255.0, kernel), 2.0, np.random.default_rng(5)))
    fs.mkdir(bucket)
    fs.pipe(f"{bucket}/in/blurred.png", _png(shaken))
    fs.pipe(f"{bucket}/in/sharp.png", _png(cat))
    spec = parse_spec(
        {
            "task": "deblur",
            "model": model,
            "input": {"uri": f"s3://{bucket}/in"},
            "output": {"uri": f"s3://{bucket}/out", "report": False},
            "storage": {"endpoint_url": s3_endpoint},
            "resources": {"cpus_per_actor": 1, "batch_size": 1},
            "inference": {"precision": "float32"},
        }
    )
    summary = run_restore(spec, run_id="deblur")
    assert (summary.ok, summary.failed) == (2, 0)
    assert summary.model == f"dgunet/deblur@sha256:{default_weights('deblur').sha256}"
    rows = {
        r["input_uri"].rsplit("/", 1)[-1]: r
        for r in pads.dataset(f"{bucket}/out/stats", filesystem=fs).to_table().to_pylist()
    }
    assert rows["blurred.png"]["action"] == RESTORED and rows["sharp.png"]["action"] == RESTORED
    sharpened = np.asarray(Image.open(io.BytesIO(fs.cat(f"{bucket}/out/images/blurred.png"))))
    assert _psnr(sharpened, cat) > _psnr(shaken, cat) + 0.8  # +1.3 dB measured
    kept = np.asarray(Image.open(io.BytesIO(fs.cat(f"{bucket}/out/images/sharp.png"))))
    assert _psnr(kept, cat) > 35
