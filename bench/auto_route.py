"""``task: auto`` on held-out photos: where each kind of degradation is routed (a confusion table), and
what auto's restorations score against always choosing the right task.

The photos are the routing set of ``python jobs/prepare_photos.py`` (``data/photos/routing``: every
256 px cell of a grid over the held-out sources, flat ones included; never trained or validated on, by
the router or by any model). Each case (:class:`pipeline.training.evaluate.Case`) degrades every cell
``--draws`` times from seeds that no training draws; the router reads the features exactly as the
decode stage measures them, and each image is restored by the model of the task it was routed to
(passed: the input itself) and by the model of its right task.

    python bench/auto_route.py --router results/router/mlp.json \\
        --deblur checkpoints/cpu/deblur/last.pth --derain checkpoints/cpu/derain/last.pth --out results/auto_route
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from dgunet.tasks import NAMES

# case -> the task that should restore it (None: leave it alone)
CASES = {
    "clean": None,
    **{f"sigma{s}": "denoise" for s in (5, 15, 25, 50)},
    **{f"jpeg{q}": "dejpeg" for q in (30, 60, 90)},
    **{c: "denoise" for c in ("camera1", "camera2", "camera3", "camera2-jpeg90")},
    "blur-shake": "deblur",
    "blur-defocus": "deblur",
    "rain-smear": "derain",
    "rain-lines": "derain",
}
ROUTES = ("passed", *NAMES)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path("data/photos/routing"))
    ap.add_argument("--router", help="router JSON (default: the bundled one)")
    for task in NAMES:
        ap.add_argument(f"--{task}", help=f"{task} weights (default: the bundled model, if one ships)")
    ap.add_argument("--draws", type=int, default=2, help="degradations of each photo per case")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--limit", type=int, help="at most this many photos (a smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--max-pixels",
        type=int,
        help="whole-image inference up to this size (default: each model's recommended options, as runs use them)",
    )
    ap.add_argument("--route-only", action="store_true", help="the confusion table alone: restore nothing")
    ap.add_argument("--out", type=Path, help="folder for README.md (the tables) and per_image.json")
    return ap.parse_args(argv)


def load_models(args: argparse.Namespace) -> dict:
    """task -> model (channels_last, eval), for every task that has weights given or bundled."""
    import torch

    from dgunet import NoBundledModelError, create_model

    models = {}
    for task in NAMES:
        try:
            models[task] = create_model(task, weights=getattr(args, task)).to(memory_format=torch.channels_last)
        except NoBundledModelError:
            print(f"{task}: no model; its images pass")
    return models


def run(args: argparse.Namespace) -> list[dict]:
    import torch
    from PIL import Image

    from dgunet import restore
    from pipeline.quality import degradation_features, psnr
    from pipeline.routing import TASK_OF, Router
    from pipeline.training.evaluate import Case

    torch.set_num_threads(args.threads)
    router = Router.load(args.router)
    models = {} if args.route_only else load_models(args)
    files = sorted(args.photos.glob("*.png"))[: args.limit]
    if not files:
        sys.exit(f"Expected held-out photos in {args.photos} (python jobs/prepare_photos.py), but found none.")
    records = []
    for c_i, name in enumerate(args.cases):
        right = CASES[name]
        for i, path in enumerate(files):
            clean = np.asarray(Image.open(path).convert("RGB"))
            for draw in range(1 if right is None else args.draws):  # a clean photo is one image, not many
                degraded, known = Case(name).degrade(clean, seed=50_000 + draw * 10_000 + c_i * 1000 + i)
                reference = clean if known.reference is None else known.reference  # camera: noiseless development
                t0 = time.process_time()
                features = degradation_features(degraded)
                route, score = router.classify(features)
                estimate_s = time.process_time() - t0
                task = TASK_OF[route]
                outputs: dict[str | None, np.ndarray] = {None: degraded}
                for t in {task, right} - {None}:
                    run = t in models and not args.route_only
                    sizes = {"max_pixels": args.max_pixels} if args.max_pixels else {}
                    outputs[t] = restore(models[t], degraded, **sizes) if run else degraded
                p = {k: psnr(reference, v, data_range=255) for k, v in outputs.items()}
                records.append(
                    {
                        "image": path.name,
                        "case": name,
                        "draw": draw,
                        "route": route,
                        "score": round(score, 3),
                        "task": task if task in models else None,
                        "routed_to": task or "passed",
                        "right": right,
                        "psnr_input": p[None],
                        "psnr_auto": p[task] if task in models else p[None],
                        "psnr_right": p[right] if right in models else p[None],
                        "estimate_cpu_s": estimate_s,
                        "noise_level": features["noise_level"] if features else None,
                        "white_noise": features["noise"] if features else None,
                    }
                )
        done = [r for r in records if r["case"] == name]
        hit = np.mean([r["routed_to"] == (right or "passed") for r in done])
        print(
            f"{name}: {hit:.0%} to {right or 'passed'}; auto {np.mean([r['psnr_auto'] for r in done]):.2f} dB",
            flush=True,
        )
    return records


def tables(records: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "| case | images | "
        + " | ".join(ROUTES)
        + " | to its task | input dB | auto dB | right task dB | auto - right |",
        "|---|---|" + "---|" * len(ROUTES) + "---|---|---|---|---|",
    ]
    for name in args.cases:
        rs = [r for r in records if r["case"] == name]
        share = {k: np.mean([r["routed_to"] == k for r in rs]) for k in ROUTES}
        right = CASES[name] or "passed"
        mean = {k: float(np.mean([r[k] for r in rs])) for k in ("psnr_input", "psnr_auto", "psnr_right")}
        finite = all(np.isfinite(v) for v in mean.values())
        dbs = (
            f"{mean['psnr_input']:.2f} | {mean['psnr_auto']:.2f} | {mean['psnr_right']:.2f} | "
            f"{mean['psnr_auto'] - mean['psnr_right']:+.2f}"
            if finite
            else "clean | " + f"{np.mean([np.isinf(r['psnr_auto']) for r in rs]):.0%} untouched | | "
        )
        lines.append(
            f"| {name} | {len(rs)} | "
            + " | ".join(f"{share[k]:.0%}" for k in ROUTES)
            + f" | **{share[right]:.0%}** | {dbs} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    records = run(args)
    table = tables(records, args)
    print(table)
    per_image_s = np.mean([r["estimate_cpu_s"] for r in records])
    print(
        f"{len(records)} images in {time.perf_counter() - t0:.0f} s; routing {per_image_s * 1000:.0f} CPU-ms per image"
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "per_image.json").write_text(json.dumps(records, indent=0))
        command = "python bench/auto_route.py " + " ".join(sys.argv[1:] if argv is None else argv)
        (args.out / "README.md").write_text(
            f"# task: auto on held-out photos\n\n`{command}`\n\n{table}\n\n"
            "Shares: where each case's images were routed. *to its task*: the share routed to the case's own "
            "task (clean: passed). dB: mean PSNR against the clean photo of the input, of auto's output "
            "(the routed task's model, or the input where it passed) and of the right task's model. Per image: "
            "per_image.json.\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
