"""Fail points: named places where the job can be made to fail on purpose, to test its recovery.

Set ``DGUNET_FAILPOINTS`` in the driver's environment to ``name=substring`` pairs separated by ``;``.
The driver hands them to the stages, so they reach every worker. Each fires for the rows whose input URI
contains the substring (a compaction's, for the step whose name contains it):

* ``model.crash``: the model actor's process exits at once, as in a segfault or a kill by the OOM killer;
* ``model.oom``: running the image whole raises an out-of-memory error, as CUDA does on a huge image;
* ``compact.kill``: a stats compaction's process dies at the named step (``journal``, ``part``,
  ``written`` or ``source``; see :mod:`pipeline.run.compaction`), as under SIGKILL;
* ``write.stall``: writing the image hangs (for :data:`STALL_SECONDS`), as a write to a store that stopped
  answering does; it announces itself on the worker's stderr first;
* ``model.hold``: the model actor, once it has been given the number of images named (``model.hold=4``),
  holds its next batch until the run is stopped (its stop flag raised), then goes on as a stopped run does;
  with ``model.hold=4@/path``, also until that file exists (for a run that is not stopped). It announces
  the hold on the worker's stderr. A test stops or kills a run at a point of its choosing this way,
  whatever the machine's speed;
* ``train.compile``: the first compiled training step fails, as a CUDA graph capture that torch refuses
  does, for the training runs whose task contains the substring (training then goes on eagerly).

Unset (the normal case), nothing is checked.
"""

from __future__ import annotations

import os

ENV = "DGUNET_FAILPOINTS"
KNOWN = frozenset({"model.crash", "model.oom", "model.hold", "write.stall", "compact.kill", "train.compile"})
COUNTS = frozenset({"model.hold"})  # fail points whose value is a count of images, not a substring
STALL_SECONDS = 600.0


def from_env(environ=os.environ) -> dict[str, str]:
    """The fail points set in ``environ``; an unknown name is an error, not a silently ignored typo."""
    points = {}
    for item in filter(None, (s.strip() for s in environ.get(ENV, "").split(";"))):
        name, _, needle = item.partition("=")
        if name not in KNOWN or not needle:
            raise ValueError(f"{ENV}: expected name=substring with a name in {sorted(KNOWN)}, but got {item!r}.")
        if name in COUNTS and not needle.partition("@")[0].isdigit():
            raise ValueError(f"{ENV}: expected {name}=<number of images>[@<release file>], but got {item!r}.")
        points[name] = needle
    return points


def fires(points: dict[str, str], name: str, uri: str) -> bool:
    needle = points.get(name)
    return needle is not None and needle in uri
