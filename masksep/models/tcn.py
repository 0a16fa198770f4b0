"""Conv-TasNet's temporal convolutional network (Luo & Mesgarani 2019).

The layer layout follows Asteroid's ``TDConvNet`` so that parameter counts
match theirs, with one move: the PReLU that Asteroid puts in front of its mask
convolution is the last layer of this backbone, so every mask head starts with
its own 1x1 convolution.
"""

from __future__ import annotations

from torch import Tensor, nn

from masksep.models.layers import DepthwiseConv1d, GlobalLayerNorm
from masksep.models.spec import TCNConfig


class Conv1DBlock(nn.Module):
    """One dilated block: 1x1 conv B->H, PReLU, gLN, depthwise dilated conv,
    PReLU, gLN, then a residual 1x1 conv H->B and (if ``skip`` > 0) a skip
    1x1 conv H->Sc.

    forward: x (batch, B, frames) -> (residual (batch, B, frames),
    skip (batch, Sc, frames) or None).
    """

    def __init__(self, bottleneck: int, hidden: int, skip: int, kernel_size: int, dilation: int):
        super().__init__()
        self.shared = nn.Sequential(
            nn.Conv1d(bottleneck, hidden, 1),
            nn.PReLU(),
            GlobalLayerNorm(hidden),
            # non-causal: the context is centred on each frame
            DepthwiseConv1d(hidden, kernel_size, dilation),
            nn.PReLU(),
            GlobalLayerNorm(hidden),
        )
        self.res_conv = nn.Conv1d(hidden, bottleneck, 1)
        self.skip_conv = nn.Conv1d(hidden, skip, 1) if skip > 0 else None

    def forward(self, x: Tensor, residual: bool = True) -> tuple[Tensor | None, Tensor | None]:
        y = self.shared(x)
        skip = self.skip_conv(y) if self.skip_conv is not None else None
        return (self.res_conv(y) if residual else None), skip


class TCN(nn.Module):
    """gLN + 1x1 bottleneck conv N->B, X*R dilated blocks (dilation 2^x within
    each repeat), sum of the skip outputs (or the residual stream when
    ``skip`` == 0), PReLU.

    forward: feats (batch, N, frames) -> (batch, F, frames), F = ``out_features``
    = skip if skip > 0 else bottleneck.
    """

    def __init__(self, in_channels: int, cfg: TCNConfig):
        super().__init__()
        self.bottleneck = nn.Sequential(
            GlobalLayerNorm(in_channels), nn.Conv1d(in_channels, cfg.bottleneck, 1)
        )
        self.blocks = nn.ModuleList(
            Conv1DBlock(cfg.bottleneck, cfg.hidden, cfg.skip, cfg.kernel_size, 2**x)
            for _ in range(cfg.repeats)
            for x in range(cfg.layers)
        )
        self.out_act = nn.PReLU()
        self.use_skip = cfg.skip > 0
        self.out_features = cfg.skip if self.use_skip else cfg.bottleneck

    def forward(self, feats: Tensor) -> Tensor:
        x = self.bottleneck(feats)
        skip_sum = 0.0
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # With a skip path nothing reads the last block's residual output:
            # Asteroid still has (and computes) that conv, so we keep its
            # parameters for equal counts but skip its MACs. It gets no
            # gradient (DDP needs find_unused_parameters=True).
            residual, skip = block(x, residual=not (self.use_skip and i == last))
            if residual is not None:
                x = x + residual
            if skip is not None:
                skip_sum = skip_sum + skip
        return self.out_act(skip_sum if self.use_skip else x)
