"""Evaluating a model next to the degraded input and classical baselines, on the same files.

For synthetic noise the degraded images are made once per (image, sigma) from a fixed seed, rounded to
8 bits and saved as PNG, and every method reads those same files: ours, OpenCV's non-local means
(``fastNlMeansDenoisingColored`` with h = 0.8 sigma) and CBM3D (the ``bm3d`` package, told the true
sigma). Paired data (``input/`` and ``target/``) is evaluated as it is. PSNR and SSIM come from
scikit-image, on 8-bit RGB.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

METHODS = ("noisy", "nlm", "cbm3d", "ours")


@dataclass
class EvalResult:
    per_image: list[dict] = field(default_factory=list)  # image, sigma, method, psnr, ssim, seconds

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{sigma: {method: {"psnr", "ssim", "seconds"}}}`` averaged over images."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for r in self.per_image:
            out.setdefault(str(r["sigma"]), {}).setdefault(r["method"], {"psnr": [], "ssim": [], "seconds": []})
            for k in ("psnr", "ssim", "seconds"):
                out[str(r["sigma"])][r["method"]][k].append(r[k])
        return {s: {m: {k: float(np.mean(v)) for k, v in d.items()} for m, d in ms.items()} for s, ms in out.items()}

    def markdown(self) -> str:
        table = self.table()
        methods = [m for m in METHODS if any(m in t for t in table.values())]
        head = "| sigma | " + " | ".join(f"{m} PSNR / SSIM" for m in methods) + " |"
        lines = [head, "|" + "---|" * (len(methods) + 1)]
        for sigma, row in table.items():
            cells = [f"{row[m]['psnr']:.2f} / {row[m]['ssim']:.3f}" if m in row else "" for m in methods]
            lines.append(f"| {sigma} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"mean": self.table(), "per_image": self.per_image}, indent=1)


def psnr_ssim(clean: np.ndarray, img: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    return (
        float(peak_signal_noise_ratio(clean, img, data_range=255)),
        float(structural_similarity(clean, img, data_range=255, channel_axis=-1)),
    )


def nlm(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    h = 0.8 * sigma
    bgr = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(noisy[..., ::-1]), None, h, h, 7, 21)
    return bgr[..., ::-1]


def cbm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    out = bm3d.bm3d_rgb(noisy.astype(np.float64) / 255.0, sigma / 255.0)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def noisy_copy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """The degraded file as it is saved: Gaussian noise, clipped and rounded to 8 bits, through PNG."""
    from PIL import Image

    from dgunet.degrade import add_noise, to_uint8

    noisy = to_uint8(add_noise(clean.astype(np.float32) / 255.0, sigma, np.random.default_rng(seed)))
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="PNG")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def evaluate_noise(
    images: dict[str, np.ndarray],
    sigmas: Sequence[float],
    methods: dict[str, Callable[[np.ndarray, float], np.ndarray]],
    *,
    seed: int = 0,
    save_noisy: Callable[[str, float, np.ndarray], None] | None = None,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Run every method on every (image, sigma) and score it against the clean image."""
    result = EvalResult()
    for s_i, sigma in enumerate(sigmas):
        for i_i, (name, clean) in enumerate(sorted(images.items())):
            noisy = noisy_copy(clean, sigma, seed=seed * 1000 + s_i * 100 + i_i)
            if save_noisy:
                save_noisy(name, sigma, noisy)
            for method, fn in {"noisy": lambda x, s: x, **methods}.items():
                t0 = time.perf_counter()
                out = fn(noisy, sigma)
                seconds = time.perf_counter() - t0
                p, s = psnr_ssim(clean, out)
                result.per_image.append(
                    {"image": name, "sigma": sigma, "method": method, "psnr": p, "ssim": s, "seconds": seconds}
                )
            log(
                f"sigma {sigma:g} {name}: "
                + ", ".join(f"{r['method']} {r['psnr']:.2f}" for r in result.per_image[-(len(methods) + 1) :])
            )
    return result
