"""Camera noise as a camera makes it: a clean sRGB image taken back to a raw Bayer mosaic, given a
sensor's noise there, and developed forward again.

After Brooks et al., "Unprocessing Images for Learned Raw Denoising" (CVPR 2019), with the variety of
CBDNet (Guo et al. 2019) and BSRGAN's "practical degradation model" (Zhang et al. 2021): each image draws
its own camera.

* **Back to raw** (:func:`unprocess`): the inverse of a tone curve (a blend of identity and smoothstep),
  the inverse of a gamma (2.0-2.6), sRGB to the camera's colour space through a random convex combination
  of four cameras' XYZ matrices, and the inverse of a white balance and a brightening, with highlights
  kept (the gains fade out towards white, as Brooks et al. do, so clipped skies stay white).
* **The sensor** (:func:`sensor_noise`): a Bayer mosaic of one of its four phases, then shot noise (its
  variance proportional to the signal) and read noise (constant), the read level tied to the shot level
  by Brooks et al.'s log-linear fit over real cameras; quantised to 12 bits as a raw file is.
* **Forward** (:func:`develop`): demosaicing by one of three methods (bilinear, OpenCV's edge-aware and
  VNG), which spreads the noise over neighbouring pixels; the white balance and colour matrix, which mix
  it across channels; the gamma and tone curve, which lift it in the shadows.

The noise that comes out is signal-dependent, spatially correlated and correlated across channels: a
white-noise estimator reads a third of it (see ``docs/models.md``). A JPEG after it is the degradation's
``jpeg`` kind. All arrays are float32 RGB ``(H, W, 3)`` in [0, 1]; randomness comes from the generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# XYZ -> camera matrices of four cameras (the DNG colour matrices that Brooks et al. 2019 use).
XYZ_TO_CAMERAS = np.array(
    [
        [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
        [[0.4913, -0.0541, -0.0202], [-0.613, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
        [[0.838, -0.263, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
        [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.097, 0.1581, 0.5181]],
    ],
    np.float64,
)
SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
    np.float64,
)
DEMOSAIC = ("bilinear", "edge_aware", "vng")
RAW_LEVELS = 4095  # a 12-bit raw file
SHOT_RANGE = (1e-4, 1.2e-2)  # Brooks et al.'s range of the shot-noise gain (variance per unit signal)


@dataclass(frozen=True)
class Camera:
    """One camera's development of a raw image: what :func:`unprocess` undoes and :func:`develop` redoes."""

    rgb_to_cam: np.ndarray  # (3, 3), rows sum to 1
    red_gain: float  # white balance
    blue_gain: float
    brightness: float  # the exposure's digital gain
    gamma: float
    tone: float  # 0: no tone curve, 1: smoothstep
    phase: tuple[int, int]  # where the Bayer pattern's red pixel sits in the first 2x2 block: (row, column)
    demosaic: str  # one of DEMOSAIC

    @property
    def gains(self) -> np.ndarray:
        return np.array([self.red_gain, 1.0, self.blue_gain]) * self.brightness


def random_camera(rng: np.random.Generator, *, demosaic: tuple[str, ...] = DEMOSAIC) -> Camera:
    """A camera drawn as Brooks et al. draw theirs, with more variety in gamma, tone curve, Bayer phase and
    demosaicing."""
    weights = rng.uniform(1e-8, 1.0, len(XYZ_TO_CAMERAS))
    xyz_to_cam = np.tensordot(weights / weights.sum(), XYZ_TO_CAMERAS, axes=1)
    rgb_to_cam = xyz_to_cam @ SRGB_TO_XYZ
    rgb_to_cam /= rgb_to_cam.sum(axis=1, keepdims=True)
    return Camera(
        rgb_to_cam=rgb_to_cam,
        red_gain=float(rng.uniform(1.9, 2.4)),
        blue_gain=float(rng.uniform(1.5, 1.9)),
        brightness=float(1.0 / np.clip(rng.normal(0.8, 0.1), 0.5, 1.1)),
        gamma=float(rng.uniform(2.0, 2.6)),
        tone=float(rng.uniform(0.0, 1.0)),
        phase=(int(rng.integers(2)), int(rng.integers(2))),
        demosaic=demosaic[int(rng.integers(len(demosaic)))],
    )


def _tone(x: np.ndarray, t: float) -> np.ndarray:
    return (1 - t) * x + t * x * x * (3 - 2 * x)


def _untone(y: np.ndarray, t: float) -> np.ndarray:
    """The inverse of :func:`_tone` (monotonic for t in [0, 1]), through a table."""
    grid = np.linspace(0.0, 1.0, 1025)
    return np.interp(y, _tone(grid, t), grid).astype(np.float32)


def unprocess(img: np.ndarray, cam: Camera) -> np.ndarray:
    """sRGB ``(H, W, 3)`` in [0, 1] -> the camera's linear raw colours ``(H, W, 3)``, before the mosaic."""
    lin = np.maximum(_untone(np.clip(img, 0, 1), cam.tone), 1e-8) ** cam.gamma
    raw = lin @ cam.rgb_to_cam.T.astype(np.float32)
    gray = raw.mean(axis=-1, keepdims=True)
    highlight = (np.maximum(gray - 0.9, 0) / 0.1) ** 2  # 1 at white: there the gains are not undone
    inverse = (1 / cam.gains).astype(np.float32)
    return np.clip(raw * np.maximum(highlight + (1 - highlight) * inverse, inverse), 0, 1).astype(np.float32)


def mosaic(raw: np.ndarray, phase: tuple[int, int]) -> np.ndarray:
    """The ``(H, W)`` Bayer mosaic of ``raw``: red at ``phase``, blue diagonally from it, green between."""
    h, w, _ = raw.shape
    rows, cols = np.indices((h, w))
    r = ((rows - phase[0]) % 2 == 0) & ((cols - phase[1]) % 2 == 0)
    b = ((rows - phase[0]) % 2 == 1) & ((cols - phase[1]) % 2 == 1)
    channel = np.where(r, 0, np.where(b, 2, 1))
    return np.take_along_axis(raw, channel[..., None], axis=-1)[..., 0]


def sensor_noise(cfa: np.ndarray, shot: float, rng: np.random.Generator, *, read: float | None = None) -> np.ndarray:
    """Shot and read noise on a mosaic in [0, 1], quantised to :data:`RAW_LEVELS`. ``read`` (a variance)
    defaults to Brooks et al.'s fit: ``log(read) = 2.18 log(shot) + 1.2 + N(0, 0.26)``."""
    if read is None:
        read = float(np.exp(2.18 * np.log(shot) + 1.20 + rng.normal(0, 0.26)))
    std = np.sqrt(np.maximum(cfa * shot + read, 0)).astype(np.float32)
    noisy = cfa + rng.standard_normal(cfa.shape, dtype=np.float32) * std
    return np.round(np.clip(noisy, 0, 1) * RAW_LEVELS).astype(np.float32) / RAW_LEVELS


# OpenCV names a Bayer pattern by the second row's second and third pixels; ours by where red sits.
_CV_PATTERN = {(0, 0): "BG", (0, 1): "GB", (1, 0): "GR", (1, 1): "RG"}


def demosaic(cfa: np.ndarray, phase: tuple[int, int], method: str) -> np.ndarray:
    """``(H, W)`` mosaic in [0, 1] -> ``(H, W, 3)`` RGB, by ``method`` (one of :data:`DEMOSAIC`)."""
    import cv2

    suffix = {"bilinear": "", "edge_aware": "_EA", "vng": "_VNG"}[method]
    code = getattr(cv2, f"COLOR_Bayer{_CV_PATTERN[phase]}2RGB{suffix}")
    if method == "vng":  # OpenCV's VNG takes 8-bit mosaics only
        out = cv2.cvtColor(np.round(cfa * 255).astype(np.uint8), code).astype(np.float32) / 255
    else:
        out = cv2.cvtColor(np.round(cfa * 65535).astype(np.uint16), code).astype(np.float32) / 65535
    return out


def develop(cfa: np.ndarray, cam: Camera) -> np.ndarray:
    """A raw mosaic in [0, 1] -> sRGB ``(H, W, 3)`` in [0, 1], as ``cam`` develops it."""
    rgb = demosaic(cfa, cam.phase, cam.demosaic) * cam.gains.astype(np.float32)
    lin = np.clip(rgb @ np.linalg.inv(cam.rgb_to_cam).T.astype(np.float32), 0, 1)
    return np.clip(_tone(lin ** (1 / cam.gamma), cam.tone), 0, 1).astype(np.float32)


def camera_noise(
    img: np.ndarray, shot: float, rng: np.random.Generator, *, camera: Camera | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``img`` through a camera with sensor noise at ``shot`` (a gain in :data:`SHOT_RANGE`).

    Returns:
        ``(noisy, noiseless)``: the developed image with the noise, and the same camera's development of
        the same mosaic without it (the reference that the noise alone is measured against). Both float32
        ``(H, W, 3)`` in [0, 1].
    """
    cam = camera or random_camera(rng)
    cfa = mosaic(unprocess(img, cam), cam.phase)
    return develop(sensor_noise(cfa, shot, rng), cam), develop(_raw_levels(cfa), cam)


def noiseless(img: np.ndarray, cam: Camera) -> np.ndarray:
    """``img`` through ``cam`` without sensor noise: :func:`camera_noise`'s reference."""
    return develop(_raw_levels(mosaic(unprocess(img, cam), cam.phase)), cam)


def _raw_levels(cfa: np.ndarray) -> np.ndarray:
    return (np.round(cfa * RAW_LEVELS) / RAW_LEVELS).astype(np.float32)


def draw_shot(lo: float, hi: float, rng: np.random.Generator) -> float:
    """A shot-noise gain, log-uniform in ``[lo, hi]`` (Brooks et al. draw it so)."""
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
