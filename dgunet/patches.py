"""Training batches: random crops of clean images, the 8 flips/rotations, and a degradation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .degrade import Degradation, augment, degrade


class PatchSampler:
    """Draws ``(degraded, clean)`` batches of ``(N, 3, patch, patch)`` float32 tensors in [0, 1].

    Args:
        images: clean uint8 RGB arrays ``(H, W, 3)``, each at least ``patch`` on both sides.
        pairs: optional degraded counterparts of ``images`` (real degradations); when given, crops are
            taken at the same place in both and ``degradation`` is not applied.
        scale: crops are ``patch * s`` pixels, ``s`` drawn log-uniformly from this range (capped by the
            image), and area-downscaled to ``patch``: texture at many scales from one stored image, each
            downscale also averaging away the source's own noise. ``(1, 1)``: crops at stored scale.
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
        # Sample images in proportion to their area, so that every pixel is equally likely.
        area = np.array([im.shape[0] * im.shape[1] for im in images], np.float64)
        self.weights = area / area.sum()

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        degraded, clean = [], []
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
            else:
                d = degrade(c, self.degradation, rng)
            clean.append(c)
            degraded.append(d)
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a))).permute(0, 3, 1, 2)  # noqa: E731
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
