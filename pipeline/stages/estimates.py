"""What the decode stage measures on each input, one row per estimate: its stats column, its key among
:func:`~pipeline.quality.degradation_features` (``task: auto`` measures every estimate in that one
pass), and the function that measures it alone, where one is cheaper than that pass (a single-task run
measures the noise level and the estimate its gate reads, from that pass where it has no function).

A gate's estimate (``dgunet.tasks.ESTIMATES``, named by each task's row and by weights' metadata) must be
a row here; tests/pipeline/test_tasks.py holds that. Adding an estimate: its measure in
:func:`~pipeline.quality.degradation_features` (or a function of its own), a row here, and its
``<name>_before`` column in :data:`pipeline.rows.STATS_SCHEMA`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..quality import noise_level, rain_level
from ..rows import Col


@dataclass(frozen=True)
class Estimate:
    """One measure of an input: where it is kept, and how it is measured."""

    column: str  # the batch and stats column that holds it, "<name>_before"
    feature: str  # its key in degradation_features' measures
    measure: Callable[[np.ndarray], float | None] | None  # alone, on (H, W, C) pixels; None: from the features


ESTIMATES: dict[str, Estimate] = {
    "noise": Estimate(Col.NOISE_BEFORE, "noise_level", noise_level),  # sigma, 8-bit levels
    "rain": Estimate(Col.RAIN_BEFORE, "rain", rain_level),  # thin bright streaking, 8-bit levels
    "blur": Estimate(Col.BLUR_BEFORE, "blur", None),  # blur_effect, 0 sharp to 1 flat
    "blockiness": Estimate(Col.BLOCKINESS_BEFORE, "blockiness", None),  # JPEG grid strength, about 1 without
    "jpeg_step": Estimate(Col.JPEG_STEP_BEFORE, "jpeg_step", None),  # JPEG's luma quantization step, 1: none
}
COLUMNS = tuple(e.column for e in ESTIMATES.values())
