"""``create_model``: the one way to get a DGUNet, with its weights or untrained.

A task and weights make a model: the task's bundled default, bundled weights by name, or a checkpoint
(a local path, an fsspec URL, or the file's bytes). Weights that record their network (bundled weights
always do, and so do checkpoints saved with a ``config`` beside their ``state_dict``, as training saves
them) decide the arch and widths: one that a caller gives is compared with them and refused, by name,
when it differs, rather than ignored. A checkpoint that records nothing is built at the given arch and
widths over the task's preset, and every key and shape of it is checked as it loads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from . import registry
from .checkpoint import (
    CheckpointMismatchError,
    check_state_dict,
    extract_state_dict,
    load_weights,
    parse_checkpoint,
    read_bytes,
    sha256_of,
)
from .model import ARCHS, DGUNetConfig
from .registry import TASK_GATES, TASKS, Weights, make_config, model_from_config, num_params

WIDTHS = ("n_feat", "scale_unetfeats", "scale_orsnetfeats", "depth")
BYTES_NAME = "the checkpoint"  # what errors call weights given as bytes


def create_model(
    task: str,
    *,
    arch: str | None = None,
    weights: None | bool | str | os.PathLike | bytes | Weights = None,
    device: str | torch.device | None = None,
    **widths: int | None,
) -> nn.Module:
    """A DGUNet for ``task`` with ``weights`` loaded, checked against the arch and widths asked for.

    Args:
        task: ``"denoise"``, ``"deblur"`` or ``"derain"``: the bundled default, preset widths and gate.
        arch: ``"dgunet"`` or ``"dgunet_plus"``; None: the weights' (``"dgunet"`` where they do not say).
        weights: None: the task's bundled default. A bundled weights name (a key of
            :data:`~dgunet.registry.WEIGHTS`, e.g. ``"dgunet.denoise_small"``) or its :class:`Weights`.
            A checkpoint's local path or fsspec URL, or its bytes (official checkpoints, state dicts,
            safetensors: :mod:`dgunet.checkpoint`). False: no weights, an untrained network (for training).
        device: default the CPU. ``"meta"``: shapes only; the weights' keys and shapes checked, not loaded.
        **widths: ``n_feat``, ``scale_unetfeats``, ``scale_orsnetfeats``, ``depth`` (None: not given).
            Weights that record their network must have these values; otherwise they override the preset.

    Returns:
        A :class:`~dgunet.model.DGUNet` or :class:`~dgunet.model.DGUNetPlus` mapping ``(N, 3, H, W)`` floats
        in [0, 1] to their restoration; with weights, in eval mode, its ``weights`` the :class:`Weights`
        loaded (sha256, gate, inference options; a checkpoint's: the task's gate); untrained, in training
        mode, ``weights`` None.

    Raises:
        NoBundledModelError: ``weights`` is None and no weights for ``task`` ship with the package.
        CheckpointMismatchError: the weights are another task's, have another arch or width than given
            (the key named), or their keys and shapes do not fit (every one named).
        UnsafeCheckpointError: the checkpoint is a pickle that would run code.

    >>> from dgunet import create_model
    >>> model = create_model("denoise")  # the bundled default denoiser
    >>> model.weights.name, model.weights.config.n_feat, model.weights.gate.below
    ('dgunet.denoise_small', 8, 4.5)
    >>> create_model("denoise", n_feat=80)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    dgunet.checkpoint.CheckpointMismatchError: Expected n_feat 8, which dgunet.denoise_small has, but got 80 ...
    >>> untrained = create_model("derain", arch="dgunet_plus", weights=False, n_feat=8, scale_unetfeats=4)
    >>> model = create_model("derain", weights="checkpoints/derain/last.pth")  # doctest: +SKIP
    """
    widths = _requested_widths(task, arch, widths)
    if weights is False:
        model = _build(make_config(arch or "dgunet", task=task, **widths), device)
        model.weights = None
        return model
    bundled, checkpoint, name, digest = _open(task, weights)
    cfg = _fitting_config(task, arch, widths, bundled, checkpoint, name)
    model = _build(cfg, device)
    if _is_meta(device):
        check_state_dict(model, extract_state_dict(checkpoint), name=name)
    else:
        load_weights(model, checkpoint, name=name)
    model.weights = bundled or Weights(name, name, task, cfg, num_params(model), digest, gate=TASK_GATES[task])
    return model.eval()


def _requested_widths(task: str, arch: str | None, widths: dict[str, Any]) -> dict[str, int]:
    """The widths given (None dropped), after checking the task, arch and width names."""
    if task not in TASKS:
        raise ValueError(f"Expected task in {TASKS}, but got {task!r} instead.")
    if arch is not None and arch not in ARCHS:
        raise ValueError(f"Expected arch in {ARCHS}, but got {arch!r} instead.")
    unknown = sorted(set(widths) - set(WIDTHS))
    if unknown:
        raise TypeError(f"Expected widths among {WIDTHS}, but got {', '.join(unknown)} instead.")
    return {k: v for k, v in widths.items() if v is not None}


def _open(task: str, weights: Any) -> tuple[Weights | None, dict[str, Any], str, str]:
    """``(bundled weights or None, the parsed checkpoint, its name for errors, sha256 of its bytes)``."""
    if weights is None or isinstance(weights, Weights) or (isinstance(weights, str) and weights in registry.WEIGHTS):
        if weights is None:
            w = registry.default_weights(task)
        else:
            w = registry.WEIGHTS[weights] if isinstance(weights, str) else weights
        if w.task != task:
            raise CheckpointMismatchError(
                f"Expected weights for task {task!r}, but got {w.name}, which is for {w.task!r}, instead."
            )
        data = w.path().read_bytes()
        digest = sha256_of(data)
        if digest != w.sha256:
            raise ValueError(f"Expected sha256 {w.sha256} for bundled weights {w.file}, but got {digest} instead.")
        return w, parse_checkpoint(data, name=w.file), w.name, digest
    if isinstance(weights, (bytes, bytearray)):
        data, name = bytes(weights), BYTES_NAME
    elif isinstance(weights, (str, os.PathLike)):
        name = os.fspath(weights)
        data = _read(name)
    else:
        raise TypeError(
            "Expected weights None, False, a bundled weights name, a checkpoint's path or URL, or its bytes, "
            f"but got {type(weights).__name__} instead."
        )
    return None, parse_checkpoint(data, name=name), name, sha256_of(data)


def _read(uri: str) -> bytes:
    try:
        return read_bytes(uri)
    except FileNotFoundError:
        if "/" in uri or os.sep in uri:
            raise
        shipped = ", ".join(registry.WEIGHTS) or "none ship"
        raise FileNotFoundError(
            f"Expected bundled weights ({shipped}) or a checkpoint's path or URL, but got {uri!r}, which is "
            "neither, instead."
        ) from None


def _fitting_config(
    task: str,
    arch: str | None,
    widths: dict[str, int],
    bundled: Weights | None,
    checkpoint: Mapping[str, Any],
    name: str,
) -> DGUNetConfig:
    """The network the weights need: the one they record, if any, after checking that every arch and
    width given agrees with it; else the task preset at the arch and widths given."""
    if bundled is not None:
        recorded = bundled.config
    else:
        recorded = _recorded_config(checkpoint)
        trained_for = _recorded_task(checkpoint)
        if trained_for not in (None, task):
            raise CheckpointMismatchError(
                f"Expected weights for task {task!r}, but got {name}, which records task {trained_for!r}, instead."
            )
    if recorded is None:
        return make_config(arch or "dgunet", task=task, **widths)
    for key, value in {"arch": arch, **widths}.items():
        if value is not None and value != getattr(recorded, key):
            raise CheckpointMismatchError(
                f"Expected {key} {getattr(recorded, key)!r}, which {name} has, but got {value!r} instead. "
                f"Leave {key} out to take the weights' own."
            )
    return recorded


def _recorded_config(checkpoint: Mapping[str, Any]) -> DGUNetConfig | None:
    """The :class:`DGUNetConfig` a checkpoint saved beside its weights. A ``config`` of another shape is
    some other program's (foreign checkpoints carry their own): its keys and shapes are still checked."""
    config = checkpoint.get("config")
    fields = set(DGUNetConfig.__dataclass_fields__)
    if not isinstance(config, Mapping) or "arch" not in config or not set(config) <= fields:
        return None
    return DGUNetConfig(**config)


def _recorded_task(checkpoint: Mapping[str, Any]) -> str | None:
    spec = checkpoint.get("spec")
    task = spec.get("task") if isinstance(spec, Mapping) else None
    return task if task in TASKS else None


def _is_meta(device: str | torch.device | None) -> bool:
    return device is not None and torch.device(device).type == "meta"


def _build(cfg: DGUNetConfig, device: str | torch.device | None) -> nn.Module:
    if _is_meta(device):
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            return model_from_config(cfg)
    model = model_from_config(cfg)
    return model if device is None else model.to(device)
