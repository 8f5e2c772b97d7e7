"""Restore every image under a prefix with DGUNet: images (PNG by default) and Parquet stats written back.

    python jobs/restore_bucket.py                                  # the embedded demo, on a local Ray
    python jobs/restore_bucket.py --input s3://bucket/scans --output s3://bucket/restored
    python jobs/restore_bucket.py --spec jobs/specs/denoise.yaml --max-actors 8
    python jobs/restore_bucket.py --input s3://bucket/scans --output s3://bucket/webp --format webp --quality 90
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/restore_bucket.py

Flags override the spec. Without --spec, jobs/specs/demo.yaml gives the defaults. Exit code 0 when no
input failed (or no more than the spec's allow_failed_fraction), 1 otherwise, 2 for a bad spec (a task
with no bundled model and no weights given, and weights whose keys or shapes do not fit its arch and widths
included: checked before anything is listed, locked or written; and a Ray that cannot be started or joined
with token auth: a missing or refused token, auth turned off for a cluster), 3 when another run is writing
to the same output (a scheduled run that overlaps the previous one), 130 or 143 when SIGINT or SIGTERM stopped
the run (after writing what it had done; see pipeline/shutdown.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from pipeline.spec import SpecError, add_spec_flags, flag_overrides, load_spec

DEMO_SPEC = Path(__file__).parent / "specs" / "demo.yaml"

# flag -> dotted spec key; each flag's type, choices and help come from the spec's schema
FLAGS = {
    "input": "input.uri",
    "output": "output.uri",
    "manifest": "input.manifest",
    "reference": "input.reference",
    "task": "task",
    "arch": "model.arch",
    "weights": "model.weights",
    "endpoint_url": "storage.endpoint_url",
    "gpus_per_actor": "resources.gpus_per_actor",
    "cpus_per_actor": "resources.cpus_per_actor",
    "min_actors": "resources.min_actors",
    "max_actors": "resources.max_actors",
    "batch_size": "resources.batch_size",
    "tile": "inference.tile",
    "precision": "inference.precision",
    "ensemble": "inference.ensemble",
    "allow_failed_fraction": "allow_failed_fraction",
    "format": "output.format",
    "quality": "output.quality",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", type=Path, default=DEMO_SPEC, help="job spec YAML (default: the demo)")
    add_spec_flags(ap, FLAGS)
    ap.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    ap.add_argument(
        "--local-ray-no-auth",
        action="store_true",
        help="start the local Ray without token auth: any process on this machine can then run code through it "
        "(see docs/security.md); refused with --address or RAY_ADDRESS",
    )
    ap.add_argument("--run-id", help="name of this run (default: UTC time and a random suffix)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = load_spec(args.spec, flag_overrides(args, FLAGS))
    except SpecError as err:
        print(err, file=sys.stderr)
        return 2

    from dgunet.checkpoint import CheckpointMismatchError
    from dgunet.registry import NoBundledModelError
    from pipeline.job import model_ref, run_restore
    from pipeline.lock import LockedError
    from pipeline.preflight import StorageAccessError, check_storage
    from pipeline.ray_env import RayAccessError, init_ray
    from pipeline.ray_version import RayVersionError, check_ray_version
    from pipeline.summary import check_run_id

    try:
        if args.run_id is not None:
            check_run_id(args.run_id)  # it names files under the output
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    try:
        ref = model_ref(spec)  # before Ray, the listing and the lock: a wrong spec fails in a second
    except (CheckpointMismatchError, NoBundledModelError) as err:
        print(err if spec.task == "auto" else f"model.weights: {err}", file=sys.stderr)
        return 2
    try:
        check_storage(spec)  # a wrong path, bucket, credential or endpoint: one line, before any work
    except StorageAccessError as err:
        print(err, file=sys.stderr)
        return 2
    try:
        check_ray_version()  # a Ray without token auth would start or join a cluster without it
        started_ray = init_ray(args.address, auth=not args.local_ray_no_auth)
    except (RayAccessError, RayVersionError) as err:
        print(err, file=sys.stderr)
        return 2
    if args.local_ray_no_auth:
        print("WARNING: the local Ray runs without token auth: any process on this machine can run code in it.")
    try:
        summary = run_restore(spec, run_id=args.run_id, ref=ref)
    except LockedError as err:
        print(err, file=sys.stderr)
        return 3
    print(summary.render())
    if summary.interrupted:
        if started_ray:  # its processes are this run's to stop: _exit skips the shutdown that would at exit
            import ray

            ray.shutdown()
        return 128 + signal.Signals[summary.interrupted].value  # the shells' convention: 130, 143
    if summary.processed and summary.failed / summary.processed > spec.allow_failed_fraction:
        print(f"{summary.failed} of {summary.processed} inputs failed", file=sys.stderr)
        return 1
    return 0


def _exit(code: int) -> None:
    """End the process with ``code``. A run stopped by a signal ends at once: its stats, summary and lock
    are done (and a local Ray it started is stopped), and the grace period bounds the process, not only the
    run; Ray's own disconnect from a cluster at exit took 2.3 s on an idle 2-core machine and more under
    load. The cluster ends the job's actors when the driver's connection drops, as it does for a driver
    that was killed."""
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _exit(main())
