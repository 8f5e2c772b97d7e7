"""Fit and validate the noise estimate that the gate, the stats and ``task: auto`` read
(:func:`pipeline.quality.noise_level`): white Gaussian noise and a camera's noise alike.

Samples: 256 px crops of the training photos (``data/photos/train``) with white Gaussian noise (sigma
1-50), camera noise (:mod:`dgunet.camera`, the shot gain log-uniform over Brooks et al.'s range), either
one saved as a JPEG (quality 60-95) a third of the time, or nothing; the true level is the standard
deviation of the residual against the image without the noise (0 for clean crops). The fit is least
squares in log(1 + level) over :func:`~pipeline.quality.noise_scales`. Validation: the held-out
test crops and routing cells (``data/photos/test``, ``data/photos/routing``), degraded from seeds no fit
draws, reporting for each kind the share of images whose estimate is within 25% of the true level, for
the fit and for scikit-image's white-noise estimator alone.

    python bench/noise_estimate.py --out results/noise_estimate
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

KINDS = ("white", "camera", "white+jpeg", "camera+jpeg", "clean")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, default=Path("data/photos/train"))
    ap.add_argument("--heldout", type=Path, nargs="+", default=[Path("data/photos/test"), Path("data/photos/routing")])
    ap.add_argument("--samples", type=int, default=1500, help="fit samples")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("results/noise_estimate"))
    return ap.parse_args(argv)


def _load(folder: Path) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]


def degrade(clean: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """``clean`` (uint8) degraded as ``kind``; the 8-bit result and its true noise level."""
    from dgunet.camera import SHOT_RANGE, camera_noise, draw_shot
    from dgunet.degrade import add_noise, jpeg, to_uint8

    u = clean.astype(np.float32) / 255
    if kind == "clean":
        return clean, 0.0
    if kind.startswith("white"):
        noisy, reference = add_noise(u, rng.uniform(1, 50), rng), u
    else:
        noisy, reference = camera_noise(u, draw_shot(*SHOT_RANGE, rng), rng)
    if kind.endswith("+jpeg"):
        noisy = jpeg(noisy, int(rng.integers(60, 96)))
    out = to_uint8(noisy)
    return out, float(np.std(out.astype(np.float64) - to_uint8(reference).astype(np.float64)))


def samples(images: list[np.ndarray], n: int, crop: int, seed: int):
    """``n`` (kind, scales, white estimate, true level) tuples from random crops of ``images``."""
    from pipeline.quality import noise_scales

    rng = np.random.default_rng(seed)
    weights = np.array([0.3, 0.3, 0.12, 0.13, 0.15])
    for _ in range(n):
        img = images[int(rng.integers(len(images)))]
        s = min(crop, *img.shape[:2])
        y, x = rng.integers(0, img.shape[0] - s + 1), rng.integers(0, img.shape[1] - s + 1)
        kind = KINDS[int(rng.choice(len(KINDS), p=weights))]
        degraded, true = degrade(img[y : y + s, x : x + s], kind, rng)
        scales = noise_scales(degraded)
        yield kind, scales, float(scales[0]), true


def fit(rows, ridge: float = 1e-2) -> np.ndarray:
    from pipeline.quality import noise_design

    x = np.array([noise_design(r[1]) for r in rows])
    y = np.log1p([r[3] for r in rows])
    penalty = ridge * len(rows) * np.eye(x.shape[1])
    penalty[0, 0] = 0  # the intercept is not shrunk
    return np.linalg.solve(x.T @ x + penalty, x.T @ y)


def estimate(coef: np.ndarray, scales: np.ndarray) -> float:
    from pipeline.quality import noise_design

    return float(max(0.0, np.expm1(coef @ noise_design(scales))))


def score(rows, coef: np.ndarray) -> dict[str, dict[str, float]]:
    """Per kind: share within 25% of the true level (noisy kinds), mean estimate (clean), for the fit and
    for the white estimator."""
    out = {}
    for kind in KINDS:
        sel = [r for r in rows if r[0] == kind]
        if not sel:
            continue
        fitted = np.array([estimate(coef, r[1]) for r in sel])
        white = np.array([r[2] for r in sel])
        true = np.array([r[3] for r in sel])
        if kind == "clean":
            out[kind] = {"n": len(sel), "fit_mean": float(fitted.mean()), "fit_p95": float(np.percentile(fitted, 95))}
            out[kind] |= {"white_mean": float(white.mean()), "white_p95": float(np.percentile(white, 95))}
            continue
        out[kind] = {"n": len(sel), "fit_within25": _within(fitted, true), "white_within25": _within(white, true)}
        out[kind] |= {
            "fit_ratio_median": float(np.median(fitted / true)),
            "white_ratio_median": float(np.median(white / true)),
        }
    return out


def _within(estimate: np.ndarray, true: np.ndarray, tolerance: float = 0.25) -> float:
    return float(np.mean(np.abs(estimate - true) <= tolerance * true))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train = _load(args.train)
    rows = [r for r in samples(train, args.samples, args.crop, seed=0) if r[1] is not None]
    coef = fit(rows)
    heldout = [img for folder in args.heldout for img in _load(folder)]
    # Every held-out image once per kind, from seeds the fit never draws.
    test = [r for k in range(3) for r in samples(heldout, len(heldout) * 2, args.crop, seed=10_000 + k)]
    test = [r for r in test if r[1] is not None]
    result = {"coef": [float(c) for c in coef], "fit": score(rows, coef), "heldout": score(test, coef)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "noise_estimate.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
