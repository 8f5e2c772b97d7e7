"""Scale: listing and planning 100k objects, memory as the archive grows, and the cost of a re-run.

    python bench/scale.py                      # 1k and 10k images, 100k objects listed
    python bench/scale.py --sizes 1000 --list 20000

Against a SeaweedFS S3 server on 127.0.0.1 (started here):

* listing: ``--list`` tiny objects under one prefix, then :func:`pipeline.plan.make_plan` over it (list,
  read previous stats, decide), timed in this process;
* memory: ``restore_bucket`` (fresh process, own local Ray, default model) over archives of each of
  ``--sizes`` small images; peak RSS of the driver, the model actor and the other Ray workers;
* re-run: the largest archive restored again unchanged; everything is skipped, and the time of that run
  is compared with the first.

Results are appended to bench/results/scale.jsonl.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from jobrun import run_job  # noqa: E402


def distinct_pngs(n: int, size: int) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def upload(fs, prefix: str, n: int, blobs: list[bytes], chunk: int = 2000) -> float:
    t0 = time.perf_counter()
    for lo in range(0, n, chunk):
        fs.pipe(
            {f"{prefix}/{i // 1000:03d}/img{i:06d}.png": blobs[i % len(blobs)] for i in range(lo, min(n, lo + chunk))}
        )
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--list", type=int, default=100_000, help="objects to list and plan (0: skip)")
    ap.add_argument("--side", type=int, default=32, help="side of the small images")
    args = ap.parse_args(argv)

    from pipeline.plan import make_plan
    from pipeline.storage import StorageOptions
    from tests.servers import S3_ENV, SeaweedS3

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = SeaweedS3(str(work / "weed"))
    result: dict = {"side": args.side}
    try:
        os.environ.update(S3_ENV)
        env = {**os.environ, "AWS_ENDPOINT_URL": server.endpoint}
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=server.endpoint)
        fs.mkdir("scale")
        blobs = distinct_pngs(64, args.side)
        if args.list:
            up = upload(fs, "scale/many", args.list, [b"x"])
            t0 = time.perf_counter()
            plan = make_plan(
                input_uri="s3://scale/many",
                output_uri="s3://scale/many-out",
                model="m",
                storage=StorageOptions(endpoint_url=server.endpoint),
            )
            result["listing"] = {
                "objects": args.list,
                "upload_s": up,
                "list_and_plan_s": time.perf_counter() - t0,
                "planned": len(plan.todo),
            }
            print("listing:", json.dumps(result["listing"]))
        runs = []
        for n in args.sizes:
            upload(fs, f"scale/in{n}", n, blobs)
            job = run_job(["--input", f"s3://scale/in{n}"], env=env, fs=fs, output=f"s3://scale/out{n}", run_id="first")
            s = job["summary"]
            assert s["ok"] == n, s
            runs.append(
                {
                    "images": n,
                    "wall_s": job["wall_s"],
                    "images_per_s": n / job["wall_s"],
                    "peak_rss_mb": job["peak_rss_mb"],
                }
            )
            print("run:", json.dumps(runs[-1]))
        result["runs"] = runs
        n = args.sizes[-1]
        again = run_job(["--input", f"s3://scale/in{n}"], env=env, fs=fs, output=f"s3://scale/out{n}", run_id="again")
        s = again["summary"]
        assert s["skipped"] == n and s["ok"] == 0, s
        result["rerun"] = {
            "images": n,
            "first_s": runs[-1]["wall_s"],
            "rerun_s": again["wall_s"],
            "ratio": again["wall_s"] / runs[-1]["wall_s"],
            "plan_s": s["plan_seconds"],
        }
        print("rerun:", json.dumps(result["rerun"]))
    finally:
        server.stop()
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "scale.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
