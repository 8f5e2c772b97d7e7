"""The dry run's cost against a run's planning, over one archive of small local images.

    python bench/dry_run.py                     # 100,000 images of 32x32 in 100 folders
    python bench/dry_run.py --objects 10000

Makes the archive as bench/scale.py makes its S3 one (:func:`scale.distinct_pngs`, :func:`scale.upload`:
64 distinct PNGs, 1,000 a folder), here in a local folder. Then, each in a fresh process:

* the dry run as a user runs it: ``dgunet-restore --spec ... --dry-run-json`` (no Ray address: planned in
  its own process; the counts, the bytes per folder, 1,000 headers read, the estimate), timed from the
  command's start to its exit, and the seconds it reports for planning and for the whole dry run;
* the run's planning: :func:`pipeline.planning.plan.make_plan` as a Ray Data computation on a local Ray of
  2 CPUs, as ``restore_bucket`` plans (``scale.plan_in_fresh_process``), its Ray start apart.

Results are appended to bench/results/dry_run.jsonl.
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from scale import distinct_pngs, plan_in_fresh_process, upload  # noqa: E402


def make_archive(folder: Path, n: int, side: int) -> float:
    """``n`` PNGs under ``folder`` in folders of 1,000; seconds taken."""
    import fsspec

    fs = fsspec.filesystem("file", auto_mkdir=True)
    return upload(fs, str(folder), n, distinct_pngs(64, side))


def dry_run_in_fresh_process(spec: Path, report: Path) -> dict:
    """The command's dry run: wall seconds from start to exit, and what it reports."""
    command = Path(sys.executable).parent / "dgunet-restore"
    t0 = time.perf_counter()
    proc = subprocess.run([str(command), "--spec", str(spec), "--dry-run-json", str(report)], capture_output=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the dry run exited {proc.returncode}:\n{proc.stderr.decode()[-4000:]}")
    out = json.loads(report.read_text())
    return {
        "wall_s": wall,
        "dry_run_s": out["seconds"],
        "plan_s": out["plan_seconds"],
        "listed": out["listed"],
        "to_restore": out["to_restore"],
        "megapixels": out["megapixels"],
        "megapixels_from": out["megapixels_from"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--side", type=int, default=32)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-dry-run-"))
    try:
        src, out = work / "in", work / "out"
        made = make_archive(src, args.objects, args.side)
        print(f"made {args.objects:,} images in {made:.1f} s", flush=True)
        spec = work / "spec.yaml"
        spec.write_text(yaml.safe_dump({"task": "denoise", "input": {"uri": str(src)}, "output": {"uri": str(out)}}))
        dry = dry_run_in_fresh_process(spec, work / "dry.json")
        print("dry run:", json.dumps(dry), flush=True)
        run = plan_in_fresh_process(str(src), str(out), None)
        print("run's planning:", json.dumps(run), flush=True)
        result = {
            "objects": args.objects,
            "cpus": os.cpu_count(),
            "dry_run": dry,
            "run_planning": {k: run[k] for k in ("listed", "planned", "plan_s", "ray_start_s", "driver_peak_rss_mb")},
            "dry_run_wall_over_plan": dry["wall_s"] / run["plan_s"],
            "dry_run_wall_over_plan_with_ray_start": dry["wall_s"] / (run["plan_s"] + run["ray_start_s"]),
        }
        print(
            f"{args.objects:,} objects: dry run {dry['wall_s']:.1f} s from start to exit "
            f"(planning {dry['plan_s']:.1f} s of it), the run's planning {run['plan_s']:.1f} s "
            f"(+ {run['ray_start_s']:.1f} s to start Ray): {result['dry_run_wall_over_plan']:.2f}x",
            flush=True,
        )
        with open(RESULTS / "dry_run.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
