"""JPEG damage as archives hold it: saved at any quality, with 4:2:0 or 4:4:4 chroma, often saved twice.

A photo in an archive was rarely compressed once on a clean 8-pixel grid. A camera or phone saved it
(quality 85-95, usually 4:2:0), then a web service, an editor or a scanner's software resized or cropped it
and saved it again at another quality, so the second compression's blocks sit off the first's grid. This
module draws those histories for training (:func:`archive_jpeg`, the ``jpeg`` kind of
:class:`~dgunet.degrade.Degradation`); the evaluation's JPEG cases use a single compression at a fixed
quality (:func:`dgunet.degrade.jpeg`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .degrade import Degradation

MAX_UPSCALE = 2.0  # a twice-saved image was at most this much larger when it was first saved


def _quality(spec: Degradation, rng: np.random.Generator) -> int:
    return int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1))


def _subsampling(spec: Degradation, rng: np.random.Generator) -> str:
    from .degrade import _happens

    return "4:4:4" if _happens(spec.jpeg_444_probability, rng) else "4:2:0"


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = shape
    smaller = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_CUBIC).clip(0, 1)


def _first_save(
    out: np.ndarray, target: np.ndarray, spec: Degradation, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The earlier of two saves: on the same grid, shifted off it by a crop of 1-7 pixels, or at a larger
    size (the image was resized after it; the target is resized the same way, so it stays reachable)."""
    from .degrade import _happens, jpeg

    q, sub = _quality(spec, rng), _subsampling(spec, rng)
    if not _happens(spec.jpeg_regrid_probability, rng):
        return jpeg(out, q, subsampling=sub), target
    h, w = out.shape[:2]
    if rng.random() < 0.5:  # a crop: the first save's grid starts dy, dx pixels before this image's
        dy, dx = divmod(int(rng.integers(1, 64)), 8)  # any offset but (0, 0)
        padded = np.pad(out, ((dy, 0), (dx, 0), (0, 0)), mode="reflect")
        return jpeg(padded, q, subsampling=sub)[dy:, dx:], target
    scale = rng.uniform(1.1, MAX_UPSCALE)
    big = (round(h * scale), round(w * scale))
    return _resize(jpeg(_resize(out, big), q, subsampling=sub), (h, w)), _resize(_resize(target, big), (h, w))


def archive_jpeg(
    out: np.ndarray, target: np.ndarray, spec: Degradation, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``(damaged, target)``: ``out`` saved as a JPEG at a quality from ``spec.jpeg_quality``, with 4:4:4
    chroma with ``spec.jpeg_444_probability`` (else 4:2:0); saved once before that with
    ``spec.jpeg_twice_probability``, off the final grid or at another size with
    ``spec.jpeg_regrid_probability``. Float32 ``(H, W, 3)`` arrays in [0, 1]; the shape is kept. A spec
    whose extra probabilities are 0 draws exactly what a single compression always drew."""
    from .degrade import _happens, jpeg

    if _happens(spec.jpeg_twice_probability, rng):
        out, target = _first_save(out, target, spec, rng)
    q = _quality(spec, rng)
    return jpeg(out, q, subsampling=_subsampling(spec, rng)), target
