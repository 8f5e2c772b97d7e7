"""Seconds per megapixel of each bundled model on this machine, as ``restore`` runs it (the weights'
recommended options: tiles where they declare them), for the models' cards.

    python bench/speed.py                                  # every bundled model, a 1024x1024 photo crop
    python bench/speed.py --weights dgunet.denoise_small old.safetensors@16,8,8,5 --tile 128 --overlap 32

A weights file that does not record its widths takes them after ``@`` (n_feat, scale_unetfeats,
scale_orsnetfeats, depth), and is a denoiser unless its checkpoint says otherwise; ``--tile`` and
``--overlap`` replace the weights' recommended options for all of them.

Each model restores the same image ``--repeats`` times; the best wall time and the process's CPU time of
that run are kept. The CPU time per megapixel is what a card quotes: it holds on a loaded machine, where
the wall time does not. Results are appended to bench/results/speed.jsonl and printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def photo(side: int) -> np.ndarray:
    """A centred ``side`` px square of scikit-image's astronaut, upscaled where it is smaller."""
    import cv2
    import skimage.data

    img = skimage.data.astronaut()
    if min(img.shape[:2]) < side:
        img = cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(img[:side, :side])


def measure(name: str, image: np.ndarray, repeats: int, overrides: dict) -> dict:
    from dgunet import create_model, restore
    from dgunet.inference import recommended_options
    from dgunet.registry import WEIGHTS

    path, _, widths = name.partition("@")
    keys = ("n_feat", "scale_unetfeats", "scale_orsnetfeats", "depth")
    given = dict(zip(keys, map(int, widths.split(",")))) if widths else {}
    task = WEIGHTS[path].task if path in WEIGHTS else "denoise" if path.endswith(".safetensors") else _task_of(path)
    model = create_model(task, weights=path, **given)
    options = dataclasses.replace(recommended_options(model), **overrides)
    restore(model, image[:64, :64], options=options)  # warm up
    best = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        restore(model, image, options=options)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best[0]:
            best = (wall, cpu)
    mp = image.shape[0] * image.shape[1] / 1e6
    return {
        "weights": name,
        "params": sum(p.numel() for p in model.parameters()),
        "run_as": "whole image"
        if image.shape[0] * image.shape[1] <= options.max_pixels
        else f"tiles of {options.tile} px, overlap {options.overlap}",
        "megapixels": mp,
        "wall_s_per_mp": best[0] / mp,
        "cpu_s_per_mp": best[1] / mp,
    }


def _task_of(path: str) -> str:
    from dgunet.checkpoint import parse_checkpoint, read_bytes

    return parse_checkpoint(read_bytes(path), name=path)["spec"]["task"]


def main(argv: list[str] | None = None) -> int:
    import torch

    from dgunet.registry import WEIGHTS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="*", help="bundled names or checkpoints (default: every bundled model)")
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tile", type=int, help="tiles of this side for every model (0: whole images)")
    ap.add_argument("--overlap", type=int)
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in (("tile", args.tile), ("overlap", args.overlap)) if v is not None}
    torch.set_num_threads(args.threads)
    image = photo(args.side)
    rows = [measure(n, image, args.repeats, overrides) for n in (args.weights or list(WEIGHTS))]
    machine = f"{platform.machine()} {platform.processor() or ''}".strip()
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / "speed.jsonl").open("a") as f:
        for r in rows:
            f.write(json.dumps({**r, "threads": args.threads, "machine": machine, "side": args.side}) + "\n")
    print(f"{args.side}x{args.side}, {args.threads} torch thread(s)\n")
    print("| weights | parameters | run as | CPU s / MP | wall s / MP |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['weights']} | {r['params']:,} | {r['run_as']} | {r['cpu_s_per_mp']:.1f} | {r['wall_s_per_mp']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
