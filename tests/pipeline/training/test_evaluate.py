"""Evaluation cases and baselines: each case degrades as it says, and each classical baseline helps on
its own kind of degradation, so that the model cards compare against something real."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.training import evaluate as ev
from tests.images import photo

CLEAN = photo(64, 64, seed=5, noise=0.06)


def _astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()[60:188, 160:288].copy()  # a real photo: blur takes real detail


def _gain(case: str, method) -> float:
    clean = _astronaut()
    degraded, known = ev.Case(case).degrade(clean, seed=5)
    return ev.psnr_ssim(clean, method(degraded, known))[0] - ev.psnr_ssim(clean, degraded)[0]


def test_cases_degrade_as_named_and_reproducibly():
    a, known = ev.Case("blur").degrade(CLEAN, seed=1)
    b, _ = ev.Case("blur").degrade(CLEAN, seed=1)
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == CLEAN.shape
    assert known.kernel is not None and abs(float(known.kernel.sum()) - 1) < 1e-5
    assert ev.Case("sigma25").degrade(CLEAN, seed=1)[1].sigma == 25
    assert np.array_equal(ev.Case("clean").degrade(CLEAN, seed=1)[0], CLEAN)
    smear, _ = ev.Case("rain-smear").degrade(CLEAN, seed=1)
    lines, _ = ev.Case("rain-lines").degrade(CLEAN, seed=1)
    assert smear.mean() > CLEAN.mean() and lines.mean() > CLEAN.mean() and not np.array_equal(smear, lines)
    with pytest.raises(ValueError, match="rain-smear"):
        ev.Case("snow").degrade(CLEAN, seed=1)


def test_blur_cases_draw_one_kind_of_kernel():
    from dgunet.degrade import disk_kernel

    for seed in range(4):
        defocus = ev.Case("blur-defocus").degrade(CLEAN, seed=seed)[1].kernel
        assert np.allclose(defocus, disk_kernel(defocus.shape[0]))  # a disk, whatever its size
        shake = ev.Case("blur-shake").degrade(CLEAN, seed=seed)[1].kernel
        assert not np.allclose(shake, disk_kernel(shake.shape[0]))


@pytest.mark.parametrize(
    ("case", "method"),
    [
        ("sigma25", ev.nlm),
        ("blur", ev.richardson_lucy),
        ("blur", ev.wiener),
        ("blur-shake", ev.wiener),
        ("blur-defocus", ev.wiener),
        ("rain-lines", ev.guided),
    ],
)
def test_classical_baselines_improve_their_own_degradation(case, method):
    assert _gain(case, method) > 0.3


def test_unsharp_masking_sharpens():
    from pipeline.quality import sharpness

    degraded, known = ev.Case("blur").degrade(_astronaut(), seed=5)
    assert sharpness(ev.unsharp(degraded, known)) > 2 * sharpness(degraded)


def test_each_baseline_runs_on_its_kind_only():
    seen = []

    def spy(name):
        def run(degraded, known):
            seen.append((name, known.sigma is not None, known.kernel is not None))
            return degraded

        return run

    methods = {"nlm": spy("nlm"), "unsharp": spy("unsharp"), "median": spy("median"), "ours": spy("ours")}
    result = ev.evaluate({"a.png": CLEAN}, ["sigma15", "blur", "rain-lines", "clean"], methods, log=lambda _: None)
    assert seen == [("nlm", True, False), ("ours", True, False), ("unsharp", False, True), ("ours", False, True)] + [
        ("median", False, False),
        ("ours", False, False),
        ("ours", False, False),
    ]
    table = result.table()
    assert set(table["clean"]) == {"ours"} and set(table["blur"]) == {"input", "unsharp", "ours"}
    assert "| blur | a.png |" in result.markdown()


def test_evaluate_job_writes_the_mean_and_per_image_tables_for_a_checkpoint(tmp_path, tiny_weights):
    import importlib.util
    import json
    from pathlib import Path

    from PIL import Image

    path = Path(__file__).parents[3] / "jobs" / "evaluate.py"
    loader = importlib.util.spec_from_file_location("evaluate_job", path)
    job = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(job)
    (tmp_path / "clean").mkdir()
    for i in range(2):
        Image.fromarray(photo(40, 48, seed=i)).save(tmp_path / "clean" / f"img{i}.png")
    weights, widths = tiny_weights
    argv = ["--clean", str(tmp_path / "clean"), "--checkpoint", weights, "--cases", "sigma25", "clean"]
    argv += ["--n-feat", str(widths["n_feat"]), "--scale-unetfeats", str(widths["scale_unetfeats"])]
    argv += ["--scale-orsnetfeats", str(widths["scale_orsnetfeats"]), "--baselines", "nlm"]
    argv += ["--tile", "32", "--overlap", "8"]
    assert job.main([*argv, "--out", str(tmp_path / "out"), "--save-degraded"]) == 0
    result = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert set(result["mean"]) == {"sigma25", "clean"}
    assert set(result["mean"]["sigma25"]) == {"input", "nlm", "ours"} and set(result["mean"]["clean"]) == {"ours"}
    assert {(r["case"], r["image"]) for r in result["per_image"] if r["method"] == "ours"} == {
        (case, f"img{i}.png") for case in ("sigma25", "clean") for i in range(2)
    }
    assert "| sigma25 | img1.png |" in (tmp_path / "out" / "eval.md").read_text()
    assert sorted(p.name for p in (tmp_path / "out" / "degraded" / "sigma25").iterdir()) == ["img0.png", "img1.png"]


def test_more_seeds_draw_each_case_again_and_average_the_draws():
    inputs = []

    def ours(degraded, known):
        inputs.append(degraded)
        return CLEAN

    cases, images = ["rain-lines", "clean"], {"a.png": CLEAN}
    one = ev.evaluate(images, cases, {"ours": ours}, log=lambda _: None)
    first = inputs[0]
    inputs.clear()
    three = ev.evaluate(images, cases, {"ours": ours}, seeds=range(3), log=lambda _: None)
    rain = [r for r in three.per_image if r["case"] == "rain-lines" and r["method"] == "input"]
    assert [r["seed"] for r in rain] == [0, 1, 2]
    assert np.array_equal(inputs[0], first)  # seed 0 is the one-draw evaluation's rain
    assert not np.array_equal(inputs[1], inputs[0]) and not np.array_equal(inputs[2], inputs[1])
    assert sum(r["case"] == "clean" for r in three.per_image) == 1  # nothing to draw: clean runs once
    mean = float(np.mean([r["psnr"] for r in rain]))
    assert three.table()["rain-lines"]["input"]["psnr"] == pytest.approx(mean)
    assert f"| rain-lines | a.png | {mean:.2f} |" in three.markdown()
    assert one.table()["rain-lines"]["input"]["psnr"] == pytest.approx(rain[0]["psnr"])
