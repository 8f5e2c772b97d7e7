"""DGUNet and DGUNet+: proximal gradient descent unrolled into ``depth + 2`` stages.

Each stage ``k`` takes the previous estimate ``x`` and the degraded image ``y`` and makes

* a gradient step (GDM) with a learned degradation operator and its transpose:
  ``z = x - r_k * phi^T(phi(x) - y)``, then
* a proximal step (PMM): a 4-level U-Net over ``z`` whose features are fused with the previous stage's
  (``mergeblock`` at full scale, CSFF inside the encoder); a SAM head gives the stage's image.

``DGUNet`` shares one stage module across the middle ``depth`` stages; ``DGUNetPlus`` gives every stage
its own weights. Both return the 7 (for ``depth=5``) stage images final first, as the official code does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import SAM, Decoder, Encoder, ResBlock, conv, mergeblock, shallow_features
from .options import ARCHS as ARCHS


@dataclass(frozen=True)
class DGUNetConfig:
    """Widths and depth of a DGUNet network."""

    arch: str = "dgunet"  # "dgunet" (stages 2..depth+1 share weights) or "dgunet_plus" (independent stages)
    n_feat: int = 80  # channels at full resolution, in every stage's U-Net
    scale_unetfeats: int = 48  # channels added at each coarser U-Net level
    scale_orsnetfeats: int = 32  # extra channels of the last stage's fusion conv (DGUNet only)
    depth: int = 5  # middle stages; the network has depth + 2 stages
    kernel_size: int = 3
    reduction: int = 4  # channel-attention reduction
    bias: bool = False  # bias of the plain convolutions (not of the U-Net's own)

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"Expected arch in {ARCHS}, but got {self.arch!r} instead.")
        for name in ("n_feat", "scale_unetfeats", "scale_orsnetfeats", "depth", "reduction"):
            if getattr(self, name) < 1:
                raise ValueError(f"Expected {name} >= 1, but got {getattr(self, name)} instead.")
        if self.n_feat % 2 or self.scale_unetfeats % 2:
            raise ValueError(
                f"Expected even n_feat and scale_unetfeats (half-instance norm splits channels), but got "
                f"{self.n_feat} and {self.scale_unetfeats} instead."
            )

    @property
    def num_stages(self) -> int:
        return self.depth + 2


def gradient_step(
    x: torch.Tensor, y: torch.Tensor, phi: nn.Module, phit: nn.Module, step: torch.Tensor
) -> torch.Tensor:
    """GDM: ``x - step * phi^T(phi(x) - y)``."""
    return x - step * phit(phi(x) - y)


class _Stage(nn.Module):
    """One middle stage of DGUNet (the official ``Basic_block``), shared across stages."""

    def __init__(self, cfg: DGUNetConfig, phi_act: nn.Module):
        super().__init__()
        act = nn.PReLU()
        n, k = cfg.n_feat, cfg.kernel_size
        self.phi_1 = ResBlock(phi_act)
        self.phit_1 = ResBlock(phi_act)
        self.shallow_feat2 = shallow_features(n, k, cfg.reduction, bias=cfg.bias, act=act)
        self.stage2_encoder = Encoder(n, cfg.scale_unetfeats, csff=True)
        self.stage2_decoder = Decoder(n, cfg.scale_unetfeats)
        self.sam23 = SAM(n, bias=cfg.bias)
        self.r1 = nn.Parameter(torch.tensor([0.5]))
        # Unused by the official forward pass, but present in its checkpoints. It never gets a gradient,
        # so it is frozen: DistributedDataParallel would otherwise wait for one.
        self.concat12 = conv(n * 2, n, k, bias=cfg.bias).requires_grad_(False)
        self.merge12 = mergeblock(n, 3, True)

    def forward(self, y, x, enc, dec, sam_feats):
        z = gradient_step(x, y, self.phi_1, self.phit_1, self.r1)
        feats = self.merge12(self.shallow_feat2(z), sam_feats)
        enc, bottom = self.stage2_encoder(feats, enc, dec)
        dec = self.stage2_decoder(bottom, enc)
        sam_feats, x = self.sam23(dec[-1], z)
        return sam_feats, x, enc, dec


class DGUNet(nn.Module):
    """DGUNet: first and last stages of their own, the ``depth`` middle stages sharing one module.

    Args:
        cfg: widths and depth; ``cfg.arch`` must be ``"dgunet"``.

    Input ``(N, 3, H, W)`` float in [0, 1] with H, W multiples of 8 and >= 16. Output: the final image
    ``(N, 3, H, W)``, or with ``return_stages=True`` a list of all ``depth + 2`` stage images, final first.
    """

    def __init__(self, cfg: DGUNetConfig = DGUNetConfig()):
        super().__init__()
        if cfg.arch != "dgunet":
            raise ValueError(f"Expected cfg.arch 'dgunet', but got {cfg.arch!r} instead.")
        self.cfg = cfg
        n, k = cfg.n_feat, cfg.kernel_size
        # The official code shares one PReLU between all phi/phi^T blocks, and one between the shallow
        # feature heads of the first and last stage; sharing keeps the parameter count identical.
        phi_act, act = nn.PReLU(), nn.PReLU()
        self.depth = cfg.depth
        self.basic = _Stage(cfg, phi_act)
        self.shallow_feat1 = shallow_features(n, k, cfg.reduction, bias=cfg.bias, act=act)
        self.shallow_feat7 = shallow_features(n, k, cfg.reduction, bias=cfg.bias, act=act)
        self.stage1_encoder = Encoder(n, cfg.scale_unetfeats, csff=False)
        self.stage1_decoder = Decoder(n, cfg.scale_unetfeats)
        self.sam12 = SAM(n, bias=cfg.bias)
        self.phi_0, self.phit_0 = ResBlock(phi_act), ResBlock(phi_act)
        self.phi_6, self.phit_6 = ResBlock(phi_act), ResBlock(phi_act)
        self.r0 = nn.Parameter(torch.tensor([0.5]))
        self.r6 = nn.Parameter(torch.tensor([0.5]))
        self.concat67 = conv(n * 2, n + cfg.scale_orsnetfeats, k, bias=cfg.bias)
        self.tail = conv(n + cfg.scale_orsnetfeats, 3, k, bias=cfg.bias)

    def forward(self, y: torch.Tensor, *, return_stages: bool = False) -> torch.Tensor | list[torch.Tensor]:
        # Stage 1: gradient step, then a U-Net without cross-stage inputs.
        z = gradient_step(y, y, self.phi_0, self.phit_0, self.r0)
        enc, bottom = self.stage1_encoder(self.shallow_feat1(z))
        dec = self.stage1_decoder(bottom, enc)
        sam_feats, x = self.sam12(dec[-1], z)
        stages = [x]
        # Stages 2 .. depth + 1: one shared module, unrolled.
        for _ in range(self.depth):
            sam_feats, x, enc, dec = self.basic(y, x, enc, dec, sam_feats)
            stages.append(x)
        # Last stage: gradient step, then a plain fusion of its features with the previous stage's.
        z = gradient_step(x, y, self.phi_6, self.phit_6, self.r6)
        x = self.tail(self.concat67(torch.cat([self.shallow_feat7(z), sam_feats], 1))) + y
        if not return_stages:
            return x
        stages.append(x)
        return stages[::-1]


class DGUNetPlus(nn.Module):
    """DGUNet+: every one of the ``depth + 2`` stages has its own weights.

    Same inputs and outputs as :class:`DGUNet`; ``cfg.arch`` must be ``"dgunet_plus"``.
    """

    def __init__(self, cfg: DGUNetConfig = DGUNetConfig(arch="dgunet_plus", n_feat=96)):
        super().__init__()
        if cfg.arch != "dgunet_plus":
            raise ValueError(f"Expected cfg.arch 'dgunet_plus', but got {cfg.arch!r} instead.")
        self.cfg = cfg
        n, k, s = cfg.n_feat, cfg.kernel_size, cfg.num_stages
        phi_act, act = nn.PReLU(), nn.PReLU()  # shared as in the official code, see DGUNet
        # Attribute names (and so checkpoint keys) are the official ones: phi_0..phi_6, r0..r6,
        # shallow_feat1..7, stage1..6 encoder/decoder, sam12..sam67, merge12..merge67.
        for i in range(s):
            self.add_module(f"shallow_feat{i + 1}", shallow_features(n, k, cfg.reduction, bias=cfg.bias, act=act))
        for i in range(s):
            self.add_module(f"phi_{i}", ResBlock(phi_act))
            self.add_module(f"phit_{i}", ResBlock(phi_act))
        for i in range(s):
            self.register_parameter(f"r{i}", nn.Parameter(torch.tensor([0.5])))
        for i in range(1, s):
            self.add_module(f"stage{i}_encoder", Encoder(n, cfg.scale_unetfeats, csff=i > 1))
            self.add_module(f"stage{i}_decoder", Decoder(n, cfg.scale_unetfeats))
        for i in range(1, s):
            self.add_module(f"sam{i}{i + 1}", SAM(n, bias=cfg.bias))
            self.add_module(f"merge{i}{i + 1}", mergeblock(n, 3, True))
        self.tail = conv(n, 3, k, bias=cfg.bias)

    def forward(self, y: torch.Tensor, *, return_stages: bool = False) -> torch.Tensor | list[torch.Tensor]:
        stages: list[torch.Tensor] = []
        x, enc, dec, sam_feats = y, None, None, None
        last = self.cfg.num_stages - 1
        for i in range(last + 1):
            z = gradient_step(x, y, getattr(self, f"phi_{i}"), getattr(self, f"phit_{i}"), getattr(self, f"r{i}"))
            feats = getattr(self, f"shallow_feat{i + 1}")(z)
            if i > 0:
                feats = getattr(self, f"merge{i}{i + 1}")(feats, sam_feats)
            if i == last:
                x = self.tail(feats) + y
            else:
                enc, bottom = getattr(self, f"stage{i + 1}_encoder")(feats, enc, dec)
                dec = getattr(self, f"stage{i + 1}_decoder")(bottom, enc)
                sam_feats, x = getattr(self, f"sam{i + 1}{i + 2}")(dec[-1], z)
            stages.append(x)
        return stages[::-1] if return_stages else x
