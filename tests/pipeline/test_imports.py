"""What importing the code that every worker task runs costs: storage, the specs and the CPU stages load
no torch (only the model stage does, when its actor starts); of dgunet they load its torch-free corner
alone. Reading any shipped spec, restore or training, loads no torch either."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCH_FREE = [
    "pipeline.storage",
    "pipeline.spec",
    "pipeline.spec_loader",
    "pipeline.stats",
    "pipeline.stages.read",
    "pipeline.stages.decode",
    "pipeline.stages.write",
    "pipeline.training.spec",
    "dgunet",
]
# dgunet's modules that import no torch (names, the task table, options, I/O, degradations).
DGUNET_TORCH_FREE = {
    "dgunet",
    *(f"dgunet.{m}" for m in ("tasks", "options", "io", "degrade", "jpeg_damage", "camera", "kernels", "weather")),
}


def _modules_after(code: str) -> set[str]:
    """The names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    code += "\nimport sys\nprint(' '.join(sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _loaded_after(modules: list[str]) -> set[str]:
    """The top-level packages in ``sys.modules`` after importing ``modules`` in a fresh interpreter."""
    code = f"import importlib\nfor m in {modules!r}: importlib.import_module(m)"
    return {name.split(".")[0] for name in _modules_after(code)}


@pytest.mark.parametrize("module", TORCH_FREE)
def test_importing_storage_the_spec_and_the_cpu_stages_loads_no_torch(module):
    loaded = _modules_after(f"import {module}")
    assert "torch" not in loaded, module
    assert {m for m in loaded if m.split(".")[0] == "dgunet"} <= DGUNET_TORCH_FREE, module


def test_reading_every_shipped_spec_loads_no_torch():
    specs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "jobs" / "specs").glob("*.yaml"))
    assert len(specs) >= 10
    code = f"""
from pipeline.spec import load_spec
from pipeline.spec_loader import read_yaml, validate_spec
from pipeline.training.spec import TrainSpec
for path in {specs!r}:
    data = read_yaml(path)
    validate_spec(TrainSpec, data, source=path) if "optim" in data else load_spec(path)
"""
    loaded = _modules_after(code)
    assert "torch" not in {m.split(".")[0] for m in loaded}


def test_the_model_stage_loads_torch_only_when_its_actor_starts():
    assert "torch" not in _loaded_after(["pipeline.stages.model"])
