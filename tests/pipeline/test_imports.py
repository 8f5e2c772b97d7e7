"""What importing the code that every worker task runs costs: storage, the spec and the CPU stages load
no torch (only the model stage does, when its actor starts)."""

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
]


def _loaded_after(modules: list[str]) -> set[str]:
    """The top-level packages in ``sys.modules`` after importing ``modules`` in a fresh interpreter."""
    code = f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\nprint(' '.join(sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


@pytest.mark.parametrize("module", TORCH_FREE)
def test_importing_storage_the_spec_and_the_cpu_stages_loads_no_torch(module):
    loaded = _loaded_after([module])
    assert "torch" not in loaded and "dgunet" not in loaded, module


def test_the_model_stage_loads_torch_only_when_its_actor_starts():
    assert "torch" not in _loaded_after(["pipeline.stages.model"])
