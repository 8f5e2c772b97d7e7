"""The training job's spec, built from the restore spec's parts (:mod:`pipeline.spec`).

The same strict sections and architecture section, and the same loader (:mod:`pipeline.spec_loader`):
dotted-key overrides, credentials refused, local paths made absolute, every problem named by its dotted key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from dgunet.degrade import Degradation

from ..spec import ArchSpec, StrictModel, Task
from ..spec_loader import read_yaml, validate_spec

_PATH_KEYS = (("data", "train"), ("checkpoint", "uri"), ("checkpoint", "init"))


class DataSpec(StrictModel):
    """The training images, and the validation set held out of them."""

    train: str = Field(description="prefix of clean images (or of input/ and target/ when paired)")
    paired: bool = Field(False, description="train on real input/ and target/ pairs instead of synthetic degradations")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="fraction of sources held out for validation")
    val_patch: int = Field(128, ge=16, description="side of the validation crops, in pixels")
    val_per_image: int = Field(4, ge=1, description="validation crops per held-out image")
    val_sigma: float = Field(25.0, ge=0, description="noise level of the validation set (denoising)")
    max_side: int | None = Field(None, ge=64, description="downscale larger training images to this side")
    scale: tuple[float, float] = Field(
        (1.0, 1.0), description="crops are drawn this many times larger (log-uniform) and downscaled to the patch"
    )
    device_degradations: bool = Field(
        False,
        description="add noise and blur on the training device (a GPU: the blur as a grouped convolution) where "
        "no rain or JPEG follows them; the loader threads do the rest",
    )


class OptimSpec(StrictModel):
    """The optimisation: steps, batches and patches, learning-rate schedule, precision."""

    steps: int = Field(10000, ge=1, description="training steps in all; the cosine anneals over them")
    batch_size: int = Field(8, ge=1, description="per worker")
    patch: int = Field(64, ge=16, description="side of the training crops, in pixels")
    # Progressive patches: from each (start_step, patch, batch_size) on, train on those. Global operations
    # (instance norm, channel attention, mergeblock) see whole-image statistics at test time, so later
    # phases use larger patches; the first phase's small patches buy many cheap early steps.
    progressive: tuple[tuple[int, int, int], ...] = Field(
        (), description="[start_step, patch, batch_size] phases: from each start_step on, train on those"
    )
    lr: float = Field(2e-4, gt=0, description="Adam's learning rate after the warm-up")
    lr_min: float = Field(1e-6, ge=0, description="the learning rate the cosine anneals to")
    warmup_steps: int = Field(500, ge=0, description="steps of linear warm-up")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam's betas")
    weight_decay: float = Field(0.0, ge=0, description="Adam's weight decay")
    edge_weight: float = Field(0.0, ge=0, description="0.05 for deblur/derain in the paper, 0 for denoise")
    channels_last: bool = Field(True, description="channels_last memory format (faster convolutions)")
    precision: Literal["float32", "bfloat16"] = Field("float32", description="autocast of forward passes")
    compile: Literal["none", "default", "reduce-overhead"] = Field(
        "none",
        description="torch.compile the training steps' model (reduce-overhead: CUDA graphs, for a launch-bound "
        "GPU); where compiling or capturing fails, training goes on eagerly and the log says why",
    )

    def phase(self, step: int) -> tuple[int, int]:
        """``(patch, batch_size)`` at ``step``."""
        patch, batch = self.patch, self.batch_size
        for start, p, b in sorted(self.progressive):
            if step >= start:
                patch, batch = p, b
        return patch, batch


class CheckpointSpec(StrictModel):
    """Where the checkpoints and the history go, and what training starts from."""

    uri: str = Field(description="folder (any fsspec URL) for last.pth and history.jsonl")
    every_steps: int = Field(250, ge=1, description="validate, log and save every this many steps")
    init: str | None = Field(None, description="weights to start from when there is no last.pth to resume")


class TrainResources(StrictModel):
    """The Ray Train workers, and the threads that feed them."""

    workers: int = Field(1, ge=1, description="data-parallel workers (Ray Train; --local runs one)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    cpus_per_worker: float = Field(2, gt=0, description="CPUs Ray reserves for each worker (also its torch threads)")
    loader_threads: int = Field(0, ge=0, description="threads drawing batches ahead of the model (0: none)")


class TrainSpec(StrictModel):
    """The training job's spec (jobs/train.py)."""

    task: Task = Field("denoise", description="what the network learns to restore; picks the preset widths")
    model: ArchSpec = ArchSpec()
    data: DataSpec
    degradation: Degradation = Degradation()
    optim: OptimSpec = OptimSpec()
    checkpoint: CheckpointSpec
    resources: TrainResources = TrainResources()
    seed: int = Field(0, description="seed of the training batches (crops, degradations) and of the validation set")

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainSpec:
        """Read a YAML training spec, apply ``overrides`` (dotted keys, e.g. ``{"optim.steps": 10}``), validate."""
        return validate_spec(cls, read_yaml(path, overrides), source=str(path), path_keys=_PATH_KEYS)
