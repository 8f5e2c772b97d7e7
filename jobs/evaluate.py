"""Evaluate a denoiser on clean photos with synthetic Gaussian noise, next to NLM and CBM3D.

    python jobs/evaluate.py --clean data/photos/test --sigmas 15 25 50 --out results/denoise_small
    python jobs/evaluate.py --clean data/photos/test --checkpoint checkpoints/denoise_small/last.pth \
        --n-feat 16 --scale-unetfeats 8 --scale-orsnetfeats 8

Writes ``<out>/eval.md`` (the table), ``<out>/eval.json`` (means and every image) and, with
``--save-noisy``, the noisy 8-bit PNGs every method read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clean", required=True, help="prefix or folder of clean images")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[15, 25, 50])
    ap.add_argument("--checkpoint", help="model weights (default: the bundled denoiser)")
    ap.add_argument("--arch", default="dgunet")
    ap.add_argument("--n-feat", type=int)
    ap.add_argument("--scale-unetfeats", type=int)
    ap.add_argument("--scale-orsnetfeats", type=int)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--baselines", nargs="*", default=["nlm", "cbm3d"], choices=["nlm", "cbm3d"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, help="tiled inference with this tile side (default: whole images)")
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("results/eval"))
    ap.add_argument("--save-noisy", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from dgunet import build_model, load_checkpoint, load_pretrained, restore
    from pipeline.evaluate import cbm3d, evaluate_noise, nlm
    from pipeline.storage import list_images
    from pipeline.train import load_rgb

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        widths = {
            "n_feat": args.n_feat,
            "scale_unetfeats": args.scale_unetfeats,
            "scale_orsnetfeats": args.scale_orsnetfeats,
            "depth": args.depth,
        }
        model = build_model(args.arch, task="denoise", **{k: v for k, v in widths.items() if v is not None})
        load_checkpoint(model, args.checkpoint)
        model.eval()
    else:
        model = load_pretrained("denoise")
    model = model.to(memory_format=torch.channels_last)
    images = {uri.rsplit("/", 1)[-1]: load_rgb(uri) for uri, _ in list_images(args.clean)}
    methods = {"nlm": nlm, "cbm3d": cbm3d}
    methods = {k: methods[k] for k in args.baselines}
    tiling = {"max_pixels": 1, "tile": args.tile, "overlap": args.overlap} if args.tile else {}
    methods["ours"] = lambda noisy, sigma: restore(model, noisy, **tiling)

    args.out.mkdir(parents=True, exist_ok=True)

    def save(name: str, sigma: float, noisy: np.ndarray) -> None:
        from PIL import Image

        path = args.out / "noisy" / f"sigma{sigma:g}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(path.with_suffix(".png"))

    result = evaluate_noise(images, args.sigmas, methods, save_noisy=save if args.save_noisy else None)
    md = result.markdown()
    (args.out / "eval.md").write_text(md + "\n")
    (args.out / "eval.json").write_text(result.to_json())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
