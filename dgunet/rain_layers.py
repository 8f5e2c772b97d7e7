"""A training renderer for rain that is streaks, whether or not a veil comes with it.

:func:`add_rain_layers` draws one to three layers of streaks, each a depth: a near layer of long, wide,
bright streaks and farther ones shorter, thinner, dimmer and denser. Each layer falls in its own direction
(one direction for all of them, or wind that differs between layers), and each is sharp or softened by a
blur across the fall. A layer is laid over the scene as light in one of two ways, drawn per image: added
(screen-blended white, as the ``"smear"`` renderer), or as an opaque streak of a light near the scene's own
brightness, which on a bright sky can be darker than what it covers. The veil comes from the caller
(``haze``, drawn by :func:`dgunet.degrade.rain` with ``rain_veil_probability``), so streaks appear with and
without one.
"""

from __future__ import annotations

import numpy as np


def add_rain_layers(
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
    """Layered streak rain over ``img`` (float32 ``(H, W, 3)`` in [0, 1]). ``density``: streaks per pixel,
    shared among the layers (more to the far ones); ``length``, ``width``, ``brightness``: of the nearest
    layer; ``angle``: its fall direction (radians, pi/2 straight down)."""
    import cv2

    from .degrade import _veil, blur, motion_kernel

    h, w = img.shape[:2]
    layers = int(rng.integers(1, 4))
    depths = np.sort(rng.uniform(0.3, 1.0, layers))[::-1]
    depths[0] = 1.0
    windy = rng.random() < 0.5
    over = rng.random() < 0.5  # opaque streaks of the scene's light, else added white light
    light = float(np.clip(img.mean() * rng.uniform(0.6, 1.3) + rng.uniform(0.0, 0.4), 0.15, 1.0))
    alpha = np.zeros((h, w), np.float32)
    shares = (1 / depths) / (1 / depths).sum()  # far layers hold more, smaller drops
    for depth, share in zip(depths, shares):
        a = angle + (rng.normal(0, 0.2) if windy else 0.0)
        seeds = rng.random((h, w)) < density * share
        layer = seeds.astype(np.float32) * rng.uniform(0.3, 1.0, (h, w)).astype(np.float32)
        size = max(3, int(length * depth)) | 1
        layer = blur(layer, motion_kernel(size, a)) * size * 0.5
        spread = max(0.0, width * depth - 1) / 2 + rng.uniform(0, 0.8)  # thickness and softness
        if spread > 0.05:
            layer = cv2.GaussianBlur(layer, (0, 0), spread) * max(1.0, width * depth)
        alpha = 1 - (1 - alpha) * (1 - np.clip(layer * brightness * (0.3 + 0.7 * depth), 0, 1))
    alpha = np.clip(alpha, 0, 0.9)[..., None]
    if over:
        out = img * (1 - alpha) + light * alpha
    else:
        out = 1 - (1 - img) * (1 - 0.85 * alpha)
    return _veil(np.clip(out, 0, 1).astype(np.float32), haze, rng)
