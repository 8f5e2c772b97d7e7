"""The bundled deraining model, as ``jobs/specs/derain.yaml`` runs it, through a whole run on S3 (SeaweedFS)
and a local Ray: it removes streaks, and its rain gate passes a photo without rain untouched."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from pipeline.job import run_restore
from pipeline.rows import PASSED, RESTORED
from pipeline.spec import parse_spec
from tests.images import photo

SPEC = Path(__file__).resolve().parents[2] / "jobs" / "specs" / "derain.yaml"

pytestmark = pytest.mark.slow


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_the_spec_s_deraining_model_on_s3(ray_local, s3fs_client, s3_endpoint):
    import yaml

    from dgunet.degrade import Degradation, rain, to_uint8
    from dgunet.registry import default_weights

    model = yaml.safe_load(SPEC.read_text())["model"]
    assert model["weights"] is None  # the bundled model

    import skimage.data

    fs, bucket = s3fs_client, f"rain-{uuid.uuid4().hex[:8]}"
    clean = photo(128, 160, seed=3, noise=0.02)  # no rain: the gate passes it
    cat = skimage.data.chelsea()[100:228, 100:260].copy()
    # Rain as the model trained on it: streaks with the veil of light that heavier rain brings
    streaks = Degradation(
        kinds=("rain",), rain_density=(0.01, 0.01), rain_length=(20, 20), rain_width=(1.5, 1.5), rain_haze=0.3
    )
    rainy = to_uint8(rain(cat.astype(np.float32) / 255.0, streaks, np.random.default_rng(4)))
    fs.mkdir(bucket)
    fs.pipe(f"{bucket}/in/rainy.png", _png(rainy))
    fs.pipe(f"{bucket}/in/clean.png", _png(clean))
    spec = parse_spec(
        {
            "task": "derain",
            "model": model,
            "input": {"uri": f"s3://{bucket}/in"},
            "output": {"uri": f"s3://{bucket}/out", "report": False},
            "storage": {"endpoint_url": s3_endpoint},
            "resources": {"cpus_per_actor": 1, "batch_size": 1},
        }
    )
    summary = run_restore(spec, run_id="derain")
    assert (summary.ok, summary.failed) == (2, 0)
    assert summary.model == f"dgunet/derain@sha256:{default_weights('derain').sha256}"
    rows = {
        r["input_uri"].rsplit("/", 1)[-1]: r
        for r in pads.dataset(f"{bucket}/out/stats", filesystem=fs).to_table().to_pylist()
    }
    assert rows["rainy.png"]["action"] == RESTORED and rows["clean.png"]["action"] == PASSED
    assert rows["clean.png"]["rain_before"] < 1.5 <= rows["rainy.png"]["rain_before"]
    derained = np.asarray(Image.open(io.BytesIO(fs.cat(f"{bucket}/out/images/rainy.png"))))
    assert _psnr(derained, cat) > _psnr(rainy, cat) + 3
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(fs.cat(f"{bucket}/out/images/clean.png")))), clean)
