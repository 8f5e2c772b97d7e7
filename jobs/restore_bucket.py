"""Restore every image under a prefix with DGUNet: the ``dgunet-restore`` command, as a script.

    python jobs/restore_bucket.py                                  # the embedded demo, on a local Ray
    python jobs/restore_bucket.py --input s3://bucket/scans --output s3://bucket/restored
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/restore_bucket.py

The same flags, exit codes and code as ``dgunet-restore`` (pipeline/run/cli.py); this file stays so that
``ray job submit --working-dir .`` runs the checkout it uploads (``python jobs/restore_bucket.py --help``).
"""

from __future__ import annotations

import os

from pipeline.run.cli import DEMO_SPEC, FLAGS, exit_with, main, parse_args

__all__ = ["DEMO_SPEC", "FLAGS", "main", "parse_args"]

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    exit_with(main())
