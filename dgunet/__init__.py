"""DGUNet (Deep Generalized Unfolding Network, CVPR 2022) for image restoration, in plain PyTorch.

>>> from dgunet import create_model, restore
>>> model = create_model("denoise")  # the bundled denoiser; weights= a name, a checkpoint path or bytes
>>> untrained = create_model("denoise", weights=False, n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8)
"""

from .checkpoint import CheckpointMismatchError, UnsafeCheckpointError, load_checkpoint, save_checkpoint
from .factory import create_model
from .inference import InferenceOptions, recommended_options, restore, restore_tensor
from .model import DGUNet, DGUNetConfig, DGUNetPlus
from .registry import PRESETS, TASK_GATES, WEIGHTS, Gate, NoBundledModelError, Weights, num_params

__all__ = [
    "DGUNet",
    "DGUNetConfig",
    "DGUNetPlus",
    "Gate",
    "InferenceOptions",
    "NoBundledModelError",
    "PRESETS",
    "TASK_GATES",
    "WEIGHTS",
    "Weights",
    "CheckpointMismatchError",
    "UnsafeCheckpointError",
    "create_model",
    "load_checkpoint",
    "num_params",
    "recommended_options",
    "restore",
    "restore_tensor",
    "save_checkpoint",
]
