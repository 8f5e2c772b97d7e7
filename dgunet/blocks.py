"""Building blocks of DGUNet (Mou, Wang, Zhang, CVPR 2022).

Module and attribute names follow the official release exactly, so that its checkpoints load
without renaming: ``ResBlock.body``, ``CAB.CA.conv_du``, ``UNetConvBlock.csff_enc`` and so on.

Shapes are ``(N, C, H, W)``; H and W must be multiples of 8 (three stride-2 stages) and at least 16
(instance norm at the coarsest scale), see :func:`dgunet.inference.restore` for any-size input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv(in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = False) -> nn.Conv2d:
    """A "same" convolution (stride 1, padding ``kernel_size // 2``)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class ResBlock(nn.Module):
    """The learned degradation operator ``phi`` (or its transpose ``phi^T``) of the gradient step.

    A residual block ``x + conv(act(conv(x)))`` over 3-channel images with a fixed hidden width of 64.

    Args:
        act: the PReLU. The official code passes one PReLU to every ``phi``/``phi^T`` block of a model,
            so they share it; pass the same module to reproduce that.
    """

    def __init__(self, act: nn.Module, *, channels: int = 3, hidden: int = 64, kernel_size: int = 3):
        super().__init__()
        self.body = nn.Sequential(
            conv(channels, hidden, kernel_size, bias=True),
            act,
            conv(hidden, channels, kernel_size, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class CALayer(nn.Module):
    """Channel attention: a global average pool drives per-channel sigmoid gates."""

    def __init__(self, channels: int, reduction: int, *, bias: bool):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(x.mean(dim=(2, 3), keepdim=True))


class CAB(nn.Module):
    """Channel attention block: ``x + CA(conv(act(conv(x))))``."""

    def __init__(self, channels: int, kernel_size: int, reduction: int, *, bias: bool, act: nn.Module):
        super().__init__()
        self.CA = CALayer(channels, reduction, bias=bias)  # registered first, as in official checkpoints
        self.body = nn.Sequential(
            conv(channels, channels, kernel_size, bias=bias),
            act,
            conv(channels, channels, kernel_size, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.CA(self.body(x)) + x


def shallow_features(n_feat: int, kernel_size: int, reduction: int, *, bias: bool, act: nn.Module) -> nn.Sequential:
    """The head of each proximal step: image (3 channels) to ``n_feat`` features."""
    return nn.Sequential(
        conv(3, n_feat, kernel_size, bias=bias),
        CAB(n_feat, kernel_size, reduction, bias=bias, act=act),
    )


class SAM(nn.Module):
    """Supervised attention module: the stage's image estimate and features for the next stage.

    Returns ``(features, image)`` where ``image = conv2(x) + x_img`` is the stage output.
    """

    def __init__(self, n_feat: int, *, kernel_size: int = 1, bias: bool):
        super().__init__()
        self.conv1 = conv(n_feat, n_feat, kernel_size, bias=bias)
        self.conv2 = conv(n_feat, 3, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor, x_img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv1(x) + x, self.conv2(x) + x_img


class mergeblock(nn.Module):  # noqa: N801 (official name, kept so that keys read the same)
    """Inter-stage merge by subspace projection.

    The previous stage's features (``bridge``) are projected onto a ``subspace_dim``-dimensional basis
    ``V`` (one vector per pixel) learned from both inputs: ``V (V^T V)^-1 (V^T bridge)``. The Gram matrix
    is ``subspace_dim x subspace_dim`` and inverted in float32 even under autocast (half precision has no
    inverse, and the matrix can be ill-conditioned). A tiny relative ridge keeps flat (constant) images,
    whose basis vectors coincide, from producing NaN; it is far below float32 resolution otherwise.
    """

    ridge = 1e-6

    def __init__(self, n_feat: int, kernel_size: int, bias: bool, subspace_dim: int = 16):
        super().__init__()
        self.conv_block = conv(n_feat * 2, n_feat, kernel_size, bias=bias)
        self.num_subspace = subspace_dim
        self.subnet = conv(n_feat * 2, subspace_dim, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        n, c, h, w = bridge.shape
        sub = self.subnet(torch.cat([x, bridge], 1))
        with torch.autocast(device_type=x.device.type, enabled=False):
            v_t = sub.float().reshape(n, self.num_subspace, h * w)
            v_t = v_t / (1e-6 + v_t.abs().sum(dim=2, keepdim=True))
            gram = v_t @ v_t.transpose(1, 2)
            scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(gram.dtype).tiny)
            eye = torch.eye(self.num_subspace, device=gram.device, dtype=gram.dtype)
            gram = gram + (self.ridge * scale)[:, None, None] * eye
            # (V^T V)^-1 (V^T bridge): the solve takes C right-hand sides, not H*W. Solving for the
            # (S, HW) projector first, as written in the paper, sends H*W right-hand sides to the batched
            # solver, which on CUDA took ~20 s per 1280x720 batch of 4 (a whole batch 1 takes 70 ms).
            coeffs = torch.linalg.solve(gram, v_t @ bridge.float().reshape(n, c, h * w).transpose(1, 2))
            projected = (v_t.transpose(1, 2) @ coeffs).transpose(1, 2).reshape(n, c, h, w)
        projected = projected.to(x.dtype)
        return self.conv_block(torch.cat([x, projected], 1)) + x


class UNetConvBlock(nn.Module):
    """U-Net level: two 3x3 convs with half-instance norm, a 1x1 identity path, optional CSFF.

    With ``use_csff`` (stages after the first) the previous stage's encoder and decoder features at this
    scale modulate the output (cross-stage feature fusion). Returns ``(downsampled, full)`` when
    ``downsample``, else the features alone.
    """

    def __init__(
        self,
        in_size: int,
        out_size: int,
        downsample: bool,
        relu_slope: float,
        use_csff: bool = False,
        use_HIN: bool = False,  # noqa: N803 (official name)
    ):
        super().__init__()
        self.identity = nn.Conv2d(in_size, out_size, 1)
        self.conv_1 = nn.Conv2d(in_size, out_size, 3, padding=1)
        self.relu_1 = nn.LeakyReLU(relu_slope)
        self.conv_2 = nn.Conv2d(out_size, out_size, 3, padding=1)
        self.relu_2 = nn.LeakyReLU(relu_slope)
        self.use_csff = downsample and use_csff
        if self.use_csff:
            self.csff_enc = nn.Conv2d(out_size, out_size, 3, padding=1)
            self.csff_dec = nn.Conv2d(in_size, out_size, 3, padding=1)
            self.phi = nn.Conv2d(out_size, out_size, 3, padding=1)
            self.gamma = nn.Conv2d(out_size, out_size, 3, padding=1)
        self.use_HIN = use_HIN
        if use_HIN:
            self.norm = nn.InstanceNorm2d(out_size // 2, affine=True)
        self.downsample = nn.Conv2d(out_size, out_size, 4, stride=2, padding=1, bias=False) if downsample else None

    def forward(
        self, x: torch.Tensor, enc: torch.Tensor | None = None, dec: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.conv_1(x)
        if self.use_HIN:
            half = out.shape[1] // 2
            out = torch.cat([self.norm(out[:, :half]), out[:, half:]], dim=1)
        out = self.relu_2(self.conv_2(self.relu_1(out)))
        out = out + self.identity(x)
        if enc is not None and dec is not None:
            skip = F.leaky_relu(self.csff_enc(enc) + self.csff_dec(dec), 0.1)
            out = out * torch.sigmoid(self.phi(skip)) + self.gamma(skip) + out
        if self.downsample is None:
            return out
        return self.downsample(out), out


class UNetUpBlock(nn.Module):
    """Decoder level: 2x transposed-conv upsampling, concatenation with the skip, a conv block."""

    def __init__(self, in_size: int, out_size: int, relu_slope: float):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_size, out_size, kernel_size=2, stride=2, bias=True)
        self.conv_block = UNetConvBlock(out_size * 2, out_size, False, relu_slope)

    def forward(self, x: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.up(x), bridge], 1))


class Encoder(nn.Module):
    """U-Net encoder of ``depth`` levels; level ``i`` has ``n_feat + scale_unetfeats * i`` channels.

    Returns ``(skips, bottom)``: the full-resolution features of the first ``depth - 1`` levels and the
    coarsest features. With ``encoder_outs`` and ``decoder_outs`` of the previous stage, CSFF is applied.
    """

    def __init__(self, n_feat: int, scale_unetfeats: int, *, csff: bool, depth: int = 4):
        super().__init__()
        self.depth = depth
        width = [n_feat + scale_unetfeats * i for i in range(depth)]
        self.body = nn.ModuleList(
            UNetConvBlock(width[i], width[i + 1], True, 0.2, use_csff=csff, use_HIN=True) for i in range(depth - 1)
        )
        self.body.append(UNetConvBlock(width[-1], width[-1], False, 0.2, use_csff=csff, use_HIN=True))

    def forward(
        self,
        x: torch.Tensor,
        encoder_outs: list[torch.Tensor] | None = None,
        decoder_outs: list[torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        skips = []
        for i, level in enumerate(self.body[:-1]):
            if encoder_outs is not None and decoder_outs is not None:
                x, skip = level(x, encoder_outs[i], decoder_outs[-i - 1])
            else:
                x, skip = level(x)
            skips.append(skip)
        return skips, self.body[-1](x)


class Decoder(nn.Module):
    """U-Net decoder; returns the features of every level, coarse to fine (the last is full size)."""

    def __init__(self, n_feat: int, scale_unetfeats: int, *, depth: int = 4):
        super().__init__()
        width = [n_feat + scale_unetfeats * i for i in range(depth)]
        self.body = nn.ModuleList(
            UNetUpBlock(width[depth - i - 1], width[depth - i - 2], 0.2) for i in range(depth - 1)
        )
        self.skip_conv = nn.ModuleList(
            nn.Conv2d(width[depth - i - 1], width[depth - i - 2], 3, padding=1) for i in range(depth - 1)
        )

    def forward(self, x: torch.Tensor, bridges: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for i, (up, skip_conv) in enumerate(zip(self.body, self.skip_conv)):
            x = up(x, skip_conv(bridges[-i - 1]))
            outs.append(x)
        return outs
