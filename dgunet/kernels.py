"""Blur kernels beyond camera shake and a plain disk: what lenses, motion and focus really do.

Training draws from :data:`TRAINING_FAMILIES` (with :func:`dgunet.degrade.shake_kernel` and
:func:`dgunet.degrade.disk_kernel`, the families the first models trained on); :func:`spline_kernel` is
a generator that no training draws, kept for testing: a path through random control points, smoothed by
a cubic B-spline, its exposure varying along the way (after Schuler et al., "Learning to Deblur", 2016).

Every kernel is a float32 ``(size, size)`` array with odd ``size``, non-negative, summing to 1.
"""

from __future__ import annotations

import numpy as np

TRAINING_FAMILIES = ("shake", "defocus", "gaussian", "linear", "soft_defocus", "mix")


def splat(canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, values: np.ndarray | float = 1.0) -> None:
    """Add ``values`` at the real positions ``(xs, ys)`` of a 2-D ``canvas`` with bilinear weights, in
    place; what falls off the canvas is dropped. Kernels' paths and rain streaks are drawn with it."""
    values = np.broadcast_to(np.asarray(values, np.float64), np.shape(xs))
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    h, w = canvas.shape
    for dy, dx, f in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.add.at(canvas, (yy[ok], xx[ok]), (values * f)[ok])


def _normalised(k: np.ndarray) -> np.ndarray:
    k = np.clip(k, 0, None).astype(np.float32)
    return k / k.sum()


def gaussian_kernel(size: int, rng: np.random.Generator) -> np.ndarray:
    """An anisotropic Gaussian (a lens's soft focus, atmosphere): sigmas up to a sixth of ``size`` each,
    at a random angle."""
    c = (size - 1) / 2
    s1, s2 = rng.uniform(0.3, 1.0, 2) * max(size / 6, 0.5)
    a = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size] - c
    u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
    return _normalised(np.exp(-0.5 * ((u / s1) ** 2 + (v / s2) ** 2)))


def linear_kernel(size: int, rng: np.random.Generator) -> np.ndarray:
    """Linear motion (a panned camera, a moving subject): a straight anti-aliased segment of 40-100% of
    ``size`` at a random angle, its exposure fading in or out by up to half along it."""
    length = (size - 1) * rng.uniform(0.4, 1.0)
    a = rng.uniform(0, np.pi)
    c = (size - 1) / 2
    k = np.zeros((size + 1, size + 1), np.float64)
    fade = rng.uniform(-0.5, 0.5)
    t = np.linspace(-0.5, 0.5, 8 * size)
    splat(k, c + t * length * np.cos(a), c + t * length * np.sin(a), 1 + fade * 2 * t)
    return _normalised(k[:size, :size])


def soft_defocus_kernel(size: int, rng: np.random.Generator) -> np.ndarray:
    """Defocus as real lenses make it: a disk whose edge is soft (a Gaussian falloff over 5-25% of its
    radius) and whose brightness rises or falls towards the rim (spherical aberration: bright-rimmed
    "soap bubble" or soft-centred bokeh)."""
    c = (size - 1) / 2
    r = max(c, 0.5)
    yy, xx = np.mgrid[0:size, 0:size] - c
    d = np.sqrt(yy * yy + xx * xx) / r
    edge = rng.uniform(0.05, 0.25)
    inside = 1 / (1 + np.exp((d - 1) / edge * 4))
    rim = rng.uniform(-0.6, 0.8)
    return _normalised(inside * (1 + rim * d * d))


def mixed_kernel(size: int, rng: np.random.Generator) -> np.ndarray:
    """Two blurs at once (a shaken, defocused shot): a motion kernel convolved with a defocus one, each of
    up to ``size``, cut to ``size``."""
    import cv2

    from .degrade import disk_kernel

    a = _motion(size, rng)
    b = disk_kernel(_odd(size * rng.uniform(0.2, 0.6))) if rng.random() < 0.5 else gaussian_kernel(size, rng)
    pad = size + b.shape[0]
    canvas = np.zeros((pad, pad), np.float32)
    o = (pad - a.shape[0]) // 2
    canvas[o : o + a.shape[0], o : o + a.shape[1]] = a
    both = cv2.filter2D(canvas, -1, b, borderType=cv2.BORDER_CONSTANT)
    s = (pad - size) // 2
    return _normalised(both[s : s + size, s : s + size])


def _motion(size: int, rng: np.random.Generator) -> np.ndarray:
    from .degrade import shake_kernel

    inner = _odd(size * rng.uniform(0.5, 1.0))
    return shake_kernel(inner, rng) if rng.random() < 0.5 else linear_kernel(inner, rng)


def _odd(x: float) -> int:
    return max(3, int(round(x)) | 1)


def family_kernel(family: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A kernel of ``family`` (one of :data:`TRAINING_FAMILIES`) and odd ``size``."""
    from .degrade import disk_kernel, shake_kernel

    makers = {
        "shake": shake_kernel,
        "defocus": lambda s, _rng: disk_kernel(s),
        "gaussian": gaussian_kernel,
        "linear": linear_kernel,
        "soft_defocus": soft_defocus_kernel,
        "mix": mixed_kernel,
    }
    if family not in makers:
        raise ValueError(f"Expected a blur family in {TRAINING_FAMILIES}, but got {family!r} instead.")
    return makers[family](size, rng)


def spline_kernel(size: int, rng: np.random.Generator) -> np.ndarray:
    """A test generator that no training draws: a path through 4-7 random control points in the kernel's
    box, smoothed by a uniform cubic B-spline, its exposure varying smoothly along it (the hand slows and
    speeds up), splatted with bilinear weights and softened by a Gaussian of 0.5 px (the sensor's pixel)."""
    import cv2

    n = int(rng.integers(4, 8))
    pts = rng.uniform(0, 1, (n, 2)) * (size - 1) * rng.uniform(0.4, 1.0)
    pts += ((size - 1) - pts.max(axis=0) - pts.min(axis=0)) / 2
    ext = np.vstack([pts[:1], pts[:1], pts, pts[-1:], pts[-1:]])
    basis = np.array([[-1, 3, -3, 1], [3, -6, 3, 0], [-3, 0, 3, 0], [1, 4, 1, 0]]) / 6
    samples = []
    for i in range(len(ext) - 3):
        for t in np.linspace(0, 1, 6 * size, endpoint=False):
            samples.append(np.array([t**3, t**2, t, 1]) @ basis @ ext[i : i + 4])
    path = np.array(samples)
    speed = 1 + 0.6 * np.sin(np.linspace(0, rng.uniform(1, 4) * np.pi, len(path)) + rng.uniform(0, 2 * np.pi))
    k = np.zeros((size + 1, size + 1), np.float64)
    splat(k, path[:, 0], path[:, 1], 1 / speed)
    k = cv2.GaussianBlur(k[:size, :size].astype(np.float32), (0, 0), 0.5)
    return _normalised(k)
