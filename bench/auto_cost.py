"""What routing costs (``task: auto``): the one-pass degradation estimate's share of a denoising run's
time, measured in one run on the same images.

Every image goes through the stages of a denoising run in this process, one thread, as a model actor
runs them: decode (with the noise estimate that a denoising run makes anyway), the model (the bundled
denoiser, the spec's default inference options), encode and write (PNG, with the stats' quality
measures). Then decode again with the router: every feature of
:func:`pipeline.quality.degradation_features` and the classifier. The estimate's share is the
extra CPU time of that second decode over the whole denoising run's. CPU seconds of this process, so
that other work on the machine does not bias the ratio.

    python bench/auto_cost.py --images 4 --size 1024x768
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def photos(n: int, width: int, height: int, sigma: float) -> dict[str, bytes]:
    """``n`` noisy photos (scikit-image's colour photos, resized) as PNG files."""
    import skimage.data
    from PIL import Image

    names = ("astronaut", "chelsea", "coffee", "rocket")
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        img = Image.fromarray(getattr(skimage.data, names[i % len(names)])()[..., :3]).resize((width, height))
        noisy = np.clip(np.asarray(img, np.float32) + rng.normal(0, sigma, (height, width, 3)), 0, 255)
        buf = io.BytesIO()
        Image.fromarray(noisy.astype(np.uint8)).save(buf, format="PNG", compress_level=1)
        out[f"photo{i}.png"] = buf.getvalue()
    return out


def cpu(fn, *args, **kw):
    t0 = time.process_time()
    out = fn(*args, **kw)
    return out, time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", default="1024x768", help="WIDTHxHEIGHT")
    ap.add_argument("--sigma", type=float, default=15.0)
    args = ap.parse_args(argv)

    import torch

    from pipeline.routing import Router
    from pipeline.rows import OK
    from pipeline.stages.decode import decode_batch
    from pipeline.stages.measure import measure_batch
    from pipeline.stages.model import RestoreModel
    from pipeline.stages.model_set import ModelSet, resolve_model
    from pipeline.stages.write import write_batch
    from pipeline.storage import StorageOptions

    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.split("x"))
    files = photos(args.images, width, height, args.sigma)
    out = Path(tempfile.mkdtemp())
    n = len(files)
    batch = {
        "input_uri": np.array([str(out / "in" / k) for k in files], dtype=object),
        "output_uri": np.array([str(out / "out" / k) for k in files], dtype=object),
        "size": np.array([len(v) for v in files.values()]),
        "version": np.array([""] * n, dtype=object),
        "reference_uri": np.array([""] * n, dtype=object),
        "status": np.array([OK] * n, dtype=object),
        "error": np.array([""] * n, dtype=object),
        "data": np.array(list(files.values()), dtype=object),
    }
    router = Router.load()
    first = decode_batch({k: v[:1] for k, v in batch.items()}, max_pixels=10**9)
    measure_batch(first, router=router)  # imports, first calls
    stage = RestoreModel(
        models=ModelSet.one(resolve_model("denoise", arch=None, weights=None)), inference={}, threads=1, use_gpu=False
    )
    decoded, t_decode = cpu(decode_batch, batch, max_pixels=10**9)
    measured, t_measure = cpu(measure_batch, decoded)  # a denoising run's measure: the noise level
    routed, t_routed = cpu(measure_batch, decoded, router=router)
    restored, t_model = cpu(stage, measured)
    storage = StorageOptions()
    _, t_write = cpu(write_batch, restored, run_id="bench", model="bench", storage=storage, max_pixels=10**9)
    run = t_decode + t_measure + t_model + t_write
    extra = t_routed - t_measure
    print(f"{n} images of {width}x{height}, noise sigma {args.sigma:g}; CPU seconds of this process, one thread")
    print(
        f"denoising run: decode {t_decode:.2f} + measure {t_measure:.2f} + model {t_model:.2f} + encode/write "
        f"{t_write:.2f} = {run:.2f}"
    )
    print(f"measuring for the router: {t_routed:.2f} (+{extra:.2f}: {extra / n * 1000:.0f} ms per image)")
    print(f"routes: {sorted(set(routed['route']))}")
    print(f"ratio: the estimate adds {extra / run:.2%} to the denoising run (target: at most 5%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
