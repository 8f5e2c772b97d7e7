"""Peak memory of ``restore`` on a large image (default 6000x4000 RGB, the 17M-parameter preset, CPU).

    python bench/memory.py
    python bench/memory.py --real-tiles 0      # every tile through the real network (hours on a CPU)

A 24-megapixel image is about 120 tiles of 512x512, i.e. some 400 T multiply-adds for the 17M preset:
hours on a 2-core CPU. Memory does not depend on how many tiles have run (each tile allocates the same
activations and frees them), so by default the first ``--real-tiles`` tiles go through the real network
and the rest through an identity stand-in; every buffer of the tiled path (input, blended output, weights,
final conversion) is still allocated. Peak RSS is read from the kernel (ru_maxrss) in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dgunet import create_model, restore

RESULTS = Path(__file__).parent / "results"


class FirstTiles(nn.Module):
    """Runs ``model`` for the first ``n`` calls, then returns its input unchanged."""

    def __init__(self, model: nn.Module, n: int):
        super().__init__()
        self.model, self.n, self.calls = model, n, 0

    def forward(self, x):
        self.calls += 1
        return self.model(x) if self.n <= 0 or self.calls <= self.n else x


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="6000x4000")
    ap.add_argument("--task", default="denoise")
    ap.add_argument("--arch", default="dgunet")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--real-tiles", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    model = FirstTiles(create_model(args.task, arch=args.arch, weights=False).eval(), args.real_tiles)
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    before = rss_mb()
    t0 = time.perf_counter()
    out = restore(model, image, tile=args.tile)
    seconds = time.perf_counter() - t0
    peak = rss_mb()
    assert out.shape == image.shape and out.dtype == image.dtype
    r = {
        "size": args.size,
        "preset": f"{args.task}/{args.arch}",
        "tile": args.tile,
        "tiles": model.calls,
        "real_tiles": args.real_tiles if args.real_tiles > 0 else model.calls,
        "rss_before_mb": before,
        "peak_rss_mb": peak,
        "seconds": seconds,
        "torch": torch.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "memory.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
