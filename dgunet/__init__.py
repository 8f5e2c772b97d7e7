"""DGUNet (Deep Generalized Unfolding Network, CVPR 2022) for image restoration, in plain PyTorch.

>>> from dgunet import build_model, load_checkpoint, load_pretrained, restore
>>> model = build_model("dgunet", n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8)
"""

from .checkpoint import CheckpointMismatchError, UnsafeCheckpointError, load_checkpoint, save_checkpoint
from .inference import InferenceOptions, recommended_options, restore, restore_tensor
from .model import DGUNet, DGUNetConfig, DGUNetPlus
from .registry import PRESETS, WEIGHTS, Weights, build_model, load_pretrained, num_params

__all__ = [
    "DGUNet",
    "DGUNetConfig",
    "DGUNetPlus",
    "InferenceOptions",
    "PRESETS",
    "WEIGHTS",
    "Weights",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "build_model",
    "load_checkpoint",
    "load_pretrained",
    "num_params",
    "recommended_options",
    "restore",
    "restore_tensor",
    "save_checkpoint",
]
