"""Training losses of DGUNet: Charbonnier and Laplacian edge loss, summed over every stage's output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CharbonnierLoss(nn.Module):
    """``mean(sqrt((x - y)^2 + eps^2))``, a smooth L1. Inputs ``(N, C, H, W)``."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = x - y
        return torch.sqrt(diff * diff + self.eps * self.eps).mean()


class EdgeLoss(nn.Module):
    """Charbonnier distance between one-level Laplacian pyramid bands (image minus its blurred,
    2x decimated and re-interpolated self), as in the official deblurring and deraining recipes."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        k = torch.tensor([[0.05, 0.25, 0.4, 0.25, 0.05]])
        self.register_buffer("kernel", (k.t() @ k)[None, None].repeat(3, 1, 1, 1), persistent=False)
        self.charbonnier = CharbonnierLoss(eps)

    def _gauss(self, img: torch.Tensor) -> torch.Tensor:
        c = img.shape[1]
        return F.conv2d(F.pad(img, (2, 2, 2, 2), mode="replicate"), self.kernel[:c].to(img.dtype), groups=c)

    def laplacian(self, img: torch.Tensor) -> torch.Tensor:
        filtered = self._gauss(img)
        up = torch.zeros_like(filtered)
        up[:, :, ::2, ::2] = filtered[:, :, ::2, ::2] * 4
        return img - self._gauss(up)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.charbonnier(self.laplacian(x), self.laplacian(y))


class StagesLoss(nn.Module):
    """The DGUNet objective: sum over all stage outputs of Charbonnier ``+ edge_weight x`` edge loss.

    Outputs are clamped to [0, 1] first, as the official training does.

    Args:
        edge_weight: 0.05 for deblurring and deraining, 0 for denoising (the official recipes).
    """

    def __init__(self, *, edge_weight: float = 0.0, eps: float = 1e-3):
        super().__init__()
        self.edge_weight = edge_weight
        self.charbonnier = CharbonnierLoss(eps)
        self.edge = EdgeLoss(eps) if edge_weight else None

    def forward(self, stages: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        total = target.new_zeros(())
        for out in stages:
            out = out.clamp(0, 1)
            total = total + self.charbonnier(out, target)
            if self.edge is not None:
                total = total + self.edge_weight * self.edge(out, target)
        return total
