"""Merge the stats parts under an output prefix into a few parts in the current layout: the latest row of
each input and model, sorted, in indexed row groups (see pipeline/run/compaction.py).

    python jobs/compact_stats.py --output s3://archive/restored
    python jobs/compact_stats.py --spec jobs/specs/denoise.yaml          # the spec's output, input and keys
    python jobs/compact_stats.py --output ./restored --input ./scans --history-days 90
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/compact_stats.py --output s3://archive/restored

Runs restore_bucket.py do this by themselves at their end once the earlier runs' parts exceed
stats.compact_after; this job does it now, whatever their number. It takes the output's run lock, so it
never runs beside a run. --input names the prefix that parts written before the sorted layout (and
manifest runs' parts) are laid out for, where their inputs lie under it.

Exit code 0 when compacted (or nothing to do), 1 when a file under stats/ is not a stats part (named; it
is never deleted, and nothing was changed), 2 for bad flags or spec, 3 when a run holds the output's lock.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

from pipeline.spec import RestoreSpec, SpecError, StatsSpec, StorageSpec, add_spec_flags, flag_overrides, load_spec
from pipeline.storage import metadata_service_host

FLAGS = {
    "output": "output.uri",
    "input": "input.uri",
    "endpoint_url": "storage.endpoint_url",
    "history_days": "stats.history_days",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", type=Path, help="a restore job spec: its output, input, storage and stats keys")
    add_spec_flags(ap, FLAGS, RestoreSpec)
    return ap.parse_args(argv)


def settings(args: argparse.Namespace) -> tuple[str, str | None, StorageSpec, StatsSpec]:
    """Output, input prefix, storage and stats settings, from the spec and the flags over it."""
    if args.spec:
        spec = load_spec(args.spec, flag_overrides(args, FLAGS))
        return spec.output.uri, None if spec.input.manifest else spec.input.uri, spec.storage, spec.stats
    if not args.output:
        raise SpecError("Expected --output (or --spec), but got neither.")
    for key, uri in (("output.uri", args.output), ("input.uri", args.input)):
        if uri and (host := metadata_service_host(uri)):
            raise SpecError(f"{key}: refusing {uri!r}: {host} is a cloud metadata service.")
    stats = StatsSpec(**({"history_days": args.history_days} if args.history_days is not None else {}))
    return args.output, args.input, StorageSpec(endpoint_url=args.endpoint_url), stats


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        output, input_uri, storage_spec, stats = settings(args)
    except (SpecError, ValueError) as err:
        print(err, file=sys.stderr)
        return 2
    from pipeline.run.compaction import compact_stats
    from pipeline.run.lock import LockedError, RunLock
    from pipeline.stats import StatsFileError

    storage = storage_spec.options()
    run_id = time.strftime("compact-%Y%m%dT%H%M%SZ-", time.gmtime()) + secrets.token_hex(3)
    try:
        with RunLock(output, run_id, storage):
            done = compact_stats(output, storage=storage, input_uri=input_uri, history_days=stats.history_days)
    except LockedError as err:
        print(err, file=sys.stderr)
        return 3
    except StatsFileError as err:
        print(err, file=sys.stderr)
        return 1
    if done.recovered:
        print(done.recovered)
    print(
        f"compacted {done.sources} stats parts ({done.rows_in} rows) into {len(done.parts)} "
        f"({done.rows_out} rows) in {done.seconds:.1f} s"
    )
    print(json.dumps(done.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
