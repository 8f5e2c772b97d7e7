"""What drawing noise and blur on the training device (``data.device_degradations``) saves the loader
threads: CPU seconds per training batch of the GPU specs' degradations, drawn wholly on the CPU against
left to the device, measured in one run on the same crops; and the device's own time for its part.

The loader threads of a launch-bound GPU run must draw a batch in the time of a step (about 0.15 s for
batch 32 of 128 px on an H100); so a batch's CPU seconds on the loader divided by the step time is the
number of threads it needs. CPU seconds of this process, one torch and one OpenCV thread, so that other work on the
machine does not bias the ratios; the device's part is timed where it runs (here the CPU: on a GPU it
is a grouped convolution of a few milliseconds).

    python bench/device_degrade.py --batch 32 --patch 128 --batches 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SPECS = ("train_denoise_gpu", "train_deblur_gpu")


def photos(n: int) -> list[np.ndarray]:
    import skimage.data

    names = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
    return [np.ascontiguousarray(getattr(skimage.data, names[i % len(names)])()[..., :3]) for i in range(n)]


def loader_cpu_s(spec, images, *, batch: int, patch: int, batches: int, device_ops: bool) -> tuple[float, float]:
    """CPU seconds of drawing one batch, and of the device's part (0 without it), each a mean over ``batches``."""
    import torch

    from dgunet.patches import PatchSampler, apply_device_ops

    sampler = PatchSampler(
        images, patch=patch, batch=batch, degradation=spec.degradation, scale=spec.data.scale, device_ops=device_ops
    )
    draw = apply = 0.0
    for b in range(batches):
        t0 = time.process_time()
        drawn = sampler.sample(np.random.default_rng([7, b]))
        draw += time.process_time() - t0
        if device_ops:
            t0 = time.process_time()
            apply_device_ops(drawn[0], drawn[2], quantize=spec.degradation.quantize)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            apply += time.process_time() - t0
    return draw / batches, apply / batches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--step-s", type=float, default=0.15, help="a GPU training step, for the threads needed")
    args = ap.parse_args(argv)

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import cv2

    from pipeline.training.spec import TrainSpec

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    images = photos(5)
    root = Path(__file__).resolve().parents[1]
    print(f"batch {args.batch} of {args.patch} px, mean of {args.batches} batches, CPU seconds of one thread")
    print("| spec | loader, all on the CPU | loader, noise and blur left | ratio | device part (here: CPU) |")
    print("|---|---|---|---|---|")
    for name in SPECS:
        spec = TrainSpec.from_yaml(root / "jobs" / "specs" / f"{name}.yaml")
        kw = dict(batch=args.batch, patch=args.patch, batches=args.batches)
        cpu, _ = loader_cpu_s(spec, images, device_ops=False, **kw)
        left, device = loader_cpu_s(spec, images, device_ops=True, **kw)
        print(
            f"| {name} | {cpu:.3f} s ({cpu / args.step_s:.1f} threads at {args.step_s} s a step) "
            f"| {left:.3f} s ({left / args.step_s:.1f} threads) | {cpu / left:.2f}x | {device:.3f} s |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
