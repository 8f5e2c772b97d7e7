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
from typing import Any, Literal, get_args

from torch import nn

from .model import ARCHS, DGUNet, DGUNetConfig, DGUNetPlus

Task = Literal["denoise", "deblur", "derain"]
TASKS: tuple[str, ...] = get_args(Task)

# Widths (n_feat, scale_unetfeats, scale_orsnetfeats) of the official release, per task folder.
PRESETS: dict[tuple[str, str], tuple[int, int, int]] = {
    ("deblur", "dgunet"): (80, 48, 32),
    ("deblur", "dgunet_plus"): (96, 48, 32),
    ("denoise", "dgunet"): (80, 48, 32),
    ("denoise", "dgunet_plus"): (80, 40, 32),
    ("derain", "dgunet"): (40, 20, 16),
    ("derain", "dgunet_plus"): (40, 20, 16),
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
# checkpoint given by path): the estimate it reads (the noise level, or for deraining the rain level, as
# the pipeline measures them), the level (8-bit levels) below which an image passes through unrestored
# (None: the model always runs; no blur estimate exists, and deblurring reads the noise level only when a
# spec sets one), and whether lossy files (JPEG, lossy WebP) are restored whatever their estimate. The
# denoising and deraining levels are the bundled models' (their index.json entries say how each was
# chosen, with python bench/gate.py; docs/operations.md, "Runs do no harm").
@dataclass(frozen=True)
class Gate:
    """Which images a restorer should leave alone: those whose estimated degradation is below a level."""

    estimate: Literal["noise", "rain"]  # what is measured on the input: noise sigma or rain level (8-bit levels)
    below: float | None  # an image whose estimate is below this passes through unrestored; None: none passes
    restore_lossy: bool  # JPEG and lossy WebP files are restored whatever their estimate
    chosen_by: str = ""  # how the level was chosen: the measurement, and the command that made it

    def __post_init__(self) -> None:
        if self.estimate not in ("noise", "rain"):
            raise ValueError(f"Expected gate estimate 'noise' or 'rain', but got {self.estimate!r} instead.")


TASK_GATES: dict[str, Gate] = {
    "denoise": Gate("noise", 4.5, False, "the bundled denoiser's level (dgunet.denoise_small)"),
    "deblur": Gate("noise", None, True),
    "derain": Gate("rain", 1.5, False, "the bundled deraining model's level (dgunet.derain_small)"),
}


@dataclass(frozen=True)
class Weights:
    """Trained weights and everything known about them.

    Bundled weights are the entries of ``weights/index.json`` (:meth:`from_entry`, :meth:`to_entry`);
    weights from a checkpoint are described by :func:`~dgunet.create_model` with what the file records,
    and the task's fallback gate (:data:`TASK_GATES`).
    """

    name: str  # bundled: "<arch>.<tag>", e.g. "dgunet.denoise_small"; a checkpoint: its path or URL
    file: str  # bundled: the file name under dgunet/weights/; a checkpoint: its path or URL
    task: str  # "denoise", "deblur" or "derain"
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
