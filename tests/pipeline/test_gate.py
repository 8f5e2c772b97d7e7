"""The pass-through gate: images with no noise to remove are written unchanged and say so."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.dataset as pads
import pytest
from PIL import Image

from pipeline.rows import OK, PASSED, RESTORED
from pipeline.stages.decode import decode_batch
from pipeline.stages.measure import measure_batch
from pipeline.stages.model import RestoreModel
from pipeline.stages.model_set import ModelSet, resolve_model
from tests.images import photo


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def decode(batch: dict, **measure) -> dict:
    """The decode stage, then the measuring stage, as a run chains them."""
    return measure_batch(decode_batch(batch, max_pixels=10**8), **measure)


def _decoded(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    n = len(files)
    batch = {
        "input_uri": np.array(list(files), dtype=object),
        "status": np.array([OK] * n, dtype=object),
        "error": np.array([""] * n, dtype=object),
        "data": np.array(list(files.values()), dtype=object),
    }
    return measure_batch(decode_batch(batch, max_pixels=10**8))


CLEAN = photo(64, 80, seed=1, noise=0.0)  # a smooth gradient: no noise at all
NOISY = photo(64, 80, seed=2, noise=0.08)  # about 20 levels of noise


def test_decode_marks_lossy_files_and_estimates_noise():
    out = _decoded(
        {
            "clean.png": _encode(CLEAN, "PNG"),
            "noisy.png": _encode(NOISY, "PNG"),
            "clean.jpg": _encode(CLEAN, "JPEG", quality=90),
            "lossless.webp": _encode(CLEAN, "WEBP", lossless=True),
            "lossy.webp": _encode(CLEAN, "WEBP", quality=80),
            "tiny.png": _encode(CLEAN[:4, :4], "PNG"),
        }
    )
    assert list(out["lossy"]) == [False, False, True, False, True, False]
    noise = out["noise_before"]
    assert noise[0] < 1.0 and 15 < noise[1] < 25, noise
    assert np.isnan(noise[5])  # too small to tell


@pytest.fixture
def stage(tiny_weights):
    path, widths = tiny_weights
    ref = resolve_model("denoise", arch="dgunet", weights=path, **widths)

    def make(pass_below, restore_lossy=False, gate_on="noise_before"):
        gate = {"gate_on": gate_on, "pass_below": pass_below, "restore_lossy": restore_lossy}
        return RestoreModel(models=ModelSet.one(ref, gate), inference={}, threads=1, use_gpu=False)

    return make


def test_model_stage_passes_clean_images_through(stage):
    batch = _decoded(
        {
            "clean.png": _encode(CLEAN, "PNG"),
            "noisy.png": _encode(NOISY, "PNG"),
            "clean.jpg": _encode(CLEAN, "JPEG", quality=90),
            "tiny.png": _encode(CLEAN[:4, :4], "PNG"),  # no estimate: restored
        }
    )
    out = stage(2.5)(batch)
    assert list(out["status"]) == [OK] * 4
    assert list(out["action"]) == [PASSED, RESTORED, PASSED, RESTORED]
    assert out["restored"][0] == batch["pixels"][0] and out["seconds"][0] == 0
    assert out["restored"][1] != batch["pixels"][1]
    out = stage(2.5, restore_lossy=True)(batch)  # a model that removes JPEG artefacts gets every JPEG
    assert list(out["action"]) == [PASSED, RESTORED, RESTORED, RESTORED]
    out = stage(None)(batch)  # the gate off: everything through the model
    assert list(out["action"]) == [RESTORED] * 4


def _task_gate(task: str) -> dict:
    """The task's fallback gate (a checkpoint's), as the model stage's ``ModelRef`` carries it."""
    from dgunet import TASK_GATES

    g = TASK_GATES[task]
    return {"estimate": g.estimate, "below": g.below, "restore_lossy": g.restore_lossy}


def test_gate_settings_per_task_and_spec():
    from pipeline.spec import GateSpec

    noise = {"gate_on": "noise_before"}
    assert GateSpec().settings(_task_gate("denoise")) == {**noise, "pass_below": 4.5, "restore_lossy": False}
    assert GateSpec().settings(_task_gate("deblur")) == {**noise, "pass_below": None, "restore_lossy": True}
    given = GateSpec(noise_below=4, restore_lossy=True).settings(_task_gate("denoise"))
    assert given == {**noise, "pass_below": 4, "restore_lossy": True}
    assert GateSpec(enabled=False).settings(_task_gate("denoise"))["pass_below"] is None
    # deraining reads the rain level only
    rain = GateSpec(rain_below=1.5, noise_below=9).settings(_task_gate("derain"))
    assert rain == {"gate_on": "rain_before", "pass_below": 1.5, "restore_lossy": False}
    assert GateSpec().settings(_task_gate("derain"))["pass_below"] == 1.5
    assert GateSpec(rain_below=1.5).settings(_task_gate("denoise"))["pass_below"] == 4.5


def test_the_default_gate_is_the_weights_and_a_spec_s_own_wins(monkeypatch, tmp_path):
    import dataclasses

    import dgunet.registry
    from dgunet import Gate, create_model, save_checkpoint
    from dgunet.registry import describe
    from pipeline.spec import GateSpec

    w = dgunet.registry.default_weights("denoise")
    ref = resolve_model("denoise", arch=None, weights=None)
    assert ref.gate == {"estimate": "noise", "below": 4.5, "restore_lossy": False} == _task_gate("denoise")
    monkeypatch.setattr(dgunet.registry, "WEIGHTS", {w.name: dataclasses.replace(w, gate=Gate("noise", 2.0, True))})
    ref = resolve_model("denoise", arch=None, weights=None)
    assert GateSpec().settings(ref.gate) == {"gate_on": "noise_before", "pass_below": 2.0, "restore_lossy": True}
    given = GateSpec(noise_below=3, restore_lossy=False).settings(ref.gate)
    assert (given["pass_below"], given["restore_lossy"]) == (3, False)
    # A deraining checkpoint by path has no gate of its own: the task's, the rain level at 1.5.
    model = create_model("derain", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=1)
    path = tmp_path / "derain.pth"
    save_checkpoint(path, model, epoch=1, config=describe(model.cfg), spec={"task": "derain"})
    ref = resolve_model("derain", arch=None, weights=str(path))
    assert GateSpec().settings(ref.gate) == {"gate_on": "rain_before", "pass_below": 1.5, "restore_lossy": False}
    assert ref.widths == {"n_feat": 8, "scale_unetfeats": 4, "scale_orsnetfeats": 4, "depth": 1}


def _rainy(clean: np.ndarray, seed: int) -> np.ndarray:
    from dgunet.degrade import Degradation, rain, to_uint8

    spec = Degradation(kinds=("rain",), rain_density=(0.01, 0.01), rain_length=(20, 20), rain_haze=0.0)
    return to_uint8(rain(clean.astype(np.float32) / 255.0, spec, np.random.default_rng(seed)))


def test_decode_estimates_rain_when_asked_and_the_gate_reads_it(stage):
    from pipeline.quality import rain_level

    clean = photo(128, 128, seed=4, noise=0.0)
    files = {"clean.png": _encode(clean, "PNG"), "rainy.png": _encode(_rainy(clean, 1), "PNG")}
    assert np.isnan(_decoded(files)["rain_before"]).all()  # not asked for: not measured
    n = len(files)
    batch = decode(
        {
            "input_uri": np.array(list(files), dtype=object),
            "status": np.array([OK] * n, dtype=object),
            "error": np.array([""] * n, dtype=object),
            "data": np.array(list(files.values()), dtype=object),
        },
        estimates=("rain",),
    )
    level = batch["rain_before"]
    assert level[0] < 0.5 < 2 < level[1], level
    assert rain_level(clean[:8, :8]) is None  # too small to tell
    out = stage(1.0, gate_on="rain_before")(batch)
    assert list(out["action"]) == [PASSED, RESTORED]
    assert out["restored"][0] == batch["pixels"][0]


@pytest.mark.slow
def test_run_writes_passed_images_unchanged_and_counts_them(ray_local, tmp_path, tiny_weights):
    import yaml

    from jobs.restore_bucket import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clean.png").write_bytes(_encode(CLEAN, "PNG"))
    (tmp_path / "in" / "noisy.png").write_bytes(_encode(NOISY, "PNG"))
    (tmp_path / "in" / "photo.jpg").write_bytes(_encode(NOISY, "JPEG", quality=90))  # noisy, so restored
    path, widths = tiny_weights
    spec = {
        "model": {"weights": path, **widths},
        "input": {"uri": str(tmp_path / "in")},
        "output": {"uri": str(tmp_path / "out")},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["--spec", str(tmp_path / "spec.yaml"), "--run-id", "gated"]) == 0
    stats = pads.dataset(str(tmp_path / "out" / "stats")).to_table().to_pylist()
    rows = {r["input_uri"].rsplit("/", 1)[-1]: r for r in stats}
    actions = {name: r["action"] for name, r in rows.items()}
    assert actions == {"clean.png": PASSED, "noisy.png": RESTORED, "photo.jpg": RESTORED}
    assert rows["photo.jpg"]["noise_before"] > 4.5
    assert rows["clean.png"]["noise_after"] == rows["clean.png"]["noise_before"] < 4.5
    written = np.asarray(Image.open(tmp_path / "out" / "images" / "clean.png"))
    assert np.array_equal(written, CLEAN)  # the input's pixels, unchanged
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "out" / "images" / "noisy.png")), NOISY)
    summary = json.loads((tmp_path / "out" / "runs" / "gated.json").read_text())
    assert summary["ok"] == 3 and summary["metrics"]["passed"] == 1
    report = (tmp_path / "out" / "reports" / "gated.html").read_text()
    assert "<b>1</b>passed through" in report
