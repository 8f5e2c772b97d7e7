"""Scale: planning at 100k to 10M objects, memory as the archive grows, and the cost of a re-run.

    python bench/scale.py                      # planning 100k, 1M, 10M; 1k and 10k images restored
    python bench/scale.py --plan 100000 1000000 --sizes --list 0

* planning (``--plan``): :func:`pipeline.planning.plan.make_plan` as a Ray Data computation over a synthetic
  archive of each size (``bench/synthfs.py``: an fsspec filesystem that lists synthetic keys, 1,000 per
  folder, with sizes, ETags and modification times), each in a fresh process with its own local Ray
  (2 CPUs): the driver's peak RSS (VmHWM) and its RSS before planning, and objects planned per second;
* listing (``--list``, SeaweedFS S3 server on 127.0.0.1, started here): that many tiny objects under one
  prefix, planned the same way, then planned again with every input done (stats and outputs present);
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
import subprocess
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


def _vm(key: str) -> float:
    """This process's ``key`` (VmRSS, VmHWM) from /proc, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def plan_once(input_uri: str, output_uri: str, partitions: int | None, endpoint: str | None = None) -> dict:
    """Plan ``input_uri`` on a local Ray started here (this process is the driver): seconds, objects
    planned per second, the driver's RSS before planning and its peak."""
    from bench.synthfs import register
    from pipeline.run.ray_env import start_local_ray

    register()
    t_ray = time.perf_counter()
    start_local_ray(  # on 127.0.0.1 only, with token auth; before anything else imports ray
        num_cpus=2,
        logging_level="ERROR",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}, "worker_process_setup_hook": "bench.synthfs.register"},
    )
    import ray

    from pipeline.planning.plan import make_plan
    from pipeline.storage import StorageOptions

    ray.data.DataContext.get_current().enable_progress_bars = False
    ray_start_s = time.perf_counter() - t_ray
    rss_before = _vm("VmRSS")
    t0 = time.perf_counter()
    plan = make_plan(
        input_uri=input_uri,
        output_uri=output_uri,
        model="m",
        storage=StorageOptions(endpoint_url=endpoint),
        partitions=partitions,
    )
    seconds = time.perf_counter() - t0
    out = {
        "input": input_uri,
        "listed": plan.listed,
        "planned": plan.planned,
        "skipped": plan.skipped,
        "plan_s": seconds,
        "objects_per_s": plan.listed / seconds,
        "ray_start_s": ray_start_s,
        "objects_per_s_with_ray_start": plan.listed / (seconds + ray_start_s),
        "driver_rss_before_mb": rss_before,
        "driver_peak_rss_mb": _vm("VmHWM"),
        "driver_rss_after_mb": _vm("VmRSS"),
        "partitions": partitions,
    }
    ray.shutdown()
    return out


def plan_in_fresh_process(input_uri: str, output_uri: str, partitions: int | None, endpoint: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--plan-one", input_uri, output_uri, "--partitions", str(partitions or 0)]
    if endpoint:
        cmd += ["--endpoint", endpoint]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"planning {input_uri} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def done_stats(objs, outputs: list[str], *, run_id: str | None = None, finished_at=None):
    """Stats rows saying each of ``objs`` (:class:`~pipeline.storage.StoredObject`, or anything with its
    ``uri``, ``size`` and ``version``) was restored by model ``m`` into the matching ``outputs``, by run
    ``run_id`` at ``finished_at`` (None: not recorded)."""
    import pyarrow as pa

    from pipeline.rows import STATS_SCHEMA

    rows = {name: [None] * len(objs) for name in STATS_SCHEMA.names}
    rows.update(
        input_uri=[o.uri for o in objs],
        output_uri=outputs,
        status=["ok"] * len(objs),
        model=["m"] * len(objs),
        input_bytes=[o.size for o in objs],
        input_version=[o.version for o in objs],
        run_id=[run_id] * len(objs),
        finished_at=[finished_at] * len(objs),
    )
    return pa.table(rows, schema=STATS_SCHEMA)


def _all_done(fs, endpoint: str, prefix: str, out: str, chunk: int = 20000) -> None:
    """Stats rows saying every object under ``prefix`` was restored (model ``m``, the version listed now)
    and an output for each, as a finished run leaves them."""

    from pipeline.stats import write_stats_part
    from pipeline.storage import StorageOptions, list_objects

    storage = StorageOptions(endpoint_url=endpoint)
    listed = list(list_objects(f"s3://{prefix}", storage))
    for part, lo in enumerate(range(0, len(listed), chunk)):
        objs = listed[lo : lo + chunk]
        outputs = [f"s3://{out}/images/{o.uri.split(prefix + '/', 1)[1].rsplit('.', 1)[0]}.png" for o in objs]
        buf = io.BytesIO()
        write_stats_part(done_stats(objs, outputs), buf, input_uri=f"s3://{prefix}")
        fs.pipe(f"{out}/stats/run-done-part-{part:05d}.parquet", buf.getvalue())
        fs.pipe({u.split("://", 1)[1]: b"png" for u in outputs})


def synthetic_all_done(n: int, out: Path, *, sorted_parts: bool = True, chunk: int = 5000) -> None:
    """For ``synth://archive-<n>``: stats parts saying every object was restored (model ``m``, the version
    listed now) and an (empty) output file for each under ``out`` on local disk, as a finished run
    leaves them: a re-run then plans with nothing to do. Parts of ``chunk`` rows (a run's default), laid
    out for planning as runs write them (``sorted_parts``) or plain, as runs wrote them before."""

    from bench.synthfs import SyntheticFileSystem
    from pipeline.stats import write_stats_part
    from pipeline.storage import describe

    (out / "stats").mkdir(parents=True, exist_ok=True)
    for part, lo in enumerate(range(0, n, chunk)):
        files = [SyntheticFileSystem._file(n, i) for i in range(lo, min(n, lo + chunk))]
        objs = [describe("synth", f["name"], f) for f in files]
        outputs = [str(out / "images" / o.uri.split("/", 3)[3]) for o in objs]  # <out>/images/<relative key>
        prefix = f"synth://archive-{n}" if sorted_parts else None  # None: plain, as a manifest run's
        write_stats_part(
            done_stats(objs, outputs), out / "stats" / f"run-done-part-{part:05d}.parquet", input_uri=prefix
        )
        for path in outputs:
            folder = os.path.dirname(path)
            if not os.path.isdir(folder):
                os.makedirs(folder)
            open(path, "wb").close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000], help="images restored (none: skip)")
    ap.add_argument("--list", type=int, default=100_000, help="objects on S3 to list and plan (0: skip)")
    ap.add_argument("--plan", type=int, nargs="*", default=[100_000, 1_000_000, 10_000_000], help="synthetic")
    ap.add_argument("--rerun", type=int, nargs="*", default=[], help="synthetic, every object done (local outputs)")
    ap.add_argument("--partitions", type=int, default=0, help="hash partitions of planning (0: the default)")
    ap.add_argument("--side", type=int, default=32, help="side of the small images")
    ap.add_argument("--plan-one", nargs=2, metavar=("INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.plan_one:
        print(json.dumps(plan_once(*args.plan_one, args.partitions or None, args.endpoint)))
        return 0

    result: dict = {"side": args.side, "cpus": os.cpu_count()}
    planning = []
    for n in args.plan:
        planning.append(plan_in_fresh_process(f"synth://archive-{n}", f"synth://out-{n}", args.partitions or None))
        print("plan:", json.dumps(planning[-1]), flush=True)
    reruns = []
    for n in args.rerun:
        seconds = {}
        for layout in ("sorted", "plain"):  # parts as runs write them (no shuffle), and as they wrote them before
            out = Path(tempfile.mkdtemp(prefix=f"bench-rerun-{n}-"))
            t0 = time.perf_counter()
            synthetic_all_done(n, out, sorted_parts=layout == "sorted")
            setup_s = time.perf_counter() - t0
            planned = plan_in_fresh_process(f"synth://archive-{n}", str(out), args.partitions or None)
            reruns.append({"parts": layout, "setup_s": setup_s, **planned})
            seconds[layout] = planned["plan_s"]
            print("re-run:", json.dumps(reruns[-1]), flush=True)
            subprocess.run(["rm", "-rf", str(out)], check=False)
        ratio = seconds["plain"] / seconds["sorted"]
        print(f"re-run of {n:,}: parts laid out for planning {ratio:.2f}x as fast as plain", flush=True)
    if reruns:
        with open(RESULTS / "scale.jsonl", "a") as f:
            f.write(json.dumps({"rerun_all_done": reruns}) + "\n")
    if planning:
        result["planning"] = planning
        with open(RESULTS / "scale.jsonl", "a") as f:  # a long run keeps what it measured
            f.write(json.dumps({"planning": planning}) + "\n")
    if not args.list and not args.sizes:
        return 0

    from tests.servers import S3_ENV, SeaweedS3

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = SeaweedS3(str(work / "weed"))
    try:
        os.environ.update(S3_ENV)
        env = {**os.environ, "AWS_ENDPOINT_URL": server.endpoint}
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=server.endpoint)
        fs.mkdir("scale")
        blobs = distinct_pngs(64, args.side)
        if args.list:
            up = upload(fs, "scale/many", args.list, [b"x"])
            first = plan_in_fresh_process("s3://scale/many", "s3://scale/many-out", args.partitions, server.endpoint)
            # Every input done: a stats part with a row for each, and its output present.
            _all_done(fs, server.endpoint, "scale/many", "scale/many-out")
            again = plan_in_fresh_process("s3://scale/many", "s3://scale/many-out", args.partitions, server.endpoint)
            result["listing"] = {"objects": args.list, "upload_s": up, "first": first, "all_done": again}
            print("listing:", json.dumps(result["listing"]), flush=True)
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
        if args.sizes:
            n = args.sizes[-1]
            again = run_job(
                ["--input", f"s3://scale/in{n}"], env=env, fs=fs, output=f"s3://scale/out{n}", run_id="again"
            )
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
