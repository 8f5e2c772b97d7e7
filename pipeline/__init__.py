"""The batch restorer around :mod:`dgunet`: Ray Data jobs that restore image archives, and model training.

Three rooms, by where the code runs:

- the driver, here: the spec (:mod:`.spec`), the run (:mod:`.job`), its tally, report, lock, stats parts
  (:mod:`.stats`) and stop handling, and storage; planning what to restore has a room of its own
  (:mod:`.planning`);
- :mod:`.stages`: what Ray runs on workers for each image: read, decode, model, encode (with metadata),
  write, quality;
- :mod:`.training`: the training spec, loop (one process or Ray Train) and the evaluation against
  classical baselines.

The entry points the jobs use are importable from here; each is loaded on first use, so that importing
one stage on a worker does not import the driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC = {
    "RestoreSpec": "pipeline.spec",
    "SpecError": "pipeline.spec",
    "load_spec": "pipeline.spec",
    "run_restore": "pipeline.job",
    "model_ref": "pipeline.job",
    "init_ray": "pipeline.ray_env",
    "TrainSpec": "pipeline.training.spec",
    "fit": "pipeline.training.loop",
    "run_training": "pipeline.training.loop",
    "evaluate": "pipeline.training.evaluate",
}
__all__ = [
    "RestoreSpec",
    "SpecError",
    "TrainSpec",
    "evaluate",
    "fit",
    "init_ray",
    "load_spec",
    "model_ref",
    "run_restore",
    "run_training",
]

if TYPE_CHECKING:
    from .job import model_ref, run_restore
    from .ray_env import init_ray
    from .spec import RestoreSpec, SpecError, load_spec
    from .training.evaluate import evaluate
    from .training.loop import fit, run_training
    from .training.spec import TrainSpec


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
