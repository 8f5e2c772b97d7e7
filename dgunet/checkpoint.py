"""Reading and writing DGUNet checkpoints, local or on any fsspec URL.

Accepted formats, all read without running code:

* the official training checkpoints ``{'epoch', 'state_dict', 'optimizer'}``, with or without the
  ``module.`` prefix that ``nn.DataParallel`` adds;
* bare state dicts (``torch.save(model.state_dict())``);
* safetensors files.

Pickled files are opened with ``torch.load(weights_only=True)``: a file that would construct arbitrary
objects (and so could run code) is refused with :class:`UnsafeCheckpointError` before anything runs.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .io import read_bytes as read_bytes  # checkpoints' callers read through here
from .io import write_file_atomic

_SAFETENSORS_SUFFIXES = (".safetensors", ".st")


class UnsafeCheckpointError(ValueError):
    """The checkpoint holds objects that only a full (code-running) unpickle could build."""


class CheckpointMismatchError(ValueError):
    """The weights do not fit the model asked for: their keys or shapes, or the task, arch or widths they
    record."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_checkpoint(data: bytes, *, name: str = "<bytes>") -> dict[str, Any]:
    """Decode checkpoint bytes into a plain dict without running code.

    Returns:
        For pickled files the loaded top-level object (a dict); for safetensors ``{"state_dict": ...}``.

    Raises:
        UnsafeCheckpointError: the pickle needs more than tensors and plain containers.
        ValueError: the bytes are neither a torch checkpoint nor safetensors.
    """
    if name.endswith(_SAFETENSORS_SUFFIXES) or _looks_like_safetensors(data):
        from safetensors.torch import load as load_safetensors

        return {"state_dict": load_safetensors(data)}
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError for forbidden globals
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
            raise UnsafeCheckpointError(
                f"Refusing to load {name}: it holds objects other than tensors and plain containers, "
                "which only a code-running unpickle could build. Convert it to a state dict or safetensors "
                f"with code you trust. ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            ) from None
        raise ValueError(
            f"Expected a torch checkpoint or safetensors file at {name}, but could not read it: {exc}"
        ) from exc
    if not isinstance(obj, Mapping):
        raise ValueError(f"Expected a dict in checkpoint {name}, but got {type(obj).__name__} instead.")
    return dict(obj)


def _looks_like_safetensors(data: bytes) -> bool:
    # safetensors: 8-byte little-endian header length, then a JSON header starting with '{'.
    if len(data) < 10:
        return False
    n = int.from_bytes(data[:8], "little")
    return 0 < n < len(data) and data[8:9] == b"{"


def extract_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint dict, with any ``module.`` prefix removed.

    Official checkpoints keep them under ``state_dict``; bare state dicts are the weights themselves.
    """
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, Mapping):
        raise ValueError(f"Expected a mapping of weights under 'state_dict', but got {type(sd).__name__} instead.")
    out = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"Expected tensors in the state dict, but {key!r} is a {type(value).__name__}.")
        out[key.removeprefix("module.")] = value
    return out


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, name: str = "the checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` naming every missing, unexpected and mis-shaped key.

    Only names and shapes are compared, so ``model`` may live on the ``meta`` device (no memory, no init):
    that is how ``create_model(..., device="meta")`` checks weights without loading them.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")
                parts.append(f"{len(items)} {title} key(s): {shown}")
        raise CheckpointMismatchError(
            f"Expected weights that fit {_described(model)} in {name}, but got {'; '.join(parts)} instead. "
            "Are the arch and widths the ones the weights were trained with?"
        )


def _described(model: nn.Module) -> str:
    """``dgunet (n_feat=80, scale_unetfeats=48, scale_orsnetfeats=32, depth=5)``, or the class name."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        return type(model).__name__
    widths = ", ".join(f"{k}={getattr(cfg, k)}" for k in ("n_feat", "scale_unetfeats", "scale_orsnetfeats", "depth"))
    return f"{cfg.arch} ({widths})"


def load_weights(model: nn.Module, checkpoint: bytes | Mapping[str, Any], *, name: str = "<bytes>") -> dict[str, Any]:
    """Load a checkpoint's weights into ``model`` in place: the one way weights enter a model.

    Every key and shape is checked first (:func:`check_state_dict`), so a mismatch names its keys
    instead of failing inside ``torch``; ``module.`` prefixes are removed.

    Args:
        model: a :class:`~dgunet.model.DGUNet` or :class:`~dgunet.model.DGUNetPlus` (any module works).
        checkpoint: the file's bytes (any format :func:`parse_checkpoint` reads) or an already parsed dict.
        name: where the checkpoint came from, for the error messages.

    Returns:
        The parsed checkpoint dict (``state_dict``, and ``optimizer``, ``step``... where it has them).

    >>> from dgunet import create_model
    >>> model = create_model("denoise", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4)
    >>> ckpt = load_weights(model, {"state_dict": model.state_dict()})
    """
    obj = parse_checkpoint(checkpoint, name=name) if isinstance(checkpoint, (bytes, bytearray)) else checkpoint
    state_dict = extract_state_dict(obj)
    check_state_dict(model, state_dict, name=name)
    model.load_state_dict(state_dict, strict=True)
    return dict(obj)


def load_checkpoint(model: nn.Module, uri: str | os.PathLike) -> dict[str, Any]:
    """Load weights from ``uri`` into a model one already has, in place, strictly (see :func:`load_weights`).

    To get a model with its weights, checked against the arch and widths they record, use
    :func:`dgunet.create_model` instead; this is for a model that exists already (one being trained).

    Args:
        model: a :class:`~dgunet.model.DGUNet` or :class:`~dgunet.model.DGUNetPlus` (any module works).
        uri: local path or fsspec URL of an official checkpoint, a bare state dict or safetensors.

    Returns:
        Information on the file: ``sha256`` of its bytes, and ``epoch`` and ``meta`` where it has them.

    >>> from dgunet import create_model, load_checkpoint
    >>> model = create_model("denoise", weights=False)
    >>> info = load_checkpoint(model, "s3://models/DGUNet.pth")  # doctest: +SKIP
    """
    data = read_bytes(uri)
    obj = load_weights(model, data, name=os.fspath(uri))
    return {"sha256": sha256_of(data), "epoch": obj.get("epoch"), "meta": obj.get("meta")}


def save_safetensors(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], **metadata: str) -> None:
    """Weights alone, as safetensors (no code can run when they load).

    safetensors stores each tensor once: the state dict's shared tensors (DGUNet ties the PReLU of
    ``phi``/``phit`` and of the shallow features across stages) are cloned into separate ones.
    """
    from safetensors.torch import save_file

    save_file({k: v.detach().clone().contiguous() for k, v in state_dict.items()}, str(path), metadata=metadata)


def save_checkpoint(
    uri: str | os.PathLike,
    model: nn.Module,
    *,
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    **extra: Any,
) -> str:
    """Write an official-format checkpoint ``{'epoch', 'state_dict', 'optimizer', ...}`` to ``uri``.

    Extra keyword arguments (scheduler state, config, metrics) are stored beside; they must be plain
    data that ``weights_only`` loading accepts. Local files are written atomically (temp file, then
    rename), so an interrupted save never leaves a truncated checkpoint. Returns the sha256 of the bytes.
    """
    buf = io.BytesIO()
    payload = {
        "epoch": epoch,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        **extra,
    }
    torch.save(payload, buf)
    data = buf.getvalue()
    path = os.fspath(uri)
    if "://" not in path or path.startswith("file://"):
        write_file_atomic(path.removeprefix("file://"), data)
    else:
        import fsspec

        with fsspec.open(path, "wb") as f:  # object stores publish an object only once it is complete
            f.write(data)
    return sha256_of(data)
