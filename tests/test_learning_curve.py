"""bench/learning_curve.py's arithmetic: the CPU-hours its log-linear fit puts on a target, and its table."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lc():
    loader = importlib.util.spec_from_file_location("learning_curve", ROOT / "bench" / "learning_curve.py")
    module = importlib.util.module_from_spec(loader)
    sys.modules[loader.name] = module  # its dataclasses look their module up while it loads
    loader.loader.exec_module(module)
    yield module
    sys.modules.pop(loader.name, None)


def _rows(config, gains):
    common = {"config": config, "steps_per_cpu_s": 1.25, "input_psnr": 20.0, "target_gain_db": 5.0}
    return [{**common, "cpu_min": t, "gain_db": g} for t, g in gains]


def test_hours_to_a_target_follow_the_log_linear_fit(lc):
    # gain = 1 + 2 ln(minutes): +5 dB at e^2 minutes; the point before 2 minutes is left out of the fit
    rows = _rows("a", [(1.0, -3.0)] + [(t, 1 + 2 * math.log(t)) for t in (2.0, 4.0, 8.0)])
    assert lc.hours_to(rows, 5.0) == pytest.approx(math.exp(2) / 60)
    assert lc.hours_to(_rows("b", [(2.0, 1.0), (4.0, 1.0), (8.0, 0.9)]), 5.0) is None  # a curve that does not rise
    assert lc.hours_to(_rows("c", [(1.0, 0.5), (3.0, 1.0)]), 5.0) is None  # one point from 2 minutes on


def test_table_has_a_row_per_configuration_with_its_gains_and_reach(lc, tmp_path, monkeypatch):
    monkeypatch.setattr(lc, "RESULTS", tmp_path)
    rows = _rows("fast", [(t, 1 + 2 * math.log(t)) for t in (3.0, 6.0)]) + _rows("flat", [(3.0, 0.4), (6.0, 0.3)])
    (tmp_path / "denoise.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = lc.table("unused").splitlines()
    assert "## denoise" in lines and "Input PSNR 20.00 dB; target gain +5.00 dB." in lines
    fast = next(line for line in lines if line.startswith("| fast |"))
    assert fast == f"| fast | +{1 + 2 * math.log(3):.2f} | +{1 + 2 * math.log(6):.2f} | +4.58 | 1.25 | 0.12 h |"
    assert next(line for line in lines if line.startswith("| flat |")) == "| flat | +0.40 | +0.30 | +0.40 | 1.25 |  |"


def test_a_configuration_trained_again_is_a_run_of_its_own(lc, tmp_path, monkeypatch):
    monkeypatch.setattr(lc, "RESULTS", tmp_path)
    short = _rows("w8", [(2.0, 0.1), (4.0, 0.2)])
    long = _rows("w8", [(4.0, 0.3), (8.0, 0.5), (12.0, 0.6)])
    third = _rows("w8", [(4.0, 0.9)])
    (tmp_path / "deblur.jsonl").write_text("".join(json.dumps(r) + "\n" for r in short + long + third))
    assert list(lc.runs_of(short + long + third)) == ["w8", "w8 (run 2)", "w8 (run 3)"]
    lines = lc.table("unused").splitlines()
    run1 = next(line for line in lines if line.startswith("| w8 |"))
    assert run1.startswith("| w8 | +0.10 | +0.20 |  |  | +0.20 | 1.25 |")
    run2 = next(line for line in lines if line.startswith("| w8 (run 2) |"))
    assert run2.startswith("| w8 (run 2) |  | +0.30 | +0.50 | +0.60 | +0.60 | 1.25 |")
