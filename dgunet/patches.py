"""Training batches: random crops of clean images, the 8 flips/rotations, and a degradation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .degrade import Degradation, DeviceOps, augment, degrade_pair, degrade_split


@dataclass
class DeviceBatch:
    """A batch's :class:`~dgunet.degrade.DeviceOps`, as tensors: noise levels ``(N,)`` in 8-bit levels
    before and after the blur, the blur kernels ``(N, K, K)`` padded to the batch's largest (a unit
    impulse where an image has none; None where no image has one), and the seed of the noise."""

    sigma: torch.Tensor
    sigma_after: torch.Tensor
    kernels: torch.Tensor | None
    seed: int

    @classmethod
    def of(cls, ops: Sequence[DeviceOps], seed: int) -> DeviceBatch:
        size = max((o.kernel.shape[0] for o in ops if o.kernel is not None), default=0)
        kernels = None
        if size:
            kernels = np.zeros((len(ops), size, size), np.float32)
            for i, o in enumerate(ops):
                if o.kernel is None:
                    kernels[i, size // 2, size // 2] = 1.0
                else:
                    lo = (size - o.kernel.shape[0]) // 2
                    kernels[i, lo : lo + o.kernel.shape[0], lo : lo + o.kernel.shape[1]] = o.kernel
            kernels = torch.from_numpy(kernels)
        as_tensor = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
        return cls(as_tensor([o.sigma for o in ops]), as_tensor([o.sigma_after for o in ops]), kernels, seed)


def _pad_symmetric(x: torch.Tensor, p: int) -> torch.Tensor:
    """Mirror ``p`` pixels on each side, the edge pixel repeated (OpenCV's BORDER_REFLECT, which
    :func:`dgunet.degrade.blur` uses; torch's ``reflect`` leaves the edge pixel out)."""
    x = torch.cat([x[..., :p, :].flip(-2), x, x[..., -p:, :].flip(-2)], dim=-2)
    return torch.cat([x[..., :p].flip(-1), x, x[..., -p:].flip(-1)], dim=-1)


@torch.no_grad()
def apply_device_ops(x: torch.Tensor, batch: DeviceBatch, *, quantize: bool) -> torch.Tensor:
    """Noise, blur (as a grouped convolution, each image with its kernel) and noise again on ``x``
    ``(N, 3, H, W)`` in [0, 1], on its device, each step clipped as on the CPU; then 8-bit quantisation."""
    gen = torch.Generator(device=x.device).manual_seed(batch.seed)
    n = x.shape[0]

    def noise(img: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if not bool((sigma > 0).any()):
            return img
        draw = torch.randn(img.shape, generator=gen, device=img.device, dtype=img.dtype)
        return (img + draw * (sigma.to(img.device, img.dtype) / 255.0).view(n, 1, 1, 1)).clamp_(0, 1)

    x = noise(x, batch.sigma)
    if batch.kernels is not None:
        k = batch.kernels.to(x.device, x.dtype)
        c, size = x.shape[1], k.shape[-1]
        weight = k.repeat_interleave(c, dim=0).unsqueeze(1)  # (N*C, 1, K, K): each channel of each image
        flat = _pad_symmetric(x, size // 2).reshape(1, n * c, x.shape[2] + size - 1, x.shape[3] + size - 1)
        x = torch.nn.functional.conv2d(flat, weight, groups=n * c).reshape(x.shape)
    x = noise(x, batch.sigma_after)
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0 if quantize else x


class PatchSampler:
    """Draws ``(degraded, clean)`` batches of ``(N, 3, patch, patch)`` float32 tensors in [0, 1].

    Args:
        images: clean uint8 RGB arrays ``(H, W, 3)``, each at least ``patch`` on both sides.
        pairs: optional degraded counterparts of ``images`` (real degradations); when given, crops are
            taken at the same place in both and ``degradation`` is not applied.
        scale: crops are ``patch * s`` pixels, ``s`` drawn log-uniformly from this range (capped by the
            image), and area-downscaled to ``patch``: texture at many scales from one stored image, each
            downscale also averaging away the source's own noise. ``(1, 1)``: crops at stored scale.
        device_ops: leave the noise and blur that no CPU degradation follows to the training device:
            :meth:`sample` then also returns a :class:`DeviceBatch` for :func:`apply_device_ops`.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        *,
        patch: int,
        batch: int,
        degradation: Degradation,
        pairs: Sequence[np.ndarray] | None = None,
        scale: tuple[float, float] = (1.0, 1.0),
        device_ops: bool = False,
    ):
        if not images:
            raise ValueError("Expected at least one training image, but got none.")
        small = [i for i, im in enumerate(images) if min(im.shape[:2]) < patch]
        if small:
            raise ValueError(f"Expected images of at least {patch}x{patch}, but {len(small)} are smaller.")
        self.images, self.pairs = list(images), list(pairs) if pairs is not None else None
        if not 1 <= scale[0] <= scale[1]:
            raise ValueError(f"Expected 1 <= low <= high for scale, but got {scale} instead.")
        if pairs is not None and scale != (1.0, 1.0):
            raise ValueError("Expected scale (1, 1) with real pairs: rescaling would change their degradation.")
        self.patch, self.batch, self.degradation, self.scale = patch, batch, degradation, scale
        self.device_ops = device_ops
        # Sample images in proportion to their area, so that every pixel is equally likely.
        area = np.array([im.shape[0] * im.shape[1] for im in images], np.float64)
        self.weights = area / area.sum()

    def sample(self, rng: np.random.Generator):
        """``(degraded, clean)``; with ``device_ops``, ``(partly degraded, clean, DeviceBatch)``."""
        degraded, clean, ops = [], [], []
        p = self.patch
        for idx in rng.choice(len(self.images), size=self.batch, p=self.weights):
            img = self.images[idx]
            s = p
            if self.scale[1] > 1:
                s = min(round(p * np.exp(rng.uniform(*np.log(self.scale)))), *img.shape[:2])
            y, x = rng.integers(0, img.shape[0] - s + 1), rng.integers(0, img.shape[1] - s + 1)
            mode = int(rng.integers(8))
            crop = img[y : y + s, x : x + s]
            if s != p:
                import cv2

                crop = cv2.resize(crop, (p, p), interpolation=cv2.INTER_AREA)
            c = augment(crop, mode).astype(np.float32) / 255.0
            if self.pairs is not None:
                d = augment(self.pairs[idx][y : y + p, x : x + p], mode).astype(np.float32) / 255.0
            elif self.device_ops:
                d, o = degrade_split(c, self.degradation, rng)
                ops.append(o)
            else:
                d, c = degrade_pair(c, self.degradation, rng)
            clean.append(c)
            degraded.append(d)
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a))).permute(0, 3, 1, 2)  # noqa: E731
        if self.device_ops:
            if self.pairs is not None:
                ops = [DeviceOps()] * len(clean)
            return to_tensor(degraded), to_tensor(clean), DeviceBatch.of(ops, int(rng.integers(2**62)))
        return to_tensor(degraded), to_tensor(clean)


def fixed_validation_set(
    images: Sequence[np.ndarray], *, patch: int, per_image: int, degradation: Degradation, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A reproducible list of ``(degraded, clean)`` batches (one per image) for validation."""
    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        sampler = PatchSampler([img], patch=min(patch, *img.shape[:2]), batch=per_image, degradation=degradation)
        out.append(sampler.sample(rng))
    return out
