"""Any-size inference: padding, tiling with smooth blending, self-ensemble, mixed precision.

DGUNet needs H and W to be multiples of 8 and at least 16, and it has global operations (channel
attention pooling, instance norm, mergeblock's projection over all pixels), so its output depends on the
whole image. :func:`restore` runs the whole image when it fits in ``max_pixels``; above that it runs
overlapping tiles and blends them with a smooth window, which bounds peak memory whatever the image size
at the price of an approximation near tile seams.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .options import MIN_SIDE, MULTIPLE, PRECISION_NAMES, InferenceOptions, Precision

__all__ = ["InferenceOptions", "Precision", "pad_to_multiple", "recommended_options", "restore", "restore_tensor"]

PRECISIONS: dict[str, torch.dtype] = {name: getattr(torch, name) for name in PRECISION_NAMES}


def recommended_options(model: nn.Module) -> InferenceOptions:
    """The inference options that ``model``'s weights declare (bundled weights may), else the defaults.

    A network trained on small patches sees whole-image statistics in its global operations only at
    test time; its weights can declare tiles of about the training size, which then work better than
    the whole image (see the model card in docs/models.md).
    """
    weights = getattr(model, "weights", None)
    return InferenceOptions(**getattr(weights, "inference", {}))


def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE, min_side: int = MIN_SIDE) -> torch.Tensor:
    """Pad ``(N, C, H, W)`` bottom/right to multiples of ``multiple`` and at least ``min_side``.

    Reflect padding where the image is large enough for it (as the official test does), replicate for
    images too small to reflect (e.g. 1x1).
    """
    h, w = x.shape[-2:]
    ph = max(min_side, math.ceil(h / multiple) * multiple) - h
    pw = max(min_side, math.ceil(w / multiple) * multiple) - w
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def _autocast(device: torch.device, precision: str):
    if precision == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def forward_padded(model: nn.Module, x: torch.Tensor, opts: InferenceOptions) -> torch.Tensor:
    """The model's final image for ``(N, 3, H, W)`` of any size: pad, run, crop. Float32 out."""
    h, w = x.shape[-2:]
    xp = pad_to_multiple(x)
    if opts.channels_last:
        xp = xp.contiguous(memory_format=torch.channels_last)
    with _autocast(x.device, opts.precision):
        if opts.ensemble:
            out = sum(_undo(model(_apply(xp, m)), m).float() for m in range(8)) / 8
        else:
            out = model(xp).float()
    return out[..., :h, :w]


def _apply(x: torch.Tensor, mode: int) -> torch.Tensor:
    x = torch.rot90(x, mode % 4, dims=(-2, -1))
    return x.flip(-1) if mode >= 4 else x


def _undo(x: torch.Tensor, mode: int) -> torch.Tensor:
    x = x.flip(-1) if mode >= 4 else x
    return torch.rot90(x, -(mode % 4), dims=(-2, -1))


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, size)`` with tiles of ``tile`` overlapping by at least ``overlap``."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D blending weights over a tile, 1 in the middle.

    At an inner edge (one shared with a neighbour) the first quarter of the overlap gets weight 0, since
    those pixels saw the tile's own padding instead of the real neighbourhood, and the rest rises along a
    raised cosine. Image borders keep weight 1.
    """
    w = torch.ones(length)
    if overlap > 0:
        margin = overlap // 4
        rise = torch.zeros(overlap)
        rise[margin:] = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, overlap - margin + 2)[1:-1])
        if ramp_start:
            w[:overlap] = rise
        if ramp_end:
            w[-overlap:] = rise.flip(0)
    return w


def iter_tiles(h: int, w: int, opts: InferenceOptions) -> Iterator[tuple[int, int, int, int]]:
    """``(y, x, th, tw)`` of every tile."""
    th, tw = min(opts.tile, h), min(opts.tile, w)
    for y in tile_starts(h, opts.tile, opts.overlap):
        for x in tile_starts(w, opts.tile, opts.overlap):
            yield y, x, th, tw


def restore_tensor(model: nn.Module, x: torch.Tensor, opts: InferenceOptions | None = None) -> torch.Tensor:
    """Restore ``(N, 3, H, W)`` float images in [0, 1] of any size; returns float32 ``(N, 3, H, W)``.

    ``opts`` defaults to :func:`recommended_options` of the model.

    ``x`` may live on the CPU while the model is on a GPU: whole images are moved over in one piece,
    tiles one batch at a time, and the blended result is accumulated on ``x``'s device, so that a huge
    image never has to fit in GPU memory.
    """
    opts = opts or recommended_options(model)
    device = next(model.parameters()).device
    n, _, h, w = x.shape
    with torch.inference_mode():
        if h * w <= opts.max_pixels:
            return forward_padded(model, x.to(device, torch.float32), opts).clamp_(0, 1).to(x.device)
        out = torch.zeros(n, 3, h, w, dtype=torch.float32, device=x.device)
        weight = torch.zeros(1, 1, h, w, dtype=torch.float32, device=x.device)
        tiles = list(iter_tiles(h, w, opts))
        for i in range(0, len(tiles), opts.tile_batch):
            group = tiles[i : i + opts.tile_batch]
            batch = torch.cat([x[:, :, y : y + th, xx : xx + tw] for y, xx, th, tw in group])
            pred = forward_padded(model, batch.to(device, torch.float32), opts).to(x.device)
            for j, (y, xx, th, tw) in enumerate(group):
                wy = _ramp(th, opts.overlap, y > 0, y + th < h)
                wx = _ramp(tw, opts.overlap, xx > 0, xx + tw < w)
                win = (wy[:, None] * wx[None, :]).to(x.device)
                out[:, :, y : y + th, xx : xx + tw] += pred[j * n : (j + 1) * n] * win
                weight[:, :, y : y + th, xx : xx + tw] += win
        return out.div_(weight).clamp_(0, 1)


def _to_unit_float(arr: np.ndarray) -> tuple[np.ndarray, float | None]:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0, 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr.astype(np.float32), 0, 1), None
    raise TypeError(f"Expected uint8, uint16 or float pixels, but got {arr.dtype} instead.")


def _from_unit_float(arr: np.ndarray, scale: float | None, dtype: np.dtype) -> np.ndarray:
    if scale is None:
        return arr.astype(dtype)
    return np.clip(np.rint(arr * scale), 0, scale).astype(dtype)


def restore(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    *,
    options: InferenceOptions | None = None,
    **overrides,
) -> np.ndarray | torch.Tensor:
    """Restore one image of any size, returning the same shape, dtype and value range.

    Args:
        model: a DGUNet in eval mode, on the device to run on.
        image: a numpy array ``(H, W)`` or ``(H, W, C)`` with C in 1..4, ``uint8``, ``uint16`` or float in
            [0, 1]; or a tensor ``(C, H, W)`` / ``(N, C, H, W)`` (torch layout) of the same kinds.
            Grayscale goes through the RGB model and comes back grayscale; an alpha channel (C = 2 or 4)
            is returned untouched.
        options: an :class:`InferenceOptions` (default: :func:`recommended_options` of the model);
            keyword ``overrides`` replace single fields of it.

    >>> import numpy as np
    >>> from dgunet import create_model, restore
    >>> model = create_model("denoise", weights=False, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4).eval()
    >>> restore(model, np.zeros((5, 7, 3), np.uint8)).shape
    (5, 7, 3)
    """
    opts = options or recommended_options(model)
    if overrides:
        opts = InferenceOptions(**{**opts.__dict__, **overrides})
    if isinstance(image, torch.Tensor):
        batched = image.ndim == 4
        arr = (image if batched else image[None]).permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack([_restore_hwc(model, a, opts) for a in arr])
        return torch.from_numpy(out).permute(0, 3, 1, 2).to(image.device)[slice(None) if batched else 0]
    if not isinstance(image, np.ndarray):
        raise TypeError(f"Expected a numpy array or torch tensor, but got {type(image).__name__} instead.")
    if image.ndim == 2:
        return _restore_hwc(model, image[..., None], opts)[..., 0]
    if image.ndim != 3:
        raise ValueError(f"Expected an image of shape (H, W) or (H, W, C), but got {image.shape} instead.")
    return _restore_hwc(model, image, opts)


@dataclass(frozen=True)
class ImageLayout:
    """How an ``(H, W, C)`` array maps to the model's RGB input, so the output can be mapped back."""

    channels: int  # 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA
    dtype: np.dtype
    scale: float | None  # 255 or 65535 for integer pixels, None for float in [0, 1]

    @property
    def color(self) -> int:
        return 1 if self.channels in (1, 2) else 3


def to_model_input(image: np.ndarray) -> tuple[torch.Tensor, ImageLayout]:
    """``(H, W, C)`` pixels (C in 1..4) to a float32 ``(3, H, W)`` tensor in [0, 1] and its layout.

    Grayscale is repeated to three channels; alpha is left out (see :func:`from_model_output`).
    """
    h, w, c = image.shape
    if c not in (1, 2, 3, 4) or h < 1 or w < 1:
        raise ValueError(f"Expected (H, W, C) with H, W >= 1 and C in 1..4, but got {image.shape} instead.")
    unit, scale = _to_unit_float(image[..., : 1 if c in (1, 2) else 3])
    rgb = np.repeat(unit, 3, axis=2) if unit.shape[2] == 1 else unit
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))), ImageLayout(c, image.dtype, scale)


def from_model_output(restored: torch.Tensor, layout: ImageLayout, original: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_model_input`: ``(3, H, W)`` in [0, 1] back to ``original``'s layout.

    Grayscale comes back as the mean of the three channels; alpha is copied from ``original``.
    """
    y = restored.permute(1, 2, 0).cpu().numpy()
    if layout.color == 1:
        y = y.mean(axis=2, keepdims=True)
    out = _from_unit_float(y, layout.scale, layout.dtype)
    if layout.channels in (2, 4):
        out = np.concatenate([out, original[..., layout.color :]], axis=2)
    return out


def _restore_hwc(model: nn.Module, image: np.ndarray, opts: InferenceOptions) -> np.ndarray:
    x, layout = to_model_input(image)
    return from_model_output(restore_tensor(model, x[None], opts)[0], layout, image)
