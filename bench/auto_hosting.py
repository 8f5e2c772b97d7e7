"""Where ``task: auto`` hosts its models: one actor pool whose actors each host every task's model (what
the pipeline does), against one pool per task fed by filtering the routed rows, measured in one run on
a local Ray with the same mixed images.

Each image is routed once (the decode stage's router) before either layout runs, so both restore the
same images with the same models. Printed per layout: wall seconds, images per second, the actors
started, the models they loaded, and the ratio of the two layouts' wall times.

    python bench/auto_hosting.py --images 48 --actors 2 \\
        --deblur checkpoints/cpu/deblur/last.pth --derain checkpoints/cpu/derain/last.pth
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections import Counter

import numpy as np

KINDS = ("noise", "blur", "rain", "clean")


def mixed_rows(n: int, side: int) -> list[dict]:
    """``n`` decoded rows, a quarter of each kind, routed by the bundled router."""
    import skimage.data
    from PIL import Image

    from pipeline.routing import Router
    from pipeline.rows import OK
    from pipeline.stages.decode import decode_batch
    from pipeline.stages.measure import measure_batch
    from pipeline.training.router import degrade_as

    rng = np.random.default_rng(0)
    cat = skimage.data.chelsea()
    files = {}
    for i in range(n):
        y, x = int(rng.integers(0, cat.shape[0] - side)), int(rng.integers(0, cat.shape[1] - side))
        img = degrade_as(KINDS[i % len(KINDS)], cat[y : y + side, x : x + side].astype(np.float32) / 255.0, rng)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        files[f"{KINDS[i % len(KINDS)]}{i}.png"] = buf.getvalue()
    batch = {
        "input_uri": np.array(list(files), dtype=object),
        "status": np.array([OK] * n, dtype=object),
        "error": np.array([""] * n, dtype=object),
        "data": np.array(list(files.values()), dtype=object),
    }
    out = measure_batch(decode_batch(batch, max_pixels=10**9), router=Router.load())
    return [{k: v[i] for k, v in out.items()} for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--actors", type=int, default=2, help="CPUs for the model actors, shared out in either layout")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--deblur")
    ap.add_argument("--derain")
    args = ap.parse_args(argv)

    from pipeline.run.ray_env import init_ray

    init_ray(None)  # before anything imports ray: it binds to 127.0.0.1 only then
    import ray

    from pipeline.routing import Router
    from pipeline.stages.model import RestoreModel
    from pipeline.stages.model_set import resolve_auto

    rows = mixed_rows(args.images, args.side)
    auto = resolve_auto({"denoise": None, "deblur": args.deblur, "derain": args.derain}, Router.load())
    routes = {r["input_uri"]: r["route"] for r in rows}
    print(f"{len(rows)} images of {args.side} px; routes: {dict(Counter(routes.values()))}")
    common = {"inference": {}, "threads": 1, "use_gpu": False}

    def one_pool():
        ds = ray.data.from_items(rows).map_batches(
            RestoreModel,
            fn_constructor_kwargs={"models": auto, **common},
            compute=ray.data.ActorPoolStrategy(size=args.actors),
            batch_size=args.batch_size,
            num_cpus=1,
        )
        return ds.take_all(), args.actors, f"up to {len(auto.models)} per actor, each when an image first needs it"

    def pool_per_task():
        from pipeline.stages.model_set import ModelSet

        ds = ray.data.from_items(rows)
        tasks = sorted(auto.models)
        # The filters are Ray tasks too: they get a quarter CPU each, and the pools the CPUs less half a
        # CPU, shared out (with the pools holding every CPU, the filters never start and the run stalls).
        parts = [ds.filter(lambda r: _task(r["route"]) not in tasks, num_cpus=0.25)]  # passed: no actor
        for task in tasks:
            ref = ModelSet({task: auto.models[task]}, router=auto.router)
            parts.append(
                ds.filter(lambda r, t=task: _task(r["route"]) == t, num_cpus=0.25).map_batches(
                    RestoreModel,
                    fn_constructor_kwargs={"models": ref, **common},
                    compute=ray.data.ActorPoolStrategy(size=1),
                    batch_size=args.batch_size,
                    num_cpus=(args.actors - 0.5) / len(tasks),
                )
            )
        return parts[0].union(*parts[1:]).take_all(), len(tasks), f"1 per actor, {len(tasks)} in all"

    results = {}
    for name, layout in (("one pool, every model in each actor", one_pool), ("one pool per task", pool_per_task)):
        t0 = time.perf_counter()
        out, actors, models = layout()
        wall = time.perf_counter() - t0
        restored = sum(r["action"] == "restored" for r in out)
        results[name] = wall
        print(
            f"{name}: {wall:.1f} s, {len(out) / wall:.2f} images/s, {restored} restored, {actors} actors, "
            f"models: {models}"
        )
    (a, wa), (b, wb) = results.items()
    print(f"ratio: {b} takes {wb / wa:.2f}x the wall time of {a}")
    return 0


def _task(route: str):
    from pipeline.routing import TASK_OF

    return TASK_OF[route]


if __name__ == "__main__":
    sys.exit(main())
