"""The names and options a spec may give the library, torch-free: architectures, precisions and
:class:`InferenceOptions` (how :func:`dgunet.restore` runs a model). :mod:`dgunet.model` and
:mod:`dgunet.inference` build on these; a job spec validates against them without loading torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Arch = Literal["dgunet", "dgunet_plus"]
ARCHS: tuple[str, ...] = get_args(Arch)
Precision = Literal["float32", "bfloat16", "float16"]
PRECISION_NAMES: tuple[str, ...] = get_args(Precision)
MULTIPLE, MIN_SIDE = 8, 16  # the network's input sides: multiples of 8, at least 16


@dataclass(frozen=True)
class InferenceOptions:
    """How :func:`dgunet.restore` runs the model."""

    max_pixels: int = 1024 * 1024  # whole-image inference up to this many pixels, tiles above
    tile: int = 512  # tile side (a multiple of 8)
    overlap: int = 64  # pixels shared by neighbouring tiles, blended with a cosine ramp
    tile_batch: int = 1  # tiles per forward pass (more helps GPUs)
    ensemble: bool = False  # average the 8 flips/rotations (x8 compute)
    precision: str = "float32"  # autocast dtype: float32, bfloat16 or float16
    channels_last: bool = True  # faster convolutions on CPU (oneDNN) and on tensor-core GPUs

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_NAMES:
            raise ValueError(f"Expected precision in {PRECISION_NAMES}, but got {self.precision!r} instead.")
        if self.tile % MULTIPLE or self.tile < MIN_SIDE:
            raise ValueError(f"Expected a tile side that is a multiple of 8 and >= 16, but got {self.tile} instead.")
        if not 0 <= self.overlap < self.tile // 2:
            raise ValueError(f"Expected 0 <= overlap < tile / 2, but got {self.overlap} instead.")
