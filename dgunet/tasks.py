"""The tasks, one row each: everything that differs between denoising, deblurring and deraining.

A task is data, not branches. Its row names the estimate its pass-through gate reads, the router's classes
sent to it, the cases and baselines it is evaluated on, what its run report ranks images by, its preset
widths, and how its training validates. The spec's task names, ``auto``'s per-task weights, the gate's
levels, the decode stage's estimates, the report, evaluation and the router's mapping all read this table:

>>> [t.name for t in TABLE]
['denoise', 'deblur', 'derain', 'dejpeg']
>>> task("derain").gate.estimate
'rain'
>>> task_of_route("blur")
'deblur'

This module imports neither torch nor anything of the pipeline, so that reading a spec stays light.
Adding a task is adding a row here, and its weights (``weights/index.json``); docs/contributing.md lists
the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# The estimates a gate can read, each measured on the input by the decode stage and kept in the stats
# column ``<name>_before`` (pipeline/stages/estimates.py says how each is measured), and what each says.
ESTIMATES: dict[str, str] = {
    "noise": "estimated noise sigma (8-bit levels)",
    "rain": "estimated rain level (8-bit levels)",
    "jpeg_step": "JPEG quantization step of the lowest luma frequencies (1: no JPEG traces; about 2 at "
    "quality 90, 10 at 60, 20 at 30)",
}


@dataclass(frozen=True)
class Gate:
    """Which images a restorer should leave alone: those whose estimated degradation is below a level."""

    estimate: str  # what is measured on the input, a key of ESTIMATES
    below: float | None  # an image whose estimate is below this passes through unrestored; None: none passes
    restore_lossy: bool  # JPEG and lossy WebP files are restored whatever their estimate
    chosen_by: str = ""  # how the level was chosen: the measurement, and the command that made it

    def __post_init__(self) -> None:
        if self.estimate not in ESTIMATES:
            raise ValueError(f"Expected gate estimate in {tuple(ESTIMATES)}, but got {self.estimate!r} instead.")


@dataclass(frozen=True)
class Task:
    """One restoration task: a row of :data:`TABLE`."""

    name: str  # as specs, weights and stats rows spell it
    gate: Gate  # the fallback gate of weights that declare none (a checkpoint given by path)
    presets: Mapping[str, tuple[int, int, int]]  # arch -> (n_feat, scale_unetfeats, scale_orsnetfeats)
    routes: tuple[str, ...]  # the router's classes whose images ``task: auto`` sends here
    ranking: str  # the stats column that orders a run report's worst and best images without references
    cases: tuple[str, ...]  # the evaluation's cases (pipeline/training/evaluate.py, Case)
    baselines: tuple[str, ...]  # the classical methods it is compared with on them
    # The training's validation set: these fields of the spec's degradation replaced, so that runs compare
    # on one fixed degradation ("noise" in kinds: at the spec's data.val_sigma)
    validation: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "presets", MappingProxyType(dict(self.presets)))
        object.__setattr__(self, "validation", MappingProxyType(dict(self.validation)))


_CAMERA = ("camera1", "camera2", "camera3", "camera2-jpeg90", "camera3-jpeg90")

TABLE: tuple[Task, ...] = (
    Task(
        "denoise",
        Gate("noise", 4.5, False, "the bundled denoiser's level (dgunet.denoise_small)"),
        presets={"dgunet": (80, 48, 32), "dgunet_plus": (80, 40, 32)},  # the official release's widths
        routes=("noise",),
        ranking="noise_after",
        cases=("sigma15", "sigma25", "sigma50", "clean", "jpeg30", "jpeg60", *_CAMERA),
        baselines=("nlm", "cbm3d", "ffdnet", "cbm3d_estimated", "ffdnet_estimated"),
        validation={"kinds": ("noise",), "clean_probability": 0.0, "noise_probability": 1.0},
    ),
    Task(
        "deblur",
        Gate("noise", None, True),  # no blur estimate gates it; a spec may set a noise level
        presets={"dgunet": (80, 48, 32), "dgunet_plus": (96, 48, 32)},
        routes=("blur",),
        ranking="sharpness_after",
        cases=("blur-shake", "blur-defocus", "blur-spline", "clean"),
        baselines=("unsharp", "wiener", "richardson_lucy"),
    ),
    Task(
        "derain",
        Gate("rain", 1.5, False, "the bundled deraining model's level (dgunet.derain_small)"),
        presets={"dgunet": (40, 20, 16), "dgunet_plus": (40, 20, 16)},
        routes=("rain",),
        ranking="noise_after",
        cases=("rain-smear", "rain-lines", "rain-streaks", "clean"),
        baselines=("median", "bilateral", "guided"),
    ),
    Task(
        "dejpeg",  # JPEG blocking, ringing and colour bleeding
        Gate("jpeg_step", 3.0, False, "passes what its validation gained nothing on (docs/models.md)"),
        presets={"dgunet": (80, 48, 32), "dgunet_plus": (80, 40, 32)},
        routes=("jpeg",),
        ranking="noise_after",
        cases=("jpeg30", "jpeg60", "jpeg90", "clean"),
        baselines=("deblock",),
        validation={"kinds": ("jpeg",), "clean_probability": 0.0, "jpeg_probability": 1.0, "jpeg_quality": (40, 40)}
        | {"jpeg_twice_probability": 0.0, "jpeg_444_probability": 0.0},
    ),
)

TASKS: dict[str, Task] = {t.name: t for t in TABLE}
NAMES: tuple[str, ...] = tuple(TASKS)


def task(name: str) -> Task:
    """The row of task ``name``."""
    if name not in TASKS:
        raise ValueError(f"Expected a task in {NAMES}, but got {name!r} instead.")
    return TASKS[name]


def task_of_route(route: str) -> str | None:
    """The task that ``task: auto`` sends the router's class ``route`` to; None: the image passes (clean, or
    a class no task takes)."""
    return next((t.name for t in TABLE if route in t.routes), None)
