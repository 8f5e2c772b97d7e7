"""The models of a run, decided once by the driver and checked by every actor: a :class:`ModelSet`.

A single-task run is a set of one model whose rule passes what its gate passes; ``task: auto`` is the same
set with a model per task and the router, which sends each image to the task it needs. The model stage
(:class:`~pipeline.stages.model.RestoreModel`) asks the set which task restores an image
(:meth:`ModelSet.task_of`), and nothing else tells the two kinds of run apart.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..rows import Col, model_id

if TYPE_CHECKING:
    from ..routing import Router


@dataclass(frozen=True)
class ModelRef:
    """Which weights a run uses, decided once by the driver and checked by every actor."""

    arch: str
    task: str
    sha256: str
    weights_uri: str | None  # None: the package's bundled default for the task
    widths: dict[str, int]  # the weights' n_feat, scale_unetfeats, scale_orsnetfeats, depth
    # The weights' default gate: ``estimate`` (of dgunet.tasks.ESTIMATES), ``below`` (its level, or None)
    # and ``restore_lossy``, from their metadata (a checkpoint's: the task's fallback, the task table's).
    gate: dict[str, Any]

    @property
    def id(self) -> str:
        return model_id(self.arch, self.task, self.sha256)


@dataclass(frozen=True)
class ModelSet:
    """The weights of a run: each task's :class:`ModelRef`, or the reason it has none (its images then
    pass through), and the rule that gives each image its task: the ``router`` (``task: auto``), or, with
    one model and no router, its ``gate`` (:meth:`pipeline.spec.GateSpec.settings`: ``gate_on``,
    ``pass_below`` and ``restore_lossy``; empty: every image is restored)."""

    models: dict[str, ModelRef]
    missing: dict[str, str] = field(default_factory=dict)  # task -> why no model serves it
    router: Router | None = None
    gate: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.router is None and (len(self.models) != 1 or self.missing):
            raise ValueError(f"Expected one model without a router, but got {sorted(self.models)} instead.")

    @classmethod
    def one(cls, ref: ModelRef, gate: dict[str, Any] | None = None) -> ModelSet:
        """The set of a single-task run: ``ref``, gated by ``gate`` (None: every image restored)."""
        return cls({ref.task: ref}, gate=dict(gate or {}))

    @property
    def id(self) -> str:
        """The ``model`` of the run's stats rows, so that a re-run skips what the same models already did:
        the one model's id; with the router, ``auto/auto@sha256:<digest>`` of it and every task's weights."""
        if self.router is None:
            return next(iter(self.models.values())).id
        parts = {"router": self.router.sha256, **{t: r.id for t, r in sorted(self.models.items())}}
        return model_id("auto", "auto", hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest())

    @property
    def estimates(self) -> tuple[str, ...]:
        """What the decode stage must measure for the rule: the gate's estimate (the router's measures are
        taken with it)."""
        return () if self.router is not None else (next(iter(self.models.values())).gate["estimate"],)

    def task_of(self, batch: dict[str, np.ndarray], i: int) -> tuple[str | None, str]:
        """The task that restores row ``i`` of a decoded batch, or None and why it passes."""
        if self.router is not None:
            from ..routing import TASK_OF

            route = str(batch[Col.ROUTE][i])
            task = TASK_OF.get(route)
            if task is None:
                return None, route
            return (task, "") if task in self.models else (None, self.missing.get(task, f"no {task} model"))
        (task,) = self.models
        gate_on, below = self.gate.get("gate_on"), self.gate.get("pass_below")
        if below is None or gate_on not in batch:
            return task, ""
        if self.gate.get("restore_lossy") and bool(batch[Col.LOSSY][i]):
            return task, ""
        level = float(batch[gate_on][i])
        if np.isfinite(level) and level < below:
            return None, f"{gate_on.removesuffix('_before')} {level:.2f} below the gate's {below:g}"
        return task, ""


def resolve_auto(weights: dict[str, str | None], router: Router, storage=None) -> ModelSet:
    """The :class:`ModelSet` of a ``task: auto`` run: every task's weights checked as :func:`resolve_model`
    checks them. A task with no weights given and none bundled has no model (its images pass).

    Raises:
        CheckpointMismatchError: a task's weights do not fit; the message starts with its spec key.
    """
    from dgunet import NoBundledModelError
    from dgunet.checkpoint import CheckpointMismatchError

    models, missing = {}, {}
    for task, uri in weights.items():
        try:
            models[task] = resolve_model(task, arch=None, weights=uri, storage=storage)
        except NoBundledModelError:
            missing[task] = f"no {task} model: none bundled, and auto.{task}_weights not given"
        except CheckpointMismatchError as err:
            raise CheckpointMismatchError(f"auto.{task}_weights: {err}") from None
    return ModelSet(models, missing, router=router)


def resolve_model(task: str, *, arch: str | None, weights: str | None, storage=None, **widths) -> ModelRef:
    """Identify the weights of a run, on the driver: reads the file once for its sha256 and checks that it
    fits ``arch`` and ``widths`` (None: the weights' own) with ``dgunet.create_model`` on the ``meta``
    device (shapes only), so a wrong spec fails here, in a second, rather than in every actor.

    Raises:
        CheckpointMismatchError: the weights do not fit; the message names the file, then every mismatched
            key, or the arch or width that differs from what the weights record.
        NoBundledModelError: ``weights`` is None and no weights for ``task`` ship with the package.
    """
    from ..storage import read_bytes

    data = None if weights is None else read_bytes(weights, storage)
    model = _create(task, arch, weights, data, widths, device="meta")
    cfg, gate = model.cfg, model.weights.gate
    return ModelRef(
        arch=cfg.arch,
        task=task,
        sha256=model.weights.sha256,
        weights_uri=weights,
        widths={k: getattr(cfg, k) for k in ("n_feat", "scale_unetfeats", "scale_orsnetfeats", "depth")},
        gate={"estimate": gate.estimate, "below": gate.below, "restore_lossy": gate.restore_lossy},
    )


def load_model(ref: ModelRef, storage=None):
    """Build and load the model of ``ref`` on the CPU, in eval mode; checks the sha256."""
    from dgunet.checkpoint import sha256_of

    from ..storage import read_bytes

    data = None
    if ref.weights_uri is not None:
        data = read_bytes(ref.weights_uri, storage)
        digest = sha256_of(data)
        if digest != ref.sha256:
            raise ValueError(f"Weights at {ref.weights_uri} changed during the run: sha256 {digest}, not {ref.sha256}.")
    model = _create(ref.task, ref.arch, ref.weights_uri, data, ref.widths)
    if model.weights.sha256 != ref.sha256:
        raise ValueError(f"Expected bundled weights {ref.sha256}, but got {model.weights.sha256} instead.")
    return model


def _create(task: str, arch: str | None, uri: str | None, data: bytes | None, widths: dict, device=None):
    """``dgunet.create_model`` of the bundled default (``data`` None) or of a checkpoint's bytes, read from
    ``uri`` with the run's storage options; a mismatch names the URI."""
    from dgunet import create_model
    from dgunet.checkpoint import CheckpointMismatchError

    try:
        return create_model(task, arch=arch, weights=data, device=device, **widths)
    except CheckpointMismatchError as err:
        if uri is None:
            raise
        raise CheckpointMismatchError(f"{uri}: {err}") from None
