"""Where the pass-through gate should sit: the noise estimate of held-out photos against what the model
gains on them, for clean photos, light noise and JPEG.

    python bench/gate.py --clean data/photos/test [--checkpoint W]                # the noise level
    python bench/gate.py --task derain --checkpoint checkpoints/cpu/derain/last.pth  # the rain level
    python bench/gate.py --task derain --clean data/photos/train --crop 384 --checkpoint ...  # to choose by
    python bench/gate.py --task dejpeg --clean data/photos/train --crop 384 --checkpoint ...  # the JPEG step

For each case and image it prints the estimated noise (what the gate sees) and the PSNR of the input and
of the model's output against the clean photo. The gate should pass what the model does not improve
and nothing it does; results go to ``bench/results/gate.jsonl``. The level chosen is the weights'
metadata: the ``gate`` of their ``dgunet/weights/index.json`` entry (``jobs/export_weights.py --gate``),
or for checkpoints of a task, its fallback in ``dgunet.registry.TASK_GATES``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = {
    "denoise": (
        *("clean", "sigma1", "sigma2", "sigma3", "sigma4", "sigma6", "jpeg60", "jpeg90"),
        *("camera1", "camera2", "camera2-jpeg90", "camera3-jpeg90"),
    ),
    "derain": ("clean", "rain-smear", "rain-lines", "rain-streaks", "jpeg60"),
    "dejpeg": ("clean", "jpeg30", "jpeg60", "jpeg80", "jpeg90", "jpeg95"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clean", default="data/photos/test")
    ap.add_argument("--task", choices=sorted(CASES), default="denoise")
    ap.add_argument("--crop", type=int, help="take the centred crop of this side of each image")
    ap.add_argument("--cases", nargs="+", help="a subset of the task's cases (each keeps its own seeds)")
    ap.add_argument("--checkpoint", help="weights: a checkpoint or a bundled name (default: the task's bundled)")
    ap.add_argument("--arch", choices=("dgunet", "dgunet_plus"), help="default: the weights' (else dgunet)")
    ap.add_argument("--n-feat", type=int, help="widths and depth: default the weights' (else the task preset's)")
    ap.add_argument("--scale-unetfeats", type=int)
    ap.add_argument("--scale-orsnetfeats", type=int)
    ap.add_argument("--depth", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=128, help="0: whole images")
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("bench/results/gate.jsonl"))
    args = ap.parse_args(argv)

    import torch

    from dgunet import WEIGHTS, create_model, restore
    from dgunet.tasks import task
    from pipeline.storage import list_images
    from pipeline.training.evaluate import Case, psnr_ssim
    from pipeline.training.loop import load_rgb

    torch.set_num_threads(args.threads)
    model = create_model(
        args.task,
        arch=args.arch,
        weights=args.checkpoint,
        n_feat=args.n_feat,
        scale_unetfeats=args.scale_unetfeats,
        scale_orsnetfeats=args.scale_orsnetfeats,
        depth=args.depth,
    )
    # Which weights, so that rows of successive bundled weights stay apart in the results file.
    bundled = model.weights.name in WEIGHTS
    weights = f"bundled {model.weights.sha256[:12]}" if bundled else args.checkpoint
    tiling = (
        {"max_pixels": 1 << 40} if args.tile == 0 else {"max_pixels": 1, "tile": args.tile, "overlap": args.overlap}
    )
    images = {uri.rsplit("/", 1)[-1]: load_rgb(uri) for uri, _ in list_images(args.clean)}
    if args.crop:
        images = {k: _centre(v, args.crop) for k, v in images.items() if min(v.shape[:2]) >= args.crop}
    estimate = _estimate(task(args.task).gate.estimate)  # what the task's gate reads
    rows = []
    for c_i, name in enumerate(CASES[args.task]):
        if args.cases and name not in args.cases:
            continue
        gains, levels = [], []
        for i_i, (image, clean) in enumerate(sorted(images.items())):
            degraded, known = Case(name).degrade(clean, seed=c_i * 100 + i_i)
            reference = clean if known.reference is None else known.reference  # camera: its noiseless development
            after = psnr_ssim(reference, restore(model, degraded, **tiling))[0]
            before = psnr_ssim(reference, degraded)[0] if name != "clean" else None  # a clean input is perfect
            level = estimate(degraded)
            rows.append(
                {
                    "task": args.task,
                    "case": name,
                    "image": image,
                    "estimate": level,
                    "psnr_in": before,
                    "psnr_out": after,
                }
            )
            gains.append(after - before if before is not None else after)
            levels.append(level)
        what = "PSNR of the output" if name == "clean" else "model gain"
        print(
            f"{name:10s} {estimate.__name__} {min(levels):5.2f}-{max(levels):5.2f} (median {np.median(levels):5.2f})  "
            f"{what} {np.mean(gains):+6.2f} dB (min {min(gains):+6.2f}, max {max(gains):+6.2f})",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        for r in rows:
            f.write(json.dumps({"weights": weights, **r}) + "\n")
    return 0


def _estimate(name: str):
    """The decode stage's measure of estimate ``name`` (pipeline/stages/estimates.py), as a function."""
    from pipeline.quality import degradation_features
    from pipeline.stages.estimates import ESTIMATES

    e = ESTIMATES[name]
    if e.measure is not None:
        return e.measure

    def measure(img: np.ndarray) -> float:
        features = degradation_features(img)
        return float("nan") if features is None else features[e.feature]

    measure.__name__ = name
    return measure


def _centre(img: np.ndarray, side: int) -> np.ndarray:
    y, x = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    return img[y : y + side, x : x + side]


if __name__ == "__main__":
    sys.exit(main())
