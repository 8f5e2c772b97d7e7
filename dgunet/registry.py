"""Model names, task presets and the weights that ship with the package.

Everything about a variant is declared once here: the widths of each official task folder, and for each
bundled weights file its task, architecture, widths, parameter count, sha256, how it was trained and
its measured quality.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, get_args

from torch import nn

from .model import ARCHS, DGUNet, DGUNetConfig, DGUNetPlus

Task = Literal["denoise", "deblur", "derain"]
TASKS: tuple[str, ...] = get_args(Task)

# Widths (n_feat, scale_unetfeats, scale_orsnetfeats) of the official release, per task folder.
PRESETS: dict[tuple[str, str], tuple[int, int, int]] = {
    ("deblur", "dgunet"): (80, 48, 32),
    ("deblur", "dgunet_plus"): (96, 48, 32),
    ("denoise", "dgunet"): (80, 48, 32),
    ("denoise", "dgunet_plus"): (80, 40, 32),
    ("derain", "dgunet"): (40, 20, 16),
    ("derain", "dgunet_plus"): (40, 20, 16),
}


def make_config(
    arch: str = "dgunet",
    *,
    task: str | None = None,
    n_feat: int | None = None,
    scale_unetfeats: int | None = None,
    scale_orsnetfeats: int | None = None,
    depth: int = 5,
) -> DGUNetConfig:
    """The :class:`DGUNetConfig` of ``arch``: a task preset's widths, any of them overridden."""
    if arch not in ARCHS:
        raise ValueError(f"Expected arch in {ARCHS}, but got {arch!r} instead.")
    if task is not None and task not in TASKS:
        raise ValueError(f"Expected task in {TASKS}, but got {task!r} instead.")
    widths = PRESETS[(task or "denoise", arch)]
    given = (n_feat, scale_unetfeats, scale_orsnetfeats)
    n_feat, scale_unetfeats, scale_orsnetfeats = (g if g is not None else w for g, w in zip(given, widths))
    return DGUNetConfig(
        arch=arch,
        n_feat=n_feat,
        scale_unetfeats=scale_unetfeats,
        scale_orsnetfeats=scale_orsnetfeats,
        depth=depth,
    )


def model_from_config(cfg: DGUNetConfig) -> nn.Module:
    return DGUNet(cfg) if cfg.arch == "dgunet" else DGUNetPlus(cfg)


def build_model(arch: str = "dgunet", *, task: str | None = None, **widths: Any) -> nn.Module:
    """Build an untrained DGUNet (``"dgunet"``) or DGUNet+ (``"dgunet_plus"``).

    Args:
        arch: ``"dgunet"`` (middle stages share weights) or ``"dgunet_plus"`` (independent stages).
        task: take the official widths of that task folder (``denoise``, ``deblur``, ``derain``);
            without it, the denoising widths.
        **widths: ``n_feat``, ``scale_unetfeats``, ``scale_orsnetfeats``, ``depth`` override the preset.

    >>> model = build_model("dgunet", n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8)
    >>> model = build_model("dgunet_plus", task="deblur")
    """
    return model_from_config(make_config(arch, task=task, **widths))


def check_weights(cfg: DGUNetConfig, checkpoint: bytes | Mapping[str, Any], *, name: str = "<bytes>") -> None:
    """Check that a checkpoint's keys and shapes fit the model of ``cfg``, without building its weights.

    The model is built on the ``meta`` device (shapes only, no memory, no initialisation), so this takes
    milliseconds even for the full widths: a driver checks a run's weights before it does anything else.

    Raises:
        CheckpointMismatchError: naming every missing, unexpected and mis-shaped key.

    >>> cfg = make_config("dgunet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    >>> check_weights(cfg, {"state_dict": model_from_config(cfg).state_dict()})
    """
    import torch

    from .checkpoint import check_state_dict, extract_state_dict, parse_checkpoint

    with torch.device("meta"):
        model = model_from_config(cfg)
    obj = parse_checkpoint(checkpoint, name=name) if isinstance(checkpoint, (bytes, bytearray)) else checkpoint
    check_state_dict(model, extract_state_dict(obj), name=name)


def num_params(model: nn.Module) -> int:
    """Unique parameters (shared modules counted once, as the official figures are)."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Weights:
    """A weights file shipped inside the package, with everything known about it."""

    name: str  # "<arch>.<tag>", e.g. "dgunet.denoise_small"
    file: str  # file name under dgunet/weights/
    task: str
    config: DGUNetConfig
    num_params: int
    sha256: str
    recipe: dict[str, Any] = field(default_factory=dict)  # command, spec, data, steps, wall time
    metrics: dict[str, Any] = field(default_factory=dict)  # measured quality, with how it was measured
    inference: dict[str, Any] = field(default_factory=dict)  # recommended InferenceOptions fields

    def path(self):
        return resources.files("dgunet") / "weights" / self.file


def _load_registry() -> dict[str, Weights]:
    """Read the bundled weights' metadata (``weights/index.json``, one entry per file)."""
    index = resources.files("dgunet") / "weights" / "index.json"
    if not index.is_file():
        return {}
    entries = json.loads(index.read_text())
    out = {}
    for e in entries:
        cfg = DGUNetConfig(**e.pop("config"))
        out[e["name"]] = Weights(config=cfg, **e)
    return out


WEIGHTS: dict[str, Weights] = _load_registry()


class NoBundledModelError(LookupError):
    """No weights for the task ship with the package."""


def default_weights(task: str) -> Weights:
    """The bundled default weights of ``task``.

    Raises:
        NoBundledModelError: none ship for ``task``.
    """
    if task not in TASKS:
        raise ValueError(f"Expected task in {TASKS}, but got {task!r} instead.")
    for w in WEIGHTS.values():
        if w.task == task:
            return w
    shipped = sorted({w.task for w in WEIGHTS.values()}) or "none"
    raise NoBundledModelError(
        f"No trained default model for task {task!r} ships with this package (bundled tasks: {shipped}). "
        "Train one with jobs/train.py, or build_model(...) and load_checkpoint(model, uri) your own weights."
    )


def load_pretrained(task: str = "denoise", *, name: str | None = None) -> nn.Module:
    """The bundled default model of ``task`` (or the weights called ``name``), in eval mode, on the CPU.

    Works offline: the weights are files inside the package, checked against their sha256.

    >>> from dgunet import load_pretrained, restore
    >>> model = load_pretrained("denoise")  # doctest: +SKIP
    """
    from .checkpoint import load_weights, sha256_of

    w = WEIGHTS[name] if name is not None else default_weights(task)
    data = w.path().read_bytes()
    digest = sha256_of(data)
    if digest != w.sha256:
        raise ValueError(f"Expected sha256 {w.sha256} for bundled weights {w.file}, but got {digest} instead.")
    model = model_from_config(w.config)
    load_weights(model, data, name=w.file)
    model.weights = w  # so that callers can report what they ran
    return model.eval()


def describe(cfg: DGUNetConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
