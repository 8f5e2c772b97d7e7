"""Routing each image to the restoration it needs (``task: auto``).

The decode stage measures :func:`pipeline.quality.degradation_features` once per image; a
:class:`Router`, a small classifier shipped as JSON with its card (``router.json`` beside this file, made
by ``python jobs/train_router.py``), names what degrades it, with the classifier's probability:

>>> router = Router.load()
>>> router.classes
('clean', 'noise', 'jpeg', 'blur', 'rain')

Each class has its task (:data:`TASK_OF`, from the task table's ``routes``: dgunet/tasks.py): a clean image
passes through untouched, and a class that no task takes passes too.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from dgunet.tasks import task_of_route

CLASSES = ("clean", "noise", "jpeg", "blur", "rain")
TASK_OF: dict[str, str | None] = {c: task_of_route(c) for c in CLASSES}
INPUTS = (
    "log1p_noise",
    "log1p_rain",
    "rain_excess",
    "blur",
    "log_blockiness",
    "jpeg_zeros",
    "log_jpeg_step",
    "falloff2",
    "falloff4",
    "log_structure",
    "log_contrast",
    "log1p_noise_level",
)


def _inputs(features: Mapping[str, float]) -> dict[str, float]:
    noise = features["noise"]
    noise = 0.0 if noise is None or not math.isfinite(noise) else noise
    return {
        "log1p_noise": math.log1p(max(0.0, noise)),
        "log1p_rain": math.log1p(max(0.0, features["rain"])),
        "rain_excess": features["rain_excess"],
        "blur": features["blur"],
        "log_blockiness": math.log(max(1e-3, features["blockiness"])),
        "jpeg_zeros": features["jpeg_zeros"],
        "log_jpeg_step": math.log(max(1.0, features["jpeg_step"])),
        "falloff2": features["falloff2"],
        "falloff4": features["falloff4"],
        "log_structure": math.log(features["structure"] + 1e-3),
        "log_contrast": math.log(features["contrast"] + 1e-3),
        "log1p_noise_level": math.log1p(max(0.0, _finite(features.get("noise_level", noise)))),
    }


def _finite(value: float | None) -> float:
    return 0.0 if value is None or not math.isfinite(value) else value


def feature_vector(features: Mapping[str, float], inputs: tuple[str, ...] = INPUTS) -> np.ndarray:
    """A classifier's ``inputs`` (of :data:`INPUTS`) from :func:`~pipeline.quality.degradation_features`:
    levels on log scales, an unknown noise level (an image too small or flat to tell) as 0."""
    values = _inputs(features)
    return np.array([values[k] for k in inputs], np.float64)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


MAX_TREE_DEPTH = 64  # a decision tree of the router deeper than this is refused


def _check_tree(tree: Mapping[str, list], *, n_inputs: int, n_classes: int) -> None:
    """Refuse a tree that classifying could not walk to a leaf of: node indices out of range, a feature or
    a leaf's class counts that do not fit, a cycle (or a node reached twice), or more than
    :data:`MAX_TREE_DEPTH` levels. A router JSON is an operator's input; a cycle would hang every decode.

    Raises:
        ValueError: what is wrong, and where.
    """
    try:
        left, right, feature, value = (list(tree[k]) for k in ("left", "right", "feature", "value"))
        n = len(tree["threshold"])
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"Expected a router tree with left, right, feature, threshold and value, but got {exc!r} instead."
        ) from None
    if n < 1 or any(len(a) != n for a in (left, right, feature, value)):
        raise ValueError(f"Expected router tree arrays of one length (at least 1), but got {n} thresholds instead.")
    seen, stack = set(), [(0, 1)]
    while stack:
        node, depth = stack.pop()
        if node in seen or depth > MAX_TREE_DEPTH:
            why = "a cycle, or a node reached twice" if node in seen else f"more than {MAX_TREE_DEPTH} levels"
            raise ValueError(f"Expected a router tree, but got {why} at node {node} instead.")
        seen.add(node)
        if left[node] == -1:
            counts = np.asarray(value[node], np.float64).ravel()
            if counts.size != n_classes or not counts.sum() > 0:
                raise ValueError(f"Expected {n_classes} class counts at leaf {node}, but got {value[node]} instead.")
            continue
        children = (left[node], right[node])
        if not all(isinstance(c, int) and 0 < c < n for c in children) or not 0 <= feature[node] < n_inputs:
            raise ValueError(
                f"Expected node {node}'s children in 1..{n - 1} and feature in 0..{n_inputs - 1}, "
                f"but got {children} and {feature[node]} instead."
            )
        stack += [(c, depth + 1) for c in children]


@dataclass(frozen=True)
class Router:
    """A classifier over :func:`feature_vector`: a small multilayer perceptron (``kind: "mlp"``; no hidden
    layer is logistic regression) or a decision tree of thresholds (``kind: "tree"``).

    ``mlp``: ``mean`` and ``scale`` standardise the inputs, then ``layers`` (``weight``: inputs x outputs,
    ``bias``), ReLU between them, softmax at the end. ``tree``: scikit-learn's node arrays (``left``,
    ``right``, ``feature``, ``threshold``, ``value``: class counts), a leaf where ``left`` is -1.

    ``noise_floor``: an image the classifier calls clean whose ``noise_level`` (the estimate that sees a
    camera's noise as well as white noise) reaches this level is noisy after all, and goes to the denoiser
    (None: the classifier's word is final). A router trained before ``noise_level`` existed reads only the
    white-noise estimate, blind to a camera's noise; the floor is how it sees it.
    """

    kind: str
    classes: tuple[str, ...]
    inputs: tuple[str, ...]
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()
    layers: tuple[dict[str, Any], ...] = ()
    tree: dict[str, list] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)  # how it was trained, and what it scored
    noise_floor: float | None = None  # see above; chosen on held-out photos (docs/models.md, the router)
    sha256: str = ""  # of the JSON it was read from

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "tree"):
            raise ValueError(f"Expected router kind 'mlp' or 'tree', but got {self.kind!r} instead.")
        unknown_inputs = [k for k in self.inputs if k not in INPUTS]
        if unknown_inputs or not self.inputs:
            raise ValueError(f"Expected router inputs from {INPUTS}, but got {tuple(self.inputs)} instead.")
        unknown = set(self.classes) - set(TASK_OF)
        if unknown:
            raise ValueError(f"Expected router classes from {CLASSES}, but got {sorted(unknown)} instead.")
        if self.kind == "tree":
            _check_tree(self.tree, n_inputs=len(self.inputs), n_classes=len(self.classes))

    @classmethod
    def from_json(cls, text: str | bytes) -> Router:
        data = json.loads(text)
        digest = hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()
        data["classes"], data["inputs"] = tuple(data["classes"]), tuple(data["inputs"])
        data["mean"], data["scale"] = tuple(data.get("mean", ())), tuple(data.get("scale", ()))
        data["layers"] = tuple(data.get("layers", ()))
        return cls(**data, sha256=digest)

    def to_json(self) -> str:
        keys = ("kind", "classes", "inputs", "mean", "scale", "layers", "tree", "card", "noise_floor")
        data = {k: getattr(self, k) for k in keys}
        return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}, indent=1)

    @classmethod
    def load(cls, uri: str | None = None, storage=None) -> Router:
        """The router at ``uri`` (read with the run's storage options), or the bundled one."""
        if uri is None:
            return cls.from_json((resources.files(__package__) / "router.json").read_bytes())
        from ..storage import read_bytes

        return cls.from_json(read_bytes(uri, storage))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, ``(N, len(classes))``, of inputs ``x`` ``(N, len(self.inputs))``."""
        x = np.atleast_2d(np.asarray(x, np.float64))
        if self.kind == "tree":
            return np.stack([self._leaf(row) for row in x])
        h = (x - np.array(self.mean)) / np.array(self.scale)
        for i, layer in enumerate(self.layers):
            h = h @ np.array(layer["weight"]) + np.array(layer["bias"])
            if i < len(self.layers) - 1:
                h = _relu(h)
        if h.shape[1] == 1:  # scikit-learn's binary output: the second class's logit
            h = np.concatenate([np.zeros_like(h), h], axis=1)
        h = np.exp(h - h.max(axis=1, keepdims=True))
        return h / h.sum(axis=1, keepdims=True)

    def _leaf(self, row: np.ndarray) -> np.ndarray:
        t, node = self.tree, 0
        while t["left"][node] != -1:
            node = t["left"][node] if row[t["feature"][node]] <= t["threshold"][node] else t["right"][node]
        counts = np.asarray(t["value"][node], np.float64)
        return counts / counts.sum()

    def classify(self, features: Mapping[str, float] | None) -> tuple[str, float]:
        """What degrades an image, and the router's probability for it; ``("clean", nan)`` where the
        features could not be measured (an image under 32 px: nothing a restorer would change)."""
        if features is None:
            return "clean", float("nan")
        p = self.probabilities(feature_vector(features, self.inputs))[0]
        best = int(np.argmax(p))
        if self.classes[best] == "clean" and self.noise_floor is not None and "noise" in self.classes:
            level = _finite(features.get("noise_level"))
            if level >= self.noise_floor:
                return "noise", float(p[self.classes.index("noise")])
        return self.classes[best], float(p[best])
