"""Evaluation cases and baselines: each case degrades as it says, and each classical baseline helps on
its own kind of degradation, so that the model cards compare against something real."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import evaluate as ev
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


@pytest.mark.parametrize(
    ("case", "method"),
    [("sigma25", ev.nlm), ("blur", ev.richardson_lucy), ("blur", ev.wiener)],
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
