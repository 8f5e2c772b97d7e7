"""The bundled deraining and deblurring models, as ``jobs/specs/derain.yaml`` and ``deblur.yaml`` run them,
through whole runs on S3 (SeaweedFS) and a local Ray: each restores what it was made for, the rain gate
passes a photo without rain untouched, and the deblurring model (no gate: it leaves sharp photos above
40 dB on the held-out crops) keeps a sharp photo close to itself."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
import skimage.data
import yaml
from PIL import Image

from dgunet.registry import default_weights
from pipeline.rows import PASSED, RESTORED
from pipeline.run.job import run_restore
from pipeline.spec import parse_spec
from tests.images import photo

SPECS = Path(__file__).resolve().parents[2] / "jobs" / "specs"

pytestmark = pytest.mark.slow


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def _run(task: str, inputs: dict[str, np.ndarray], fs, endpoint: str) -> tuple[dict, dict]:
    """Run ``jobs/specs/<task>.yaml``'s model over ``inputs`` in a fresh bucket: the stats rows and the
    written images, by file name."""
    model = yaml.safe_load((SPECS / f"{task}.yaml").read_text())["model"]
    assert model["weights"] is None  # the bundled model
    bucket = f"{task}-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    for name, arr in inputs.items():
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        fs.pipe(f"{bucket}/in/{name}", buf.getvalue())
    spec = parse_spec(
        {
            "task": task,
            "model": model,
            "input": {"uri": f"s3://{bucket}/in"},
            "output": {"uri": f"s3://{bucket}/out", "report": False},
            "storage": {"endpoint_url": endpoint},
            "resources": {"cpus_per_actor": 1, "batch_size": 1},
            "inference": {"precision": "float32"},
        }
    )
    summary = run_restore(spec, run_id=task)
    assert (summary.ok, summary.failed) == (len(inputs), 0)
    assert summary.model == f"dgunet/{task}@sha256:{default_weights(task).sha256}"
    rows = {
        r["input_uri"].rsplit("/", 1)[-1]: r
        for r in pads.dataset(f"{bucket}/out/stats", filesystem=fs).to_table().to_pylist()
    }
    images = {name: np.asarray(Image.open(io.BytesIO(fs.cat(f"{bucket}/out/images/{name}")))) for name in inputs}
    return rows, images


def test_the_deraining_spec_on_s3(ray_local, s3fs_client, s3_endpoint):
    from dgunet.degrade import Degradation, rain, to_uint8

    clean = photo(128, 160, seed=3, noise=0.02)  # no rain: the gate passes it
    cat = skimage.data.chelsea()[100:228, 100:260].copy()
    # Rain as the model trained on it: streaks with the veil of light that heavier rain brings
    streaks = Degradation(
        kinds=("rain",), rain_density=(0.01, 0.01), rain_length=(20, 20), rain_width=(1.5, 1.5), rain_haze=0.3
    )
    rainy = to_uint8(rain(cat.astype(np.float32) / 255.0, streaks, np.random.default_rng(4)))
    rows, images = _run("derain", {"rainy.png": rainy, "clean.png": clean}, s3fs_client, s3_endpoint)
    assert rows["rainy.png"]["action"] == RESTORED and rows["clean.png"]["action"] == PASSED
    assert rows["clean.png"]["rain_before"] < 1.5 <= rows["rainy.png"]["rain_before"]
    assert _psnr(images["rainy.png"], cat) > _psnr(rainy, cat) + 3
    assert np.array_equal(images["clean.png"], clean)


def test_the_deblurring_spec_on_s3(ray_local, s3fs_client, s3_endpoint):
    from dgunet.degrade import add_noise, blur, shake_kernel, to_uint8

    coffee = skimage.data.coffee()[100:292, 150:342].copy()
    # Camera shake of 11 px with sensor noise, as the model trained on it
    kernel = shake_kernel(11, np.random.default_rng(1))
    shaken = to_uint8(add_noise(blur(coffee.astype(np.float32) / 255.0, kernel), 2.0, np.random.default_rng(5)))
    rows, images = _run("deblur", {"shaken.png": shaken, "sharp.png": coffee}, s3fs_client, s3_endpoint)
    assert rows["shaken.png"]["action"] == RESTORED and rows["sharp.png"]["action"] == RESTORED
    assert _psnr(images["shaken.png"], coffee) > _psnr(shaken, coffee) + 0.8  # +1.3 dB measured
    assert _psnr(images["sharp.png"], coffee) > 38  # 40.7 dB measured
