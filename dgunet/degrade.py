"""Synthetic degradations for training and evaluation: noise, blur, rain streaks, JPEG.

All functions take and return float32 RGB arrays ``(H, W, 3)`` in [0, 1] and draw their randomness from
the ``numpy.random.Generator`` they are given, so that a seed reproduces a data set exactly.

* Blur as a real blurry photo has it: camera shake along a random smooth trajectory
  (:func:`shake_kernel`) or defocus (:func:`disk_kernel`), up to about 31 px, then a little sensor noise
  and 8-bit quantisation.
* Camera noise (:mod:`dgunet.camera`): shot and read noise in a raw mosaic, developed forward (demosaiced,
  white-balanced, colour-corrected, gamma and tone curve); the share of noisy images that get it instead
  of white Gaussian noise is ``camera_probability``. Its reference is the same camera's development without
  the noise (:func:`degrade_pair`).
* Rain from two independent renderers, so that a model is not judged only on the one it trained on:
  ``"smear"`` (:func:`add_rain`: sparse seeds smeared along the fall direction, screen-blended, the
  training renderer) and ``"lines"`` (:func:`add_rain_lines`: anti-aliased segments in depth layers,
  blurred and added as light, kept for testing). Both add haze at high density.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .jpeg_damage import archive_jpeg
from .kernels import TRAINING_FAMILIES, splat

KINDS = ("noise", "blur", "rain", "jpeg")
RAIN_RENDERERS = ("smear", "lines", "drops", "layers", "streaks")  # "lines", "streaks": for testing only
MAX_KERNEL = 35
DOWNPOUR = 0.02  # rain seed density at which the haze is full


@dataclass(frozen=True)
class Degradation:
    """What to do to a clean image. Ranges are sampled uniformly per image.

    The training spec's ``degradation`` section is this class (pydantic validates its fields and refuses
    unknown keys through ``__pydantic_config__``; nothing here imports pydantic).
    """

    __pydantic_config__ = {"extra": "forbid"}

    kinds: tuple[str, ...] = ("noise",)  # of noise, blur, rain, jpeg; applied in this order, each with its probability
    clean_probability: float = 0.0  # share of images left clean (only quantised): teaches "do no harm"
    noise_probability: float = 1.0  # share of images that get the noise
    sigma: tuple[float, float] = (0.0, 50.0)  # Gaussian noise std, in 8-bit levels (0-255)
    camera_probability: float = 0.0  # of the noisy images, the share whose noise is a camera's, not AWGN
    camera_shot: tuple[float, float] = (1e-4, 1.2e-2)  # the camera's shot-noise gain, drawn log-uniform
    blur_size: tuple[int, int] = (7, 21)  # kernel size in pixels (odd)
    blur_motion_probability: float = 0.5  # camera shake (random smooth trajectory), else defocus (disk)
    blur_families: tuple[str, ...] = ()  # each image draws one (dgunet.kernels); empty: shake or defocus above
    blur_noise: tuple[float, float] = (0.0, 0.0)  # sensor noise after the blur, sigma in 8-bit levels
    rain_density: tuple[float, float] = (0.002, 0.01)  # fraction of pixels seeding a streak
    rain_length: tuple[int, int] = (10, 30)  # streak length in pixels
    rain_width: tuple[float, float] = (1.0, 1.0)  # streak width in pixels
    rain_brightness: tuple[float, float] = (0.5, 1.0)  # streak brightness (0-1)
    rain_angle: float = 0.4  # the fall direction varies up to this many radians from vertical
    rain_haze: float = 0.0  # veil of light in a downpour (0: none), less in lighter rain
    rain_veil_probability: float = 1.0  # share of rainy images that get the veil at all
    # "smear" or "drops" (training), or "lines" (an independent renderer, kept for testing); a list: each
    # image draws one of them
    rain_renderer: str | tuple[str, ...] = "smear"
    jpeg_quality: tuple[int, int] = (30, 90)  # JPEG quality (1-100)
    jpeg_probability: float = 1.0  # share of images that get the JPEG compression
    jpeg_444_probability: float = 0.0  # share saved with full-resolution chroma (else 4:2:0)
    jpeg_twice_probability: float = 0.0  # share saved once before, at another quality (dgunet.jpeg_damage)
    jpeg_regrid_probability: float = 0.0  # of those, the share whose first save was off the grid or resized
    quantize: bool = True  # round to 8 bits at the end, as a degraded image saved to a PNG is

    def __post_init__(self) -> None:
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"Expected degradation kinds from {KINDS}, but got {k!r} instead.")
        if not set(self.blur_families) <= set(TRAINING_FAMILIES):
            raise ValueError(f"Expected blur_families from {TRAINING_FAMILIES}, but got {self.blur_families} instead.")
        renderers = (self.rain_renderer,) if isinstance(self.rain_renderer, str) else self.rain_renderer
        if not renderers or any(r not in RAIN_RENDERERS for r in renderers):
            raise ValueError(f"Expected rain_renderer in {RAIN_RENDERERS}, but got {self.rain_renderer!r} instead.")
        for name in (
            "sigma",
            "camera_shot",
            "blur_size",
            "blur_noise",
            "rain_density",
            "rain_length",
            "rain_width",
            "rain_brightness",
            "jpeg_quality",
        ):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(f"Expected 0 <= low <= high for {name}, but got {(lo, hi)} instead.")
        for name in (
            "clean_probability",
            "noise_probability",
            "camera_probability",
            "blur_motion_probability",
            "jpeg_probability",
            "jpeg_444_probability",
            "jpeg_twice_probability",
            "jpeg_regrid_probability",
            "rain_haze",
            "rain_veil_probability",
        ):
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


def shake_kernel(size: int, rng: np.random.Generator) -> np.ndarray:
    """Camera shake: a ``size x size`` kernel along a random smooth trajectory, normalised.

    The trajectory is a particle with inertia under small random accelerations, a pull back to its start,
    and now and then a jerk (after Boracchi and Foi, 2012): from nearly straight sweeps to curls. It is
    scaled to span 50-100% of the kernel and splatted with bilinear weights, so the kernel is smooth.
    """
    steps = 3 * size
    erratic = rng.uniform(0.01, 0.15)  # how much the direction wanders
    angle = rng.uniform(0, 2 * np.pi)
    v, pos = np.array([np.cos(angle), np.sin(angle)]), np.zeros(2)
    path = np.empty((steps, 2))
    for t in range(steps):
        acc = rng.normal(0, erratic, 2) - 0.02 * erratic * pos
        if rng.random() < 0.005:  # a jerk of the hand
            acc += rng.normal(0, 0.5, 2)
        v = v + acc
        v /= max(np.linalg.norm(v), 1e-6)
        pos = pos + v
        path[t] = pos
    path -= path.min(axis=0)
    extent = max(float(path.max()), 1e-6)
    path *= (size - 1) * rng.uniform(0.5, 1.0) / extent
    path += ((size - 1) - path.max(axis=0)) / 2  # centred
    k = np.zeros((size + 1, size + 1), np.float64)
    splat(k, path[:, 0], path[:, 1])
    k = k[:size, :size].astype(np.float32)
    return k / k.sum()


def disk_kernel(size: int) -> np.ndarray:
    """A normalised disk of diameter ``size`` (defocus blur), anti-aliased by 4x4 supersampling."""
    c = (size - 1) / 2
    sub = (np.arange(4 * size) + 0.5) / 4 - 0.5
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    inside = (((yy - c) ** 2 + (xx - c) ** 2) <= c * c + 0.5).astype(np.float32)
    k = inside.reshape(size, 4, size, 4).mean(axis=(1, 3))
    return k / k.sum()


def blur(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def add_rain(
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
    """The training renderer: sparse seeds of random brightness smeared along ``angle`` (radians, pi/2
    falls straight down), widened to ``width`` pixels, screen-blended as light; ``haze`` veils the image
    with light (the far rain of a downpour)."""
    import cv2

    seeds = (rng.random(img.shape[:2]) < density).astype(np.float32) * rng.uniform(0.3, 1.0, img.shape[:2])
    streaks = blur(seeds, motion_kernel(length | 1, angle)) * length * 0.5
    if width > 1:
        streaks = cv2.GaussianBlur(streaks, (0, 0), (width - 1) / 2 + 1e-3) * width
    streaks = np.clip(streaks * brightness, 0, 1)[..., None]
    out = 1 - (1 - img) * (1 - 0.85 * streaks)
    return _veil(out, haze, rng)


def add_rain_lines(
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
    """An independent renderer, kept for testing: anti-aliased line segments drawn in three depth layers
    (far ones shorter, thinner, dimmer and more blurred), each segment's direction jittered around
    ``angle``, the layers added to the image as light and clipped; then the same kind of haze."""
    import cv2

    h, w = img.shape[:2]
    layer_sum = np.zeros((h, w), np.float32)
    for depth in (1.0, 0.6, 0.35):
        n = int(density * h * w * depth * 0.5)
        layer = np.zeros((h, w), np.uint8)  # OpenCV anti-aliases lines on 8-bit images only
        for _ in range(n):
            a = angle + rng.normal(0, 0.05)
            ln = max(2.0, length * depth * rng.uniform(0.6, 1.2))
            x, y = rng.uniform(-ln, w + ln), rng.uniform(-ln, h + ln)
            dx, dy = np.cos(a) * ln / 2, np.sin(a) * ln / 2
            p1, p2 = (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy))
            thick = max(1, int(round(width * depth)))
            cv2.line(layer, p1, p2, int(rng.uniform(0.4, 1.0) * 255), thick, cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer.astype(np.float32) / 255.0, (0, 0), 0.5 + (1 - depth) * 1.5)
        layer_sum += layer * depth
    out = np.clip(img + 0.7 * brightness * layer_sum[..., None], 0, 1)
    return _veil(out, haze, rng)


def add_rain_drops(
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
    """A second training renderer, unlike the other two in shape and in light: falling drops as filled
    ellipses, elongated along the fall by the exposure, in two layers of their own direction (wind gusts
    differ near and far), each softened by a motion blur; a drop is not white light added to the scene
    but a lens of it: it shows the scene around it, blurred and brightened, so streaks take the colours of
    what they cross. Then the same kind of haze."""
    import cv2

    h, w = img.shape[:2]
    lens = np.clip(cv2.GaussianBlur(img, (0, 0), 2.0) * rng.uniform(1.1, 1.5) + rng.uniform(0.05, 0.2), 0, 1)
    out = img
    for depth in (1.0, 0.5):
        mask = np.zeros((h, w), np.float32)
        a = angle + rng.normal(0, 0.15)
        n = int(density * h * w * depth * 0.3)
        for _ in range(n):
            ln = max(2.0, length * depth * rng.uniform(0.5, 1.3))
            axes = (int(round(ln / 2)), max(1, int(round(width * depth * rng.uniform(0.4, 0.8)))))
            centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            cv2.ellipse(mask, centre, axes, float(np.degrees(a)), 0, 360, float(rng.uniform(0.3, 1.0)), -1)
        mask = blur(mask, motion_kernel(max(3, int(length * depth * 0.4)) | 1, a))
        mask = np.clip(mask * brightness * (0.6 + 0.4 * depth), 0, 1)[..., None]
        out = out * (1 - mask) + lens * mask
    return _veil(np.clip(out, 0, 1), haze, rng)


def _veil(img: np.ndarray, haze: float, rng: np.random.Generator) -> np.ndarray:
    """Atmospheric veil: a blend towards a bright, slightly blue-grey light."""
    if haze <= 0:
        return img
    light = np.array([0.85, 0.88, 0.92], np.float32) * rng.uniform(0.9, 1.0)
    return img * (1 - haze) + light * haze


def jpeg(img: np.ndarray, quality: int, *, subsampling: str | None = None) -> np.ndarray:
    """``img`` saved as a JPEG by Pillow (libjpeg) at ``quality`` and read back; ``subsampling``: "4:2:0",
    "4:4:4" or None (Pillow's default, 4:2:0)."""
    from PIL import Image

    buf = io.BytesIO()
    extra = {} if subsampling is None else {"subsampling": subsampling}
    Image.fromarray(to_uint8(img)).save(buf, format="JPEG", quality=int(quality), **extra)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def blur_kernel(spec: Degradation, rng: np.random.Generator) -> np.ndarray:
    """A kernel as ``spec`` draws it: camera shake with ``blur_motion_probability``, else defocus."""
    size = min(int(rng.integers(spec.blur_size[0], spec.blur_size[1] + 1)) | 1, MAX_KERNEL)
    if spec.blur_families:
        from .kernels import family_kernel

        return family_kernel(spec.blur_families[int(rng.integers(len(spec.blur_families)))], size, rng)
    return shake_kernel(size, rng) if rng.random() < spec.blur_motion_probability else disk_kernel(size)


def rain(img: np.ndarray, spec: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Rain as ``spec`` draws it, with its renderer; haze grows with density, reaching ``rain_haze`` at a
    downpour's density (:data:`DOWNPOUR`)."""
    density = rng.uniform(*spec.rain_density)
    haze = spec.rain_haze * min(1.0, density / DOWNPOUR) * _happens(spec.rain_veil_probability, rng)
    name = spec.rain_renderer
    if not isinstance(name, str):
        name = name[int(rng.integers(len(name)))] if len(name) > 1 else name[0]
    from .rain_layers import add_rain_layers
    from .weather import add_rain_streaks

    render = {"smear": add_rain, "lines": add_rain_lines, "drops": add_rain_drops, "layers": add_rain_layers}
    render = {**render, "streaks": add_rain_streaks}[name]
    return render(
        img,
        density,
        int(rng.integers(spec.rain_length[0], spec.rain_length[1] + 1)),
        np.pi / 2 + rng.uniform(-spec.rain_angle, spec.rain_angle),
        rng,
        width=rng.uniform(*spec.rain_width),
        brightness=rng.uniform(*spec.rain_brightness),
        haze=haze,
    )


def _happens(probability: float, rng: np.random.Generator) -> bool:
    """A draw with ``probability``; certain and impossible events draw nothing, so that a spec without
    probabilities consumes the generator exactly as before they existed."""
    if probability >= 1 or probability <= 0:
        return probability >= 1
    return bool(rng.random() < probability)


def degrade(clean: np.ndarray, spec: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Apply ``spec`` to ``clean`` (float32 ``(H, W, 3)`` in [0, 1]); returns the same shape and range."""
    return degrade_pair(clean, spec, rng)[0]


def degrade_pair(clean: np.ndarray, spec: Degradation, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(degraded, target)``: :func:`degrade`'s image and what a restorer should make of it. The target is
    ``clean`` itself, except after camera noise: then it is the same camera's development of ``clean``
    without the noise (a camera's photo keeps its demosaicing and colour; the noise alone is the damage)."""
    out, target = clean.astype(np.float32, copy=True), clean
    kinds = () if _happens(spec.clean_probability, rng) else spec.kinds
    for kind in kinds:
        if kind == "noise" and _happens(spec.noise_probability, rng):
            if _happens(spec.camera_probability, rng):
                out, target = _camera(out, target, spec, rng)
            else:
                out = add_noise(out, rng.uniform(*spec.sigma), rng)
        elif kind == "blur":
            out = blur(out, blur_kernel(spec, rng))
            if spec.blur_noise[1] > 0:
                out = add_noise(out, rng.uniform(*spec.blur_noise), rng)
        elif kind == "rain":
            out = rain(out, spec, rng)
        elif kind == "jpeg" and _happens(spec.jpeg_probability, rng):
            out, target = archive_jpeg(out, target, spec, rng)
    if spec.quantize:
        out = to_uint8(out).astype(np.float32) / 255.0
    return out, target


def _camera(
    out: np.ndarray, target: np.ndarray, spec: Degradation, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Camera noise on ``out``; ``target`` developed by the same camera without it, in 8 bits."""
    from .camera import camera_noise, draw_shot, noiseless, random_camera

    cam = random_camera(rng)
    noisy, clean = camera_noise(out, draw_shot(*spec.camera_shot, rng), rng, camera=cam)
    if not np.array_equal(out, target):  # damage before the noise: the reference is of the clean image
        clean = noiseless(target, cam)
    return noisy, to_uint8(clean).astype(np.float32) / 255.0


@dataclass
class DeviceOps:
    """Noise, then a blur, then noise again: what :func:`degrade_split` leaves to the training device for
    one image (0 and None: not that step). Rain and JPEG have no device form, so noise or blur that one of
    them follows is done on the CPU with it."""

    sigma: float = 0.0  # noise before the blur, in 8-bit levels
    kernel: np.ndarray | None = None  # the blur, as :func:`blur` applies it
    sigma_after: float = 0.0  # sensor noise after the blur


def _device_form(pending: list[tuple[str, object]]) -> DeviceOps | None:
    """``pending`` (noise and blur steps, in order) as :class:`DeviceOps`; None where it has no such form
    (two noises before a blur, two blurs)."""
    ops, blurred = DeviceOps(), False
    for kind, arg in pending:
        if kind == "blur" and not blurred and not ops.sigma_after:
            ops.kernel, blurred = arg, True
        elif kind == "noise" and not blurred and not ops.sigma:
            ops.sigma = float(arg)
        elif kind == "noise" and blurred and not ops.sigma_after:
            ops.sigma_after = float(arg)
        else:
            return None
    return ops


def degrade_split(clean: np.ndarray, spec: Degradation, rng: np.random.Generator) -> tuple[np.ndarray, DeviceOps]:
    """:func:`degrade`, with the noise and blur that nothing on the CPU follows left undone: they come back
    as :class:`DeviceOps`, for :func:`dgunet.patches.apply_device_ops` to do on the training device, which
    also quantises. The same draws as :func:`degrade` make the same kinds of image, not the same pixels."""
    if spec.camera_probability > 0:
        raise ValueError(
            "Expected no camera noise with device degradations (it has no device form), but got "
            f"camera_probability={spec.camera_probability} instead."
        )
    if spec.jpeg_regrid_probability > 0:
        raise ValueError(
            "Expected no resized JPEG saves with device degradations (they change the target), but got "
            f"jpeg_regrid_probability={spec.jpeg_regrid_probability} instead."
        )
    out = clean.astype(np.float32, copy=True)
    pending: list[tuple[str, object]] = []

    def on_cpu(img: np.ndarray) -> np.ndarray:
        for kind, arg in pending:
            img = add_noise(img, float(arg), rng) if kind == "noise" else blur(img, arg)
        pending.clear()
        return img

    kinds = () if _happens(spec.clean_probability, rng) else spec.kinds
    for kind in kinds:
        if kind == "noise" and _happens(spec.noise_probability, rng):
            pending.append(("noise", rng.uniform(*spec.sigma)))
        elif kind == "blur":
            pending.append(("blur", blur_kernel(spec, rng)))
            if spec.blur_noise[1] > 0:
                pending.append(("noise", rng.uniform(*spec.blur_noise)))
        elif kind == "rain":
            out = rain(on_cpu(out), spec, rng)
        elif kind == "jpeg" and _happens(spec.jpeg_probability, rng):
            out, _ = archive_jpeg(on_cpu(out), out, spec, rng)
    ops = _device_form(pending)
    if ops is None:
        out, ops = on_cpu(out), DeviceOps()
    return out, ops


def augment(img: np.ndarray, mode: int) -> np.ndarray:
    """One of the 8 flips/rotations (``mode`` in 0..7) of an ``(H, W, ...)`` array."""
    out = np.rot90(img, k=mode % 4)
    return out[:, ::-1] if mode >= 4 else out
