"""A read task's start, before and after the CPU stages stopped loading torch.

A Ray worker that runs its first read (or decode, or write) task imports the stage's modules first. This
times that import in fresh interpreters: the read stage's modules as they are now, and the same with
torch imported beside them, which is what ``pipeline.storage`` pulled in through
``dgunet.checkpoint`` before. It prints the median of ``--runs`` fresh interpreters each, and their ratio,
all measured in this one run, and appends them to ``bench/results/import_time.jsonl``.

    python bench/import_time.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READ_STAGE = ["pipeline.storage", "pipeline.stages.read"]


def import_seconds(modules: list[str], runs: int) -> float:
    """The median wall time of a fresh interpreter importing ``modules`` and exiting."""
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per case")
    args = parser.parse_args(argv)
    bare = import_seconds([], args.runs)
    after = import_seconds(READ_STAGE, args.runs)
    before = import_seconds(["torch", *READ_STAGE], args.runs)
    print(f"interpreter alone            {bare:6.2f} s")
    print(f"read stage, no torch (now)   {after:6.2f} s")
    print(f"read stage with torch (was)  {before:6.2f} s")
    print(f"a read task starts {before / after:.1f}x faster ({before - after:.2f} s less per fresh worker)")
    record = {"runs": args.runs, "interpreter_s": bare, "read_stage_s": after, "with_torch_s": before}
    with open(ROOT / "bench" / "results" / "import_time.jsonl", "a") as f:
        f.write(json.dumps({**record, "ratio": before / after}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
