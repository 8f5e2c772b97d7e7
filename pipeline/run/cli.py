"""Restore every image under a prefix with DGUNet: images (PNG by default) and Parquet stats written back.

    dgunet-restore                                                 # the embedded demo, on a local Ray
    dgunet-restore --input s3://bucket/scans --output s3://bucket/restored
    dgunet-restore --spec jobs/specs/denoise.yaml --max-actors 8
    dgunet-restore --input s3://bucket/scans --output s3://bucket/webp --format webp --quality 90
    dgunet-restore --spec jobs/specs/denoise.yaml --dry-run --price-per-hour 0.90
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/restore_bucket.py

``dgunet-restore`` (the console script) and ``python jobs/restore_bucket.py`` (for ``ray job submit
--working-dir .``) are this one command. Flags override the spec. Without --spec, jobs/specs/demo.yaml
gives the defaults (where this checkout has it). Exit code 0 when no input failed (or no more than the
spec's allow_failed_fraction), 1 otherwise, 2 for a bad spec (a task with no bundled model and no weights
given, and weights whose keys or shapes do not fit its arch and widths included: checked before anything is
listed, locked or written; storage that cannot be used; and a Ray that cannot be started or joined with
token auth: a missing or refused token, auth turned off for a cluster), 3 when another run is writing to
the same output (a scheduled run that overlaps the previous one), 130 or 143 when SIGINT or SIGTERM stopped
the run (after writing what it had done; see pipeline/run/shutdown.py). --dry-run plans as a run would and
says what it would do and cost, writing nothing under the output and taking no lock (pipeline/run/dry_run.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from ..spec import RestoreSpec, SpecError, add_spec_flags, flag_overrides, load_spec, parse_spec

# The embedded demo's spec, in a checkout (an editable install, or the working directory of a Ray job).
DEMO_SPEC = Path(__file__).resolve().parents[2] / "jobs" / "specs" / "demo.yaml"

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


def version() -> str:
    """``"dgunet-restore <version>"`` of the installed distribution (``"dgunet-restore (not installed)"``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return f"dgunet-restore {dist_version('dgunet-restore')}"
    except PackageNotFoundError:
        return "dgunet-restore (not installed)"


def parse_args(argv: list[str] | None, *, prog: str | None = None) -> argparse.Namespace:
    """The command's flags: the spec's (:data:`FLAGS`), Ray's, the run's name and the dry run's."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=version())
    ap.add_argument("--spec", type=Path, default=None, help="job spec YAML (default: the demo, jobs/specs/demo.yaml)")
    add_spec_flags(ap, FLAGS, RestoreSpec)
    ap.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    ap.add_argument(
        "--local-ray-no-auth",
        action="store_true",
        help="start the local Ray without token auth: any process on this machine can then run code through it "
        "(see docs/security.md); refused with --address or RAY_ADDRESS",
    )
    ap.add_argument("--run-id", help="name of this run (default: UTC time and a random suffix)")
    dry = ap.add_argument_group("dry run: plan and estimate, write nothing under the output, take no lock")
    dry.add_argument("--dry-run", action="store_true", help="print what a run would do, and stop there")
    dry.add_argument("--dry-run-json", metavar="PATH", help="also write it as JSON to PATH ('-': stdout)")
    dry.add_argument("--price-per-hour", type=float, help="price of one model actor's machine an hour, for the cost")
    return ap.parse_args(argv)


def read_spec(args: argparse.Namespace) -> RestoreSpec:
    """The spec of ``args.spec`` (else the demo's, else none) with the flags over it.

    Raises:
        SpecError: the spec, or a flag, is not valid.
    """
    path = args.spec or (DEMO_SPEC if DEMO_SPEC.exists() else None)
    if path is not None:
        return load_spec(path, flag_overrides(args, FLAGS))
    data: dict = {}
    for dotted, value in flag_overrides(args, FLAGS).items():  # as read_yaml applies them to a file's
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return parse_spec(data, source="flags")


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command with ``argv`` (None: ``sys.argv[1:]``); the exit code (see the module docstring)."""
    args = parse_args(argv, prog=prog)
    try:
        spec = read_spec(args)
    except SpecError as err:
        print(err, file=sys.stderr)
        return 2
    if args.dry_run or args.dry_run_json:
        from .dry_run import dry_run_main

        return dry_run_main(spec, args)
    return _restore(spec, args)


def checked_ref(spec: RestoreSpec, args: argparse.Namespace, *, write: bool = True):
    """The run's weights, after the checks that come before any work (``write``: probe the output with a
    write; a dry run only lists it); an exit code (2) where one fails, with its line printed."""
    from dgunet.checkpoint import CheckpointMismatchError
    from dgunet.registry import NoBundledModelError

    from .job import model_set
    from .preflight import StorageAccessError, check_storage
    from .summary import check_run_id

    try:
        if args.run_id is not None:
            check_run_id(args.run_id)  # it names files under the output
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    try:
        ref = model_set(spec)  # before Ray, the listing and the lock: a wrong spec fails in a second
    except (CheckpointMismatchError, NoBundledModelError) as err:
        print(err if spec.task == "auto" else f"model.weights: {err}", file=sys.stderr)
        return 2
    try:
        check_storage(spec, write=write)  # a wrong path, bucket, credential or endpoint: one line, before any work
    except StorageAccessError as err:
        print(err, file=sys.stderr)
        return 2
    return ref


def _restore(spec: RestoreSpec, args: argparse.Namespace) -> int:
    from .job import run_restore
    from .lock import LockedError
    from .ray_env import RayAccessError, init_ray
    from .ray_version import RayVersionError, check_ray_version

    ref = checked_ref(spec, args)
    if isinstance(ref, int):
        return ref
    try:
        check_ray_version()  # a Ray without token auth would start or join a cluster without it
        started_ray = init_ray(args.address, auth=not args.local_ray_no_auth)
    except (RayAccessError, RayVersionError) as err:
        print(err, file=sys.stderr)
        return 2
    if args.local_ray_no_auth:
        print("WARNING: the local Ray runs without token auth: any process on this machine can run code in it.")
    try:
        summary = run_restore(spec, run_id=args.run_id, models=ref)
    except LockedError as err:
        print(err, file=sys.stderr)
        return 3
    print(summary.render())
    if summary.interrupted:
        if started_ray:  # its processes are this run's to stop: exit_with() skips the shutdown that would at exit
            import ray

            ray.shutdown()
        return 128 + signal.Signals[summary.interrupted].value  # the shells' convention: 130, 143
    if summary.processed and summary.failed / summary.processed > spec.allow_failed_fraction:
        print(f"{summary.failed} of {summary.processed} inputs failed", file=sys.stderr)
        return 1
    return 0


def exit_with(code: int) -> None:
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


def console() -> None:
    """The ``dgunet-restore`` console script."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # for the Ray workers it starts: their logs as they come
    exit_with(main(prog="dgunet-restore"))
