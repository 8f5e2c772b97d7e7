"""The measuring stage: what degrades each decoded image, for the gate, the router and the stats.

It follows decoding as a stage of its own (Ray Data fuses the two, so it costs nothing): decoding says
what the pixels are, this stage what is wrong with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..quality import degradation_features, noise_level
from ..rows import OK, Col, pixels_of
from .estimates import COLUMNS, ESTIMATES

if TYPE_CHECKING:
    from ..routing import Router


def measure_batch(
    batch: dict[str, np.ndarray], *, estimates: tuple[str, ...] = (), router: Router | None = None
) -> dict[str, np.ndarray]:
    """Ray Data stage over decoded rows: ``noise_before`` (the estimated noise level, NaN when the image is
    too small to tell) and the ``<name>_before`` column of each of ``estimates``
    (:data:`~pipeline.stages.estimates.ESTIMATES`; NaN for the others), which the model stage's gate reads
    and the stats keep; with ``router`` (``task: auto``), every estimate from one pass of
    :func:`~pipeline.quality.degradation_features`, and the image's ``route`` and ``route_score``. Rows
    that failed pass through with their columns empty."""
    n = len(batch[Col.INPUT_URI])
    columns: dict[str, Any] = {col: np.full(n, np.nan) for col in COLUMNS}
    columns.update({Col.ROUTE: np.full(n, "", dtype=object), Col.ROUTE_SCORE: np.full(n, np.nan)})
    for i in range(n):
        if batch[Col.STATUS][i] != OK:
            continue
        pixels = pixels_of(batch[Col.PIXELS][i], batch[Col.SHAPE][i], batch[Col.DTYPE][i])
        for col, value in _measures(pixels, estimates=estimates, router=router).items():
            columns[col][i] = value
    return {**batch, **columns}


def _estimate(measure, pixels: np.ndarray):
    """``measure(pixels)``, NaN where it cannot tell: the gate then restores the image and the stats stay empty."""
    try:
        level = measure(pixels)
    except (ValueError, MemoryError):
        level = None
    return np.nan if level is None else level


def _feature(features: Any, key: str) -> float:
    """``features[key]``, NaN where the image was too small to measure (``features`` is then NaN)."""
    return features[key] if isinstance(features, dict) else np.nan


def _measures(pixels: np.ndarray, *, estimates: tuple[str, ...], router: Router | None) -> dict[str, Any]:
    """One image's row values (a column left out stays NaN): ``noise_before`` and those of ``estimates``;
    with ``router``, every estimate from one pass of :func:`~pipeline.quality.degradation_features`,
    ``route`` and ``route_score``."""
    if router is None:
        wanted = [ESTIMATES[name] for name in dict.fromkeys(("noise", *estimates))]
        values = {e.column: _estimate(e.measure, pixels) for e in wanted if e.measure is not None}
        if any(e.measure is None for e in wanted):  # read from the measures of one degradation_features pass
            features = _estimate(degradation_features, pixels)
            values |= {e.column: _feature(features, e.feature) for e in wanted if e.measure is None}
        return values
    features = _estimate(degradation_features, pixels)
    if isinstance(features, dict):
        values = {e.column: features[e.feature] for e in ESTIMATES.values()}
    else:  # too small to tell: a restorer would change nothing worth it
        features, values = None, {Col.NOISE_BEFORE: _estimate(noise_level, pixels)}
    values[Col.ROUTE], values[Col.ROUTE_SCORE] = router.classify(features)
    return values
