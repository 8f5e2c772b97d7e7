"""DGUNet (Deep Generalized Unfolding Network, CVPR 2022) for image restoration, in plain PyTorch.

>>> from dgunet import create_model, restore
>>> model = create_model("denoise")  # the bundled denoiser; weights= a name, a checkpoint path or bytes
>>> untrained = create_model("denoise", weights=False, n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8)

The package is lazy: importing it, or its torch-free modules (:mod:`dgunet.tasks`, :mod:`dgunet.degrade`,
:mod:`dgunet.camera`, :mod:`dgunet.jpeg_damage`, :mod:`dgunet.io`), loads no torch; the names below load
their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each public name, and the module that defines it.
_WHERE = {
    "CheckpointMismatchError": "checkpoint",
    "UnsafeCheckpointError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "create_model": "factory",
    "recommended_options": "inference",
    "restore": "inference",
    "restore_tensor": "inference",
    "DGUNet": "model",
    "DGUNetConfig": "model",
    "DGUNetPlus": "model",
    "PRESETS": "registry",
    "TASK_GATES": "registry",
    "WEIGHTS": "registry",
    "NoBundledModelError": "registry",
    "Weights": "registry",
    "num_params": "registry",
    "Gate": "tasks",
    "InferenceOptions": "options",
}
__all__ = [
    "CheckpointMismatchError",
    "DGUNet",
    "DGUNetConfig",
    "DGUNetPlus",
    "Gate",
    "InferenceOptions",
    "NoBundledModelError",
    "PRESETS",
    "TASK_GATES",
    "UnsafeCheckpointError",
    "WEIGHTS",
    "Weights",
    "create_model",
    "load_checkpoint",
    "num_params",
    "recommended_options",
    "restore",
    "restore_tensor",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from .checkpoint import CheckpointMismatchError, UnsafeCheckpointError, load_checkpoint, save_checkpoint
    from .factory import create_model
    from .inference import recommended_options, restore, restore_tensor
    from .model import DGUNet, DGUNetConfig, DGUNetPlus
    from .options import InferenceOptions
    from .registry import PRESETS, TASK_GATES, WEIGHTS, NoBundledModelError, Weights, num_params
    from .tasks import Gate


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'dgunet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
