"""Model names, task presets and the weights that ship with the package.

Everything about a variant is declared once here: the widths of each official task folder, and for each
bundled weights file (an entry of ``weights/index.json``, read and written by :class:`Weights`) its task,
architecture, widths, parameter count, sha256, default pass-through gate, how it was trained and its
measured quality. :func:`dgunet.create_model` turns a task and weights into a model.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from torch import nn

from .model import ARCHS, DGUNet, DGUNetConfig, DGUNetPlus
from .tasks import NAMES as TASKS
from .tasks import TABLE, Gate

Task = str  # a name of dgunet.tasks.TABLE
# Widths (n_feat, scale_unetfeats, scale_orsnetfeats) per (task, arch): the task table's presets.
PRESETS: dict[tuple[str, str], tuple[int, int, int]] = {
    (t.name, arch): widths for t in TABLE for arch, widths in t.presets.items()
}


def make_config(
    arch: str = "dgunet",
    *,
    task: str | None = None,
    n_feat: int | None = None,
    scale_unetfeats: int | None = None,
    scale_orsnetfeats: int | None = None,
    depth: int = 5,
) -> DGUNetConfig:
    """The :class:`DGUNetConfig` of ``arch``: a task preset's widths, any of them overridden."""
    if arch not in ARCHS:
        raise ValueError(f"Expected arch in {ARCHS}, but got {arch!r} instead.")
    if task is not None and task not in TASKS:
        raise ValueError(f"Expected task in {TASKS}, but got {task!r} instead.")
    widths = PRESETS[(task or "denoise", arch)]
    given = (n_feat, scale_unetfeats, scale_orsnetfeats)
    n_feat, scale_unetfeats, scale_orsnetfeats = (g if g is not None else w for g, w in zip(given, widths))
    return DGUNetConfig(
        arch=arch,
        n_feat=n_feat,
        scale_unetfeats=scale_unetfeats,
        scale_orsnetfeats=scale_orsnetfeats,
        depth=depth,
    )


def model_from_config(cfg: DGUNetConfig) -> nn.Module:
    return DGUNet(cfg) if cfg.arch == "dgunet" else DGUNetPlus(cfg)


def num_params(model: nn.Module) -> int:
    """Unique parameters (shared modules counted once, as the official figures are)."""
    return sum(p.numel() for p in model.parameters())


# The pass-through gate's fallback per task, for weights whose metadata has no gate of their own (a
# checkpoint given by path): the task table's gates (dgunet/tasks.py). The bundled models' levels are in
# their index.json entries, with how each was chosen (python bench/gate.py; docs/operations.md).
TASK_GATES: dict[str, Gate] = {t.name: t.gate for t in TABLE}


@dataclass(frozen=True)
class Weights:
    """Trained weights and everything known about them.

    Bundled weights are the entries of ``weights/index.json`` (:meth:`from_entry`, :meth:`to_entry`);
    weights from a checkpoint are described by :func:`~dgunet.create_model` with what the file records,
    and the task's fallback gate (:data:`TASK_GATES`).
    """

    name: str  # bundled: "<arch>.<tag>", e.g. "dgunet.denoise_small"; a checkpoint: its path or URL
    file: str  # bundled: the file name under dgunet/weights/; a checkpoint: its path or URL
    task: str  # a task of dgunet.tasks.TABLE
    config: DGUNetConfig  # the network the weights fit: arch, widths, depth
    num_params: int  # unique parameters of that network (shared modules once), as num_params counts them
    sha256: str  # of the file's bytes
    gate: Gate  # which images to pass through unrestored by default
    recipe: dict[str, Any] = field(default_factory=dict)  # command, spec, data, steps, wall time
    metrics: dict[str, Any] = field(default_factory=dict)  # measured quality, with how it was measured
    inference: dict[str, Any] = field(default_factory=dict)  # recommended InferenceOptions fields

    def path(self):
        """The file of bundled weights, inside the package."""
        return resources.files("dgunet") / "weights" / self.file

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Weights:
        """Read an ``index.json`` entry; an unknown or missing key is an error that names it."""
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default_factory is dataclasses.MISSING]
        unknown, missing = sorted(set(entry) - set(names)), [n for n in required if n not in entry]
        if unknown or missing:
            raise ValueError(
                f"Expected weights entry keys {names}, but got {entry.get('name', '?')!r} with "
                f"unknown {unknown} and missing {missing} instead."
            )
        return cls(**{**entry, "config": DGUNetConfig(**entry["config"]), "gate": Gate(**entry["gate"])})

    def to_entry(self) -> dict[str, Any]:
        """The ``index.json`` entry of these weights (plain JSON data; :meth:`from_entry` reads it back)."""
        return dataclasses.asdict(self)


def _load_registry() -> dict[str, Weights]:
    """Read the bundled weights' metadata (``weights/index.json``, one entry per file)."""
    index = resources.files("dgunet") / "weights" / "index.json"
    if not index.is_file():
        return {}
    return {w.name: w for w in map(Weights.from_entry, json.loads(index.read_text()))}


WEIGHTS: dict[str, Weights] = _load_registry()


class NoBundledModelError(LookupError):
    """No weights for the task ship with the package."""


def default_weights(task: str) -> Weights:
    """The bundled default weights of ``task``.

    Raises:
        NoBundledModelError: none ship for ``task``.
    """
    if task not in TASKS:
        raise ValueError(f"Expected task in {TASKS}, but got {task!r} instead.")
    for w in WEIGHTS.values():
        if w.task == task:
            return w
    shipped = sorted({w.task for w in WEIGHTS.values()}) or "none"
    raise NoBundledModelError(
        f"No trained default model for task {task!r} ships with this package (bundled tasks: {shipped}). "
        "Train one with jobs/train.py and give its checkpoint: create_model(task, weights=path)."
    )


def describe(cfg: DGUNetConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
