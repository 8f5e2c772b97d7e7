"""Train the router of ``task: auto`` on the training photos (never the held-out test sources), compare
logistic regression, a small perceptron and a decision tree by cross-validation grouped by photo, and
write each as a router JSON; ``--ship NAME`` also installs one as the bundled router.

    python jobs/train_router.py --per-class 600 --processes 2 --out results/router --ship mlp

The features of every sample are kept in ``OUT/samples.npz`` (with the class each was drawn as and its
PSNR against its clean crop): ``--reuse`` fits again from them without measuring, ``--clean-db`` relabels.
The held-out table that picks the shipped one: ``python bench/auto_route.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.routing import CLASSES
from pipeline.training.router import (
    CLEAN_DB,
    candidates,
    cross_validate,
    fit_router,
    load_photos,
    make_samples,
    relabel,
)

BUNDLED = Path(__file__).resolve().parent.parent / "pipeline" / "routing" / "router.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path("data/photos/train"))
    ap.add_argument("--out", type=Path, default=Path("results/router"))
    ap.add_argument("--per-class", type=int, default=300, help="samples of each class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=1, help="measure the samples in this many processes")
    ap.add_argument(
        "--clean-db", type=float, default=CLEAN_DB, help="damage within this PSNR of the clean crop is labelled clean"
    )
    ap.add_argument("--reuse", action="store_true", help="fit from OUT/samples.npz instead of measuring")
    ap.add_argument("--ship", choices=list(candidates(0)), help="install this one as the bundled router")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    samples = args.out / "samples.npz"
    t0 = time.perf_counter()
    if args.reuse:
        data = np.load(samples)
        x, drawn, groups, db = data["x"], data["drawn"], data["groups"], data["db"]
        measured = float(data["seconds"])
    else:
        photos = load_photos(args.photos)
        x, drawn, groups, db = make_samples(photos, args.per_class, args.seed, processes=args.processes)
        measured = time.perf_counter() - t0  # wall time: with --processes, the CPU time is spread over them
        np.savez(samples, x=x, drawn=drawn, groups=groups, db=db, seconds=measured)
    y = relabel(drawn, db, args.clean_db)
    scores = cross_validate(x, y, groups, args.seed)
    print("| router | accuracy | " + " | ".join(f"{c} recall" for c in CLASSES) + " |")
    print("|---|---|" + "---|" * len(CLASSES))
    for name, s in scores.items():
        print(f"| {name} | {s['accuracy']:.3f} | " + " | ".join(f"{s['recall'][c]:.3f}" for c in CLASSES) + " |")
    for name in scores:
        card = {
            "command": f"python jobs/train_router.py --photos {args.photos} --per-class {args.per_class} "
            f"--seed {args.seed} --processes {args.processes} --clean-db {args.clean_db:g}",
            "samples": int(len(y)),
            "photos": int(len(np.unique(groups))),
            "labels": {c: int(np.sum(y == k)) for k, c in enumerate(CLASSES)},
            "feature_seconds": round(measured, 1),
            "cross_validation": {"folds": "5, grouped by photo", **scores[name]},
        }
        router = fit_router(name, x, y, args.seed, {"name": name, **card})
        (args.out / f"{name}.json").write_text(router.to_json())
    (args.out / "cross_validation.json").write_text(json.dumps(scores, indent=1))
    if args.ship:
        shutil.copyfile(args.out / f"{args.ship}.json", BUNDLED)
        print(f"shipped {args.ship} as {BUNDLED}")
    print(f"{len(y)} samples; features in {measured:.0f} s; routers in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
