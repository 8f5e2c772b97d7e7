"""Synthetic degradations for training and evaluation: noise, blur, rain streaks, JPEG.

All functions take and return float32 RGB arrays ``(H, W, 3)`` in [0, 1] and draw their randomness from
the ``numpy.random.Generator`` they are given, so that a seed reproduces a data set exactly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

KINDS = ("noise", "blur", "rain", "jpeg")


@dataclass(frozen=True)
class Degradation:
    """What to do to a clean image. Ranges are sampled uniformly per image.

    The training spec's ``degradation`` section is this class (pydantic validates its fields and refuses
    unknown keys through ``__pydantic_config__``; nothing here imports pydantic).
    """

    __pydantic_config__ = {"extra": "forbid"}

    kinds: tuple[str, ...] = ("noise",)  # applied in this order, each with its probability below
    clean_probability: float = 0.0  # share of images left clean (only quantised): teaches "do no harm"
    noise_probability: float = 1.0
    sigma: tuple[float, float] = (0.0, 50.0)  # Gaussian noise std, in 8-bit levels (0-255)
    blur_size: tuple[int, int] = (7, 21)  # kernel size in pixels (odd)
    blur_motion_probability: float = 0.5  # motion (line) kernel, else defocus (disk)
    rain_density: tuple[float, float] = (0.002, 0.01)  # fraction of pixels seeding a streak
    rain_length: tuple[int, int] = (10, 30)
    jpeg_quality: tuple[int, int] = (30, 90)
    jpeg_probability: float = 1.0
    quantize: bool = True  # round to 8 bits at the end, as a degraded image saved to a PNG is

    def __post_init__(self) -> None:
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"Expected degradation kinds from {KINDS}, but got {k!r} instead.")
        for name in ("sigma", "blur_size", "rain_density", "rain_length", "jpeg_quality"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"Expected 0 <= low <= high for {name}, but got {(lo, hi)} instead.")
        for name in ("clean_probability", "noise_probability", "blur_motion_probability", "jpeg_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"Expected {name} in [0, 1], but got {getattr(self, name)} instead.")


def add_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise with std ``sigma`` in 8-bit levels, clipped to [0, 1]."""
    return np.clip(img + rng.standard_normal(img.shape, dtype=np.float32) * (sigma / 255.0), 0, 1)


def motion_kernel(size: int, angle: float) -> np.ndarray:
    """A normalised line of length ``size`` at ``angle`` radians."""
    k = np.zeros((size, size), np.float32)
    c = (size - 1) / 2
    for t in np.linspace(-c, c, 4 * size):
        x, y = int(round(c + t * np.cos(angle))), int(round(c + t * np.sin(angle)))
        k[y, x] = 1
    return k / k.sum()


def disk_kernel(size: int) -> np.ndarray:
    """A normalised disk of diameter ``size`` (defocus blur)."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    k = (((yy - c) ** 2 + (xx - c) ** 2) <= c * c + 0.5).astype(np.float32)
    return k / k.sum()


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def add_rain(img: np.ndarray, density: float, length: int, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Bright, semi-transparent streaks: sparse seeds smeared along ``angle``, screen-blended."""
    seeds = (rng.random(img.shape[:2]) < density).astype(np.float32) * rng.uniform(0.5, 1.0)
    streaks = blur(seeds, motion_kernel(length | 1, angle)) * length * 0.5
    streaks = np.clip(streaks, 0, 1)[..., None]
    return 1 - (1 - img) * (1 - 0.8 * streaks)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _happens(probability: float, rng: np.random.Generator) -> bool:
    """A draw with ``probability``; certain and impossible events draw nothing, so that a spec without
    probabilities consumes the generator exactly as before they existed."""
    if probability >= 1 or probability <= 0:
        return probability >= 1
    return bool(rng.random() < probability)


def degrade(clean: np.ndarray, spec: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Apply ``spec`` to ``clean`` (float32 ``(H, W, 3)`` in [0, 1]); returns the same shape and range."""
    out = clean.astype(np.float32, copy=True)
    kinds = () if _happens(spec.clean_probability, rng) else spec.kinds
    for kind in kinds:
        if kind == "noise" and _happens(spec.noise_probability, rng):
            out = add_noise(out, rng.uniform(*spec.sigma), rng)
        elif kind == "blur":
            size = int(rng.integers(spec.blur_size[0], spec.blur_size[1] + 1)) | 1
            if rng.random() < spec.blur_motion_probability:
                kernel = motion_kernel(size, rng.uniform(0, np.pi))
            else:
                kernel = disk_kernel(size)
            out = blur(out, kernel)
        elif kind == "rain":
            length = int(rng.integers(spec.rain_length[0], spec.rain_length[1] + 1))
            angle = np.pi / 2 + rng.uniform(-0.4, 0.4)
            out = add_rain(out, rng.uniform(*spec.rain_density), length, angle, rng)
        elif kind == "jpeg" and _happens(spec.jpeg_probability, rng):
            out = jpeg(out, int(rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1)))
    if spec.quantize:
        out = to_uint8(out).astype(np.float32) / 255.0
    return out


def augment(img: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 flips/rotations (``mode`` in 0..7) of an ``(H, W, ...)`` array."""
    out = np.rot90(img, k=mode % 4)
    return out[:, ::-1] if mode >= 4 else out
