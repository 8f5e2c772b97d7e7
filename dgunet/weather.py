"""Rain streaks with no veil, from a renderer that no training draws: kept for testing.

:func:`add_rain_streaks` models what a camera records of falling drops on a clear, rainy day: no haze,
only streaks. Each drop is exposed while it falls, so its streak tapers at both ends and is brightest where
the drop moved slowest; a drop refracts the light of the whole scene towards the lens, so it is lit by the
scene's average light (bright on a dark background, nearly invisible on a bright sky), not added as white.
Four depth layers in perspective: far streaks are shorter, thinner, fainter and denser; the wind bends the
fall direction across the frame and differs between layers. Streaks are composited over the scene with
their own opacity. Nothing here shares code or parameters with the training renderers of
:mod:`dgunet.degrade`.
"""

from __future__ import annotations

import numpy as np

LAYERS = ((1.0, 0.25), (0.7, 0.5), (0.45, 1.0), (0.25, 2.0))  # (depth scale, relative count)


def add_rain_streaks(
    img: np.ndarray,
    density: float,
    length: int,
    angle: float,
    rng: np.random.Generator,
    *,
    width: float = 1.0,
    brightness: float = 1.0,
    haze: float = 0.0,
) -> np.ndarray:
    """Streak-only rain over ``img`` (float32 ``(H, W, 3)`` in [0, 1]); ``haze`` is ignored (this rain has no
    veil). ``density``: drops per pixel (summed over layers); ``length``, ``width``: of the nearest streaks;
    ``angle``: the mean fall direction (radians, pi/2 straight down)."""
    import cv2

    h, w = img.shape[:2]
    light = float(np.clip(cv2.GaussianBlur(img, (0, 0), 25).mean() * 1.2 + 0.35, 0, 1))  # what a drop refracts
    alpha = np.zeros((h, w), np.float32)
    total = sum(count for _, count in LAYERS)
    for depth, count in LAYERS:
        n = int(density * h * w * count / total)
        tilt = rng.normal(0, 0.12)  # this layer's wind
        bend = rng.normal(0, 0.25)  # the wind's change across the frame (radians per frame width)
        layer = np.zeros((h, w), np.float32)
        for _ in range(n):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            a = angle + tilt + bend * (x / w - 0.5)
            ln = max(3.0, length * depth * rng.uniform(0.7, 1.3))
            _taper(layer, x, y, a, ln, rng.uniform(0.5, 1.0))
        sigma = max(0.3, width * depth * 0.45)
        layer = cv2.GaussianBlur(layer, (0, 0), sigma) * (width * depth * 0.9 + 0.1)
        alpha = 1 - (1 - alpha) * (1 - np.clip(layer * brightness * (0.35 + 0.65 * depth), 0, 1))
    alpha = np.clip(alpha, 0, 0.9)[..., None]
    return np.clip(img * (1 - alpha) + light * alpha, 0, 1).astype(np.float32)


def _taper(layer: np.ndarray, x: float, y: float, angle: float, length: float, peak: float) -> None:
    """Splat one streak on ``layer``: brightness rising and falling along it (a sine of its length), with
    bilinear weights, in place."""
    from .kernels import splat

    t = np.linspace(-0.5, 0.5, max(2, int(length * 2)))
    splat(
        layer, x + t * length * np.cos(angle), y + t * length * np.sin(angle), peak * np.sin(np.pi * (t + 0.5)) ** 0.7
    )
