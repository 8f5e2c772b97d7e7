"""restore_bucket end to end (S3 to S3, Ray's start included) against a plain single-process loop.

    python bench/pipeline_overhead.py --images 48
    python bench/pipeline_overhead.py --images 500 --threads 1

Both sides use the bundled default model and the same torch thread count, and both are timed as whole
processes, from the interpreter's start to its exit. The plain loop reads local files, decodes, restores,
encodes PNGs and writes them, one image after another. The pipeline is
``python jobs/restore_bucket.py`` in a fresh process against a SeaweedFS S3 server on 127.0.0.1 (started
here), so its time includes starting Ray, listing, planning and writing stats. It also prints where the
pipeline's time went: Ray Data's wall time per operator (summed over tasks), the per-image decode, model
and encode+write times from the stats, the planning time, and the peak RSS of each kind of process.
Results are appended to bench/results/pipeline_overhead.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from jobrun import run_job

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))


def make_images(folder: Path, n: int, size: int) -> None:
    from PIL import Image

    from dgunet.degrade import add_noise, to_uint8

    rng = np.random.default_rng(0)
    sample = np.asarray(Image.open(ROOT / "dgunet" / "samples" / "astronaut.png").convert("RGB"), np.float32) / 255
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        y, x = rng.integers(0, sample.shape[0] - size + 1), rng.integers(0, sample.shape[1] - size + 1)
        crop = sample[y : y + size, x : x + size]
        Image.fromarray(to_uint8(add_noise(crop, 10.0, rng))).save(folder / f"img{i:05d}.png")


def plain_loop(src: Path, dst: Path, threads: int) -> float:
    import torch

    from dgunet import create_model, restore
    from pipeline.stages.decode import decode_image
    from pipeline.stages.encode import encode_png

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = create_model("denoise").to(memory_format=torch.channels_last)
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.png")):
        pixels = decode_image(path.read_bytes(), max_pixels=10**9).pixels
        (dst / path.name).write_bytes(encode_png(restore(model, pixels), compress_level=1))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, both sides (= cpus_per_actor)")
    ap.add_argument("--plain-loop", nargs=2, metavar=("SRC", "DST"), help="only run the plain loop (internal)")
    args = ap.parse_args(argv)
    if args.plain_loop:
        plain_loop(Path(args.plain_loop[0]), Path(args.plain_loop[1]), args.threads)
        return 0

    from tests.servers import S3_ENV, SeaweedS3

    work = Path(tempfile.mkdtemp(prefix="bench-"))
    make_images(work / "in", args.images, args.size)
    server = SeaweedS3(str(work / "weed"))
    try:
        env = {**os.environ, **S3_ENV, "AWS_ENDPOINT_URL": server.endpoint}
        os.environ.update(S3_ENV)
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=server.endpoint)
        fs.mkdir("bench")
        fs.put(str(work / "in") + "/", "bench/in/", recursive=True)

        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--plain-loop", str(work / "in"), str(work / "plain-out"), "--threads"]
        subprocess.run([*cmd, str(args.threads)], check=True)
        plain = time.perf_counter() - t0
        flags = ["--input", "s3://bench/in", "--cpus-per-actor", str(args.threads), "--batch-size", "4"]
        job = run_job(flags, env=env, fs=fs, output="s3://bench/out", run_id="bench")
    finally:
        server.stop()
    pipeline = job["wall_s"]
    summary = job["summary"]
    mp = args.images * args.size * args.size / 1e6
    r = {
        "images": args.images,
        "size": args.size,
        "threads": args.threads,
        "plain_s": plain,
        "pipeline_s": pipeline,
        "ratio": pipeline / plain,
        "plain_images_per_s": args.images / plain,
        "pipeline_images_per_s": args.images / pipeline,
        "plain_mp_per_s": mp / plain,
        "pipeline_mp_per_s": mp / pipeline,
        "pipeline_in_job_s": summary["wall_seconds"],
        "plan_s": summary["plan_seconds"],
        "ray_data_operator_s": job["operator_s"],
        "per_image_sums_s": {
            k: summary["metrics"][k]
            for k in ("decode_seconds_total", "model_seconds_total", "encode_write_seconds_total")
        },
        "peak_rss_mb": job["peak_rss_mb"],
    }
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "pipeline_overhead.jsonl", "a") as f:
        f.write(json.dumps(r) + "\n")
    print(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
