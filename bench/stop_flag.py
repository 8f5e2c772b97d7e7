"""The run's stop flag under many writers: flag calls per image, and write throughput, per image against
per write batch.

    python bench/stop_flag.py                      # 64 writers, 20 batches of 4 images each
    python bench/stop_flag.py --writers 64 --batches 20 --batch 4

Every write asks the run's :class:`~pipeline.stages.stop.StopFlag` (one actor) before it writes and hands
it the stats row after. ``--writers`` concurrent Ray tasks each write ``--batches`` batches of ``--batch``
cheap images (a few KB to local disk, as the write stage would after encoding): once with the calls the
write stage made before (two per image: ``begin`` and ``finish`` for each), once with its calls now (two
per batch: :func:`~pipeline.stages.stop.begin_writes` and :func:`~pipeline.stages.stop.finish_writes`).
Printed: calls per image counted on the flag, images written per second, and the ratio, measured in one
run. Results are appended to bench/results/stop_flag.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.stages.stop import StopFlag  # noqa: E402


class CountingFlag(StopFlag):
    """The stop flag, counting the calls it serves."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def begin(self, uris):
        self.calls += 1
        return super().begin(uris)

    def finish(self, rows):
        self.calls += 1
        return super().finish(rows)

    def count(self) -> int:
        return self.calls


def writer(flag, folder: str, w: int, batches: int, batch: int, per_image: bool) -> int:
    """One writer's batches: each image a small file, with the flag's calls around it."""
    from pipeline.stages.stop import begin_writes, finish_writes

    payload = os.urandom(4096)
    for b in range(batches):
        uris = [f"{folder}/w{w:03d}-b{b:03d}-{i}.png" for i in range(batch)]
        if per_image:  # as the write stage did: the flag asked before each image, told after it
            for uri in uris:
                if begin_writes(flag, [uri]):
                    Path(uri).write_bytes(payload)
                    finish_writes(flag, {uri: {"input_uri": uri}})
        elif begin_writes(flag, uris):  # as it does now: once before the batch, once after
            for uri in uris:
                Path(uri).write_bytes(payload)
            finish_writes(flag, {uri: {"input_uri": uri} for uri in uris})
    return batches * batch


def measure(writers: int, batches: int, batch: int, per_image: bool) -> dict:
    import ray

    flag = ray.remote(num_cpus=0)(CountingFlag).remote()
    task = ray.remote(num_cpus=0.01)(writer)
    with tempfile.TemporaryDirectory(prefix="stopflag-") as folder:
        ray.get(task.remote(flag, folder, -1, 1, batch, per_image))  # warm: a worker, the flag's actor
        start_calls = ray.get(flag.count.remote())
        t0 = time.perf_counter()
        images = sum(ray.get([task.remote(flag, folder, w, batches, batch, per_image) for w in range(writers)]))
        seconds = time.perf_counter() - t0
    calls = ray.get(flag.count.remote()) - start_calls
    ray.kill(flag)
    return {"per_image": per_image, "images": images, "seconds": seconds, "calls_per_image": calls / images}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writers", type=int, default=64)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4, help="images per write batch (the spec's resources.batch_size)")
    args = ap.parse_args(argv)
    from pipeline.run.ray_env import start_local_ray

    start_local_ray(
        num_cpus=2, logging_level="ERROR", log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}
    )
    before = measure(args.writers, args.batches, args.batch, per_image=True)
    after = measure(args.writers, args.batches, args.batch, per_image=False)
    result = {
        "bench": "stop_flag",
        "writers": args.writers,
        "batch": args.batch,
        "before": before,
        "after": after,
        "calls_ratio": before["calls_per_image"] / after["calls_per_image"],
        "throughput_ratio": (after["images"] / after["seconds"]) / (before["images"] / before["seconds"]),
    }
    for name, r in (("per image", before), ("per batch", after)):
        print(
            f"{name:9s}: {r['calls_per_image']:.2f} flag calls per image, "
            f"{r['images'] / r['seconds']:.0f} images/s ({r['images']} images, {args.writers} writers)"
        )
    print(f"calls {result['calls_ratio']:.1f}x fewer, throughput {result['throughput_ratio']:.2f}x")
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    with (ROOT / "bench" / "results" / "stop_flag.jsonl").open("a") as f:
        f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
