"""Per-image quality measures, from scikit-image and OpenCV rather than formulas of our own.

* Without a reference: the estimated Gaussian noise level (``skimage.restoration.estimate_sigma``, a
  wavelet median-absolute-deviation estimator) and sharpness (variance of OpenCV's Laplacian), before and
  after, and the rain level (:func:`rain_level`) before, on a central crop of at most ``CROP`` x ``CROP``
  pixels so that huge images cost the same.
* What degrades an image, for routing it (:func:`degradation_features`): the noise and rain levels, blur
  (scikit-image's ``blur_effect`` and :func:`edge_falloff`), JPEG blockiness (:func:`blockiness`) and
  contrast, from one crop.
* With a reference (paired evaluation): PSNR and SSIM (``skimage.metrics``) of input and output against it.
"""

from __future__ import annotations

import numpy as np

CROP = 1024


def _unit_color(img: np.ndarray) -> np.ndarray:
    """Colour channels (alpha dropped) as float32 in [0, 1], ``(H, W, C)``."""
    color = img[..., :1] if img.shape[2] in (1, 2) else img[..., :3]
    scale = 65535.0 if img.dtype == np.uint16 else 255.0
    return color.astype(np.float32) / scale


def center_crop(img: np.ndarray, size: int = CROP) -> np.ndarray:
    """The central ``size`` x ``size`` pixels (all of a smaller image)."""
    h, w = img.shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return img[y : y + size, x : x + size]


def white_noise_level(img: np.ndarray) -> float | None:
    """scikit-image's wavelet estimate of a white Gaussian noise's sigma in 8-bit levels (0-255), on the
    central crop; None for images too small to tell. Blind to noise that demosaicing spread over
    neighbouring pixels (a camera's): see :func:`noise_level`."""
    from skimage.restoration import estimate_sigma

    u = center_crop(_unit_color(img))
    if min(u.shape[:2]) < 8:
        return None
    return float(estimate_sigma(u, channel_axis=-1, average_sigmas=True)) * 255.0


def _halve(u: np.ndarray) -> np.ndarray:
    """A 2x2 box average (an odd last row or column dropped): white noise's sigma halves, noise correlated
    over neighbouring pixels (a camera's, demosaiced) much less."""
    h, w = u.shape[0] // 2 * 2, u.shape[1] // 2 * 2
    u = u[:h, :w]
    return 0.25 * (u[0::2, 0::2] + u[1::2, 0::2] + u[0::2, 1::2] + u[1::2, 1::2])


def noise_scales(img: np.ndarray) -> np.ndarray | None:
    """The wavelet estimate (8-bit levels) on the central crop at full, half, quarter and eighth scale,
    and of its luma at full and half scale: ``(6,)``, or None for an image too small. White noise's
    estimate halves from scale to scale, a camera's falls more slowly and a JPEG takes the finest scale
    away; :func:`noise_level` combines them."""
    from skimage.restoration import estimate_sigma

    u = center_crop(_unit_color(img))
    if min(u.shape[:2]) < 64:
        return None
    pyramid = [u]
    for _ in range(3):
        pyramid.append(_halve(pyramid[-1]))
    levels = [estimate_sigma(x, channel_axis=-1, average_sigmas=True) for x in pyramid]
    levels += [estimate_sigma(pyramid[0].mean(axis=2)), estimate_sigma(pyramid[1].mean(axis=2))]
    return np.nan_to_num(np.asarray(levels, np.float64)) * 255.0  # NaN: a flat channel, no noise seen


def noise_design(scales: np.ndarray) -> np.ndarray:
    """:data:`NOISE_FIT`'s terms: 1, the logs of :func:`noise_scales` and their pairwise products."""
    x = np.log1p(np.asarray(scales, np.float64))
    i, j = np.triu_indices(len(x))
    return np.concatenate([[1.0], x, x[i] * x[j]])


# noise_level's fit: log(1 + level) = NOISE_FIT . noise_design(noise_scales), ridge least squares over
# white and camera noise (with and without JPEG) and clean crops of the training photos; measured on
# held-out photos in results/noise_estimate/README.md (python bench/noise_estimate.py).
NOISE_FIT = (
    -0.03316,
    0.02003,
    0.64151,
    0.6815,
    0.10177,
    -0.1446,
    0.47175,
    0.07369,
    -0.23351,
    -0.05658,
    0.09288,
    0.19159,
    -0.06621,
    -0.05306,
    0.18999,
    0.18136,
    -0.09294,
    0.10162,
    -0.12017,
    -0.21932,
    0.02953,
    0.2135,
    -0.31374,
    0.03215,
    0.0642,
    0.05299,
    -0.22608,
    -0.12069,
)


def noise_level(img: np.ndarray) -> float | None:
    """Estimated noise level in 8-bit levels (0-255): the standard deviation of white Gaussian noise or of
    a camera's (signal-dependent, demosaiced, colour-mixed) alike, from :func:`noise_scales` combined by
    :data:`NOISE_FIT`; :func:`white_noise_level` for images smaller than 32 px; None below 8 px."""
    scales = noise_scales(img)
    return white_noise_level(img) if scales is None else combined_noise_level(scales)


def combined_noise_level(scales: np.ndarray) -> float:
    """:func:`noise_scales`' four estimates combined by :data:`NOISE_FIT` (8-bit levels)."""
    return float(max(0.0, np.expm1(np.dot(NOISE_FIT, noise_design(scales)))))


RAIN_ANGLES = 7  # fall directions tried, evenly from -RAIN_TILT to +RAIN_TILT radians off vertical
RAIN_TILT = 0.5
RAIN_LENGTH = 15  # pixels of the line filters
RAIN_TOPHAT = 5  # a streak is thinner than this many pixels


def _line_kernel(length: int, angle: float) -> np.ndarray:
    """A normalised ``length``-pixel line through the centre at ``angle`` radians (0: horizontal)."""
    k = np.zeros((length, length), np.float32)
    c = length // 2
    for t in np.linspace(-c, c, 4 * length):
        k[int(round(c + t * np.sin(angle))), int(round(c + t * np.cos(angle)))] = 1
    return k / k.sum()


def rain_level(img: np.ndarray) -> float | None:
    """How much thin, bright, parallel streaking an image holds, in 8-bit levels (0 for most photos
    without rain; None for images too small to tell).

    Rain is light added in thin streaks that fall in one direction. The luma's white top-hat keeps what
    is brighter than its surroundings and thinner than :data:`RAIN_TOPHAT` pixels; averaging it along a
    line of each candidate fall direction keeps streaks in that direction, averaging across keeps
    isolated dots and texture. The level is the largest mean excess of along over across, over the
    directions within :data:`RAIN_TILT` of vertical. Bright thin texture of one direction (fences, grass)
    scores too, and noise scores about 1.4 at sigma 15: the thresholds are chosen per model (bench/gate.py).
    """
    u = center_crop(_unit_color(img))
    if min(u.shape[:2]) < RAIN_LENGTH:
        return None
    return streaks(_luma(u))[0]


def streaks(luma: np.ndarray) -> tuple[float, float]:
    """:func:`rain_level` of a luma ``(H, W)`` in [0, 1], and how much of it lies along the fall rather
    than across it, both in 8-bit levels.

    Along minus across averages to zero (both filters keep the mean), so the level, its mean positive
    part, equals its mean negative part: it measures how directional the thin bright structure is, not
    which way it runs. The second measure, ``excess``, is the root mean square of the positive part
    (streaks along the fall: a few pixels far above their surroundings) minus that of the negative part
    (streaks across it, spread thin): 0.5 to 7.4 on the held-out routing set's rain, -3.0 to 0.9 on its
    clean cells, near 0 for noise, and below 0 where the thin bright structure runs across the fall (the
    light between reeds, ripples).
    """
    import cv2

    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (RAIN_TOPHAT, RAIN_TOPHAT))
    tophat = cv2.morphologyEx(luma, cv2.MORPH_TOPHAT, disk)
    level, excess = -1.0, 0.0
    for off in np.linspace(-RAIN_TILT, RAIN_TILT, RAIN_ANGLES):
        along = cv2.filter2D(tophat, -1, _line_kernel(RAIN_LENGTH, np.pi / 2 + off), borderType=cv2.BORDER_REFLECT)
        across = cv2.filter2D(tophat, -1, _line_kernel(RAIN_LENGTH, off), borderType=cv2.BORDER_REFLECT)
        diff = along - across
        positive = np.maximum(diff, 0)
        mean = float(positive.mean())
        if mean > level:
            negative = np.maximum(-diff, 0)
            level = mean
            excess = float(np.sqrt(np.mean(positive * positive)) - np.sqrt(np.mean(negative * negative)))
    return max(level, 0.0) * 255.0, excess * 255.0


def _luma(u: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of ``(H, W, C)`` unit colour, ``(H, W)`` float32."""
    return np.ascontiguousarray(u[..., 0] if u.shape[2] == 1 else u @ np.array([0.299, 0.587, 0.114], np.float32))


BLOCK = 8  # the JPEG block side


def blockiness(luma: np.ndarray) -> float:
    """How much stronger the steps between neighbouring pixels are on one column (and row) of every
    :data:`BLOCK` than on the others: about 1 for an image that never went through JPEG, 1.5 to 8 for a
    JPEG at quality 20 to 80. Steps are averaged per phase of the 8-pixel grid and the strongest phase is
    divided by the median one, so the grid is found wherever a crop starts. ``luma``: ``(H, W)`` in [0, 1].
    """
    steps = _steps_per_phase(luma)
    if steps is None:
        return 1.0
    # 1/1000 of the range keeps a flat image (no steps at all) at 1
    across, down = ((s.max() + 1e-3) / (np.median(s) + 1e-3) for s in steps)
    return float(np.sqrt(across * down))


def _steps_per_phase(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean step between neighbouring columns, then rows, at each phase of the :data:`BLOCK` grid
    (phase ``k``: between pixel ``k`` and ``k + 1`` of a block); None for an image under two blocks."""
    out = []
    for axis in (1, 0):
        steps = np.abs(np.diff(luma, axis=axis)).mean(axis=1 - axis)
        n = len(steps) // BLOCK * BLOCK
        if n == 0:
            return None
        out.append(steps[:n].reshape(-1, BLOCK).mean(axis=0))
    return out[0], out[1]


def _dct_basis(n: int = BLOCK) -> np.ndarray:
    """The orthonormal DCT-II matrix of JPEG's blocks: row ``k`` is frequency ``k``."""
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2 / n)
    basis[0] /= np.sqrt(2)
    return basis


JPEG_FREQS = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0))  # the lowest AC frequencies, quantized most finely
JPEG_MAX_STEP = 48
JPEG_MIN_COEFFICIENTS = 30  # fewer coefficients off zero than this say nothing of a step
# A step is found where the grid's periodicity is above JPEG_ON_GRID and above the shifted grid's by
# JPEG_OVER_OFF_GRID: a smooth gradient gives every block the same coefficients, periodic on both grids.
JPEG_ON_GRID, JPEG_OVER_OFF_GRID = 0.5, 0.3


def _block_dct(levels: np.ndarray, x: int, y: int) -> np.ndarray:
    """The 3x3 lowest frequencies of the DCT of every whole 8x8 block from column ``x``, row ``y`` of
    ``levels`` (8-bit scale): ``(rows, columns, 3, 3)``."""
    tail = levels[y:, x:]
    h, w = tail.shape[0] // BLOCK * BLOCK, tail.shape[1] // BLOCK * BLOCK
    blocks = (tail[:h, :w] - 128.0).reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK)
    low = _dct_basis()[:3]
    return np.einsum("ui,aibj,vj->abuv", low, blocks, low, optimize=True)


def _periodicity(coefficients: np.ndarray, step: int, minimum: int) -> float:
    """How closely the coefficients that quantization did not round to zero sit on multiples of ``step``:
    1 exactly on them, near 0 at random (0 where fewer than ``minimum`` are left)."""
    kept = coefficients[np.abs(coefficients) > step / 2]
    if len(kept) < max(1, minimum):
        return 0.0
    return float(np.abs(np.mean(np.exp(2j * np.pi * kept / step))))


def jpeg_quantization(luma: np.ndarray) -> tuple[float, float]:
    """Traces that JPEG's quantization left in a luma ``(H, W)`` in [0, 1], measured on the 8x8 grid
    (found as :func:`blockiness` finds it) against the grid shifted by half a block, which sees the same
    picture without the quantization (after Fan and de Queiroz, IEEE TIP 2003):

    * ``zeros``: how much larger the share of the lowest AC coefficients near zero is on the grid than off
      it: within 0.02 of 0 for an image that never went through JPEG, mostly 0.1 to 0.5 at quality 30 to
      60, flat sky included, where quantization leaves nothing else;
    * ``step``: the quantization step of the lowest AC frequencies (the median over :data:`JPEG_FREQS`):
      the largest step on whose multiples the grid's coefficients sit and the shifted grid's do not; 1
      where none is found. About 10 at quality 60 and 20 at quality 30 (the standard tables), 2 at 90.
    """
    steps = _steps_per_phase(luma)
    if steps is None:
        return 0.0, 1.0
    x, y = ((int(np.argmax(s)) + 1) % BLOCK for s in steps)  # a block starts after the strongest step
    levels = luma.astype(np.float32) * 255.0  # Rec. 601 luma: JPEG's Y
    on = _block_dct(levels, x, y)
    off = _block_dct(levels, (x + BLOCK // 2) % BLOCK, (y + BLOCK // 2) % BLOCK)
    if on.size == 0 or off.size == 0:
        return 0.0, 1.0
    ac = np.ones((3, 3), bool)
    ac[0, 0] = False
    zeros = float(np.mean(np.abs(on[:, :, ac]) < 0.5) - np.mean(np.abs(off[:, :, ac]) < 0.5))
    found = []
    for u, v in JPEG_FREQS:
        a, b = on[:, :, u, v].ravel(), off[:, :, u, v].ravel()
        step = 1
        for q in range(JPEG_MAX_STEP, 1, -1):  # the largest: every divisor of the true step fits too
            score = _periodicity(a, q, JPEG_MIN_COEFFICIENTS)
            if score > JPEG_ON_GRID and score - _periodicity(b, q, 1) > JPEG_OVER_OFF_GRID:
                step = q
                break
        found.append(step)
    return zeros, float(np.median(found))


EDGE_PERCENTILE = 99.5  # the strongest gradients: an image's edges, rather than its texture or noise


def edge_falloff(luma: np.ndarray) -> tuple[float, float, float]:
    """How much steeper the strongest edges get at half and at a quarter of the resolution: the log ratios
    of the :data:`EDGE_PERCENTILE` gradient magnitude (Sobel) at half size to full size, and at a quarter
    to half. A sharp step stays as steep (about 0); an edge blurred over ``w`` pixels doubles in steepness
    while ``w`` is more than a pixel or two (up to log 2 = 0.69); noise makes full size steeper
    (negative). Third, the steepest edges at a quarter of the resolution themselves (per quarter-size
    pixel, [0, 1] intensities): how much structure there is that blur could have softened, whatever the
    blur and noise. ``luma``: ``(H, W)`` in [0, 1]."""
    import cv2

    def steepest(img: np.ndarray) -> float:
        gx, gy = cv2.Sobel(img, cv2.CV_32F, 1, 0), cv2.Sobel(img, cv2.CV_32F, 0, 1)
        return float(np.percentile(np.sqrt(gx * gx + gy * gy), EDGE_PERCENTILE)) + 1e-4

    half = cv2.resize(luma, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    quarter = cv2.resize(half, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    full, h, q = steepest(luma), steepest(half), steepest(quarter)
    return float(np.log(h / full)), float(np.log(q / h)), q


DEGRADATION_FEATURES = (
    "noise",
    "rain",
    "rain_excess",
    "blur",
    "blockiness",
    "jpeg_zeros",
    "jpeg_step",
    "falloff2",
    "falloff4",
    "structure",
    "contrast",
    "noise_level",
)


def degradation_features(img: np.ndarray) -> dict[str, float] | None:
    """The measures that tell what degrades ``img``, on its central crop (None: smaller than 32 px).

    ``noise`` and ``rain``: :func:`white_noise_level` and :func:`rain_level` (8-bit levels); ``noise_level``:
    :func:`noise_level` (what the stats and the gate read; the white estimate on crops under 64 px);
    ``rain_excess``: the second measure of :func:`streaks`; ``blur``: scikit-image's ``blur_effect`` of the
    luma (Crete et al. 2007: 0 sharp, 1 flat); ``blockiness``: :func:`blockiness`; ``jpeg_zeros`` and ``jpeg_step``:
    :func:`jpeg_quantization`; ``falloff2``, ``falloff4`` and ``structure``: :func:`edge_falloff`;
    ``contrast``: the luma's standard deviation ([0, 1] intensities), near 0 for a flat picture.
    """
    from skimage.measure import blur_effect

    crop = center_crop(img)
    if min(crop.shape[:2]) < 32:
        return None
    luma = _luma(_unit_color(crop))
    falloff2, falloff4, structure = edge_falloff(luma)
    scales = noise_scales(crop)
    white = white_noise_level(crop) if scales is None else float(scales[0])
    zeros, step = jpeg_quantization(luma)
    rain, rain_excess = streaks(luma)
    return {
        "noise": np.nan if white is None else white,
        "noise_level": (np.nan if white is None else white) if scales is None else combined_noise_level(scales),
        "rain": rain,
        "rain_excess": rain_excess,
        "blur": float(blur_effect(luma)),
        "blockiness": blockiness(luma),
        "jpeg_zeros": zeros,
        "jpeg_step": step,
        "falloff2": falloff2,
        "falloff4": falloff4,
        "structure": structure,
        "contrast": float(luma.std()),
    }


def sharpness(img: np.ndarray) -> float | None:
    import cv2

    u = center_crop(_unit_color(img)).mean(axis=2)
    if min(u.shape) < 3:
        return None
    return float(cv2.Laplacian(u, cv2.CV_32F).var())


def psnr(reference: np.ndarray, image: np.ndarray, *, data_range: float) -> float:
    """Peak signal-to-noise ratio (dB) of ``image`` against ``reference``: arrays of one shape whose values
    span ``data_range`` (1.0 for [0, 1] floats, 255 for 8-bit levels). The one PSNR of the project: the
    stats, the evaluation and training's validation take it. Computed in float64; identical images: inf.

    >>> psnr(np.zeros((2, 2)), np.full((2, 2), 0.1), data_range=1.0)
    20.0
    """
    diff = np.asarray(reference, np.float64) - np.asarray(image, np.float64)
    mse = float(np.mean(diff * diff))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def paired(restored: np.ndarray, degraded: np.ndarray, reference: np.ndarray) -> dict[str, float | None]:
    """PSNR (dB) and SSIM of ``degraded`` and ``restored`` against ``reference`` (same shape)."""
    from skimage.metrics import structural_similarity

    ref = _unit_color(reference)
    if ref.shape != _unit_color(restored).shape:
        raise ValueError(f"Expected a reference of shape {restored.shape}, but got {reference.shape} instead.")
    out: dict[str, float | None] = {}
    for name, img in (("before", degraded), ("after", restored)):
        u = _unit_color(img)
        out[f"psnr_{name}"] = psnr(ref, u, data_range=1.0)
        small = min(ref.shape[:2]) < 7
        out[f"ssim_{name}"] = None if small else float(structural_similarity(ref, u, data_range=1.0, channel_axis=-1))
    return out


def no_reference(
    restored: np.ndarray, degraded: np.ndarray, *, noise_before: float | None = None, same: bool = False
) -> dict[str, float | None]:
    """Noise and sharpness before and after. ``noise_before``: already estimated (the decode stage does,
    for the gate); ``same``: the image was passed through, so after equals before."""
    before = {
        "noise_before": noise_before if noise_before is not None else noise_level(degraded),
        "sharpness_before": sharpness(degraded),
    }
    if same:
        return {**before, "noise_after": before["noise_before"], "sharpness_after": before["sharpness_before"]}
    return {**before, "noise_after": noise_level(restored), "sharpness_after": sharpness(restored)}
