"""Evaluate a denoiser on clean photos, degraded as archives are, next to NLM, CBM3D and FFDNet.

    python jobs/evaluate.py --clean data/photos/test --out results/denoise_small
    python jobs/evaluate.py --clean data/photos/test --checkpoint checkpoints/denoise_small/last.pth --tile 0

A training checkpoint records its arch and widths; give ``--arch``, ``--n-feat``... only for one that does
not (an official file), or to have them checked.

Cases (``--cases``, by default those of ``--task``): ``sigmaN`` (Gaussian noise, every baseline told the
true sigma), ``jpegQ`` (JPEG at quality Q), ``clean`` (nothing to remove: a restorer should return the
photo unchanged), ``cameraN`` and ``cameraN-jpegQ`` (camera noise at level 1-3, :mod:`dgunet.camera`,
scored against the same camera's development without the noise; CBM3D told the true level and, like
FFDNet, given scikit-image's estimate), ``blur``, ``blur-shake`` and ``blur-defocus`` (baselines told the true kernel),
``rain-smear`` and ``rain-lines`` (the training renderer and an independent one); see
:mod:`pipeline.training.evaluate`. Inference uses the weights' recommended options unless ``--tile`` says
otherwise (``--tile 0``: whole images).
Writes ``<out>/eval.md`` (the mean and per-image tables), ``<out>/eval.json`` and, with
``--save-degraded``, the 8-bit PNGs every method read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from dgunet.tasks import TABLE

# Each task's cases and the baselines they are compared with: the task table's (dgunet/tasks.py).
TASK_CASES = {t.name: list(t.cases) for t in TABLE}
BASELINES = tuple(dict.fromkeys(b for t in TABLE for b in t.baselines))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clean", required=True, help="prefix or folder of clean images")
    ap.add_argument("--task", choices=sorted(TASK_CASES), default="denoise")
    ap.add_argument("--cases", nargs="+", help="default: the task's (see TASK_CASES)")
    ap.add_argument(
        "--checkpoint", help="weights: a checkpoint's path or URL, or a bundled name (default: the task's bundled)"
    )
    ap.add_argument("--arch", choices=("dgunet", "dgunet_plus"), help="default: the weights' (else dgunet)")
    ap.add_argument("--n-feat", type=int, help="widths and depth: default the weights' (else the task preset's)")
    ap.add_argument("--scale-unetfeats", type=int)
    ap.add_argument("--scale-orsnetfeats", type=int)
    ap.add_argument("--depth", type=int)
    ap.add_argument("--baselines", nargs="*", choices=sorted(BASELINES), help="default: all of the task's cases")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, help="tile side (0: whole images; default: the weights' recommendation)")
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--out", type=Path, default=Path("results/eval"))
    ap.add_argument("--save-degraded", action="store_true")
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="draws of each case's degradation per image, averaged (seeds 0..N-1; seed 0 is the first tables')",
    )
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds: expected at least 1 draw, but got {args.seeds}")
    return args


def load_model(args: argparse.Namespace):
    """The task's model with the given weights (default: its bundled ones); channels_last for the CPU."""
    import torch

    from dgunet import create_model

    model = create_model(
        args.task,
        arch=args.arch,
        weights=args.checkpoint,
        n_feat=args.n_feat,
        scale_unetfeats=args.scale_unetfeats,
        scale_orsnetfeats=args.scale_orsnetfeats,
        depth=args.depth,
    )
    return model.to(memory_format=torch.channels_last)


def tiling(args: argparse.Namespace) -> dict:
    """``restore`` overrides for ``--tile``: none (the weights' recommendation), whole images, or tiles."""
    if args.tile == 0:
        return {"max_pixels": 1 << 40}
    if args.tile:
        return {"max_pixels": 1, "tile": args.tile, "overlap": args.overlap}
    return {}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch

    from dgunet import restore
    from pipeline.storage import list_images
    from pipeline.training import evaluate as ev
    from pipeline.training.loop import load_rgb

    torch.set_num_threads(args.threads)
    model, options = load_model(args), tiling(args)
    images = {uri.rsplit("/", 1)[-1]: load_rgb(uri) for uri, _ in list_images(args.clean)}
    cases = args.cases or TASK_CASES[args.task]
    kinds = {ev.Case(c).kind for c in cases}
    names = args.baselines if args.baselines is not None else [b for b in BASELINES if ev.KIND_OF[b] & kinds]
    factories = {"ffdnet": ev.ffdnet, "ffdnet_estimated": ev.ffdnet_estimated}
    methods = {k: factories[k]() if k in factories else getattr(ev, k) for k in names}
    methods["ours"] = lambda degraded, known: restore(model, degraded, **options)

    args.out.mkdir(parents=True, exist_ok=True)

    def save(name: str, case: str, degraded: np.ndarray) -> None:
        from PIL import Image

        path = args.out / "degraded" / case / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(degraded).save(path.with_suffix(".png"))

    result = ev.evaluate(
        images, cases, methods, seeds=range(args.seeds), save_degraded=save if args.save_degraded else None
    )
    md = result.markdown()
    (args.out / "eval.md").write_text(md + "\n")
    (args.out / "eval.json").write_text(result.to_json())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
