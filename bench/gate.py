"""Where the pass-through gate should sit: the noise estimate of held-out photos against what the model
gains on them, for clean photos, light noise and JPEG.

    python bench/gate.py --clean data/photos/test [--checkpoint W --n-feat 16 ...]

For each case and image it prints the estimated noise (what the gate sees) and the PSNR of the input and
of the model's output against the clean photo. The gate should pass what the model does not improve
and nothing it does; results go to ``bench/results/gate.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = ("clean", "sigma1", "sigma2", "sigma3", "sigma4", "sigma6", "jpeg60", "jpeg90")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clean", default="data/photos/test")
    ap.add_argument("--checkpoint", help="weights (default: the bundled denoiser)")
    ap.add_argument("--n-feat", type=int, default=16)
    ap.add_argument("--scale-unetfeats", type=int, default=8)
    ap.add_argument("--scale-orsnetfeats", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=128, help="0: whole images")
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("bench/results/gate.jsonl"))
    args = ap.parse_args(argv)

    import torch

    from dgunet import build_model, load_checkpoint, load_pretrained, restore
    from pipeline.stages.quality import noise_level
    from pipeline.storage import list_images
    from pipeline.training.evaluate import Case, psnr_ssim
    from pipeline.training.loop import load_rgb

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        model = build_model(
            "dgunet", n_feat=args.n_feat, scale_unetfeats=args.scale_unetfeats, scale_orsnetfeats=args.scale_orsnetfeats
        )
        load_checkpoint(model, args.checkpoint)
        model.eval()
    else:
        model = load_pretrained("denoise")
    # Which weights, so that rows of successive bundled weights stay apart in the results file.
    weights = args.checkpoint or f"bundled {model.weights.sha256[:12]}"
    tiling = (
        {"max_pixels": 1 << 40} if args.tile == 0 else {"max_pixels": 1, "tile": args.tile, "overlap": args.overlap}
    )
    images = {uri.rsplit("/", 1)[-1]: load_rgb(uri) for uri, _ in list_images(args.clean)}
    rows = []
    for c_i, name in enumerate(CASES):
        gains, levels = [], []
        for i_i, (image, clean) in enumerate(sorted(images.items())):
            degraded, _ = Case(name).degrade(clean, seed=c_i * 100 + i_i)
            after = psnr_ssim(clean, restore(model, degraded, **tiling))[0]
            before = psnr_ssim(clean, degraded)[0] if name != "clean" else None  # a clean input is perfect
            level = noise_level(degraded)
            rows.append({"case": name, "image": image, "noise_estimate": level, "psnr_in": before, "psnr_out": after})
            gains.append(after - before if before is not None else after)
            levels.append(level)
        what = "PSNR of the output" if name == "clean" else "model gain"
        print(
            f"{name:8s} noise estimate {min(levels):5.2f}-{max(levels):5.2f}  "
            f"{what} {np.mean(gains):+6.2f} dB (min {min(gains):+6.2f}, max {max(gains):+6.2f})",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        for r in rows:
            f.write(json.dumps({"weights": weights, **r}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
