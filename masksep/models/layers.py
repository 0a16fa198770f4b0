"""Small layers shared by the backbones and the mask heads, and the activations by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksep.models.registry import Registry
from masksep.models.spec import HIDDEN_ACTS, MASK_ACTS


class GlobalLayerNorm(nn.Module):
    """Global layer norm (gLN, Luo & Mesgarani 2019).

    Input (B, C, ...) -> output of the same shape. Each example is normalised
    over all its channels and positions together, then scaled and shifted by a
    per-channel gain and bias (2 * C parameters).
    """

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        # gLN is GroupNorm with one group; torch's fused kernel is several times
        # faster than the elementwise formula, in the backward pass above all. It
        # keeps its statistics in float32 under autocast (eps=1e-8 would underflow
        # to 0 in float16, and a silent, zero-padded example would divide by 0).
        return F.group_norm(x, 1, self.gamma, self.beta, self.eps)


class DepthwiseConv1d(nn.Conv1d):
    """A depthwise (groups = channels), dilated 1-D convolution with 'same' padding,
    computed as a sum of K shifted, scaled copies of the input.

    Mathematically the convolution it subclasses (same parameters, same state-dict
    names); on CPU its backward pass is about 3x faster than the oneDNN kernel's
    for the TCN's small kernels (the weight gradient is K products and sums).
    Without gradients (evaluation, inference, and the MAC count, which torch's
    flop counter makes from convolutions) it is the convolution itself, whose
    forward is as fast. 'same' padding as torch's: the left side gets half of
    dilation * (K - 1), rounded down, so even kernel sizes keep the frame count too.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1):
        super().__init__(channels, channels, kernel_size, dilation=dilation, groups=channels,
                         padding="same")

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return super().forward(x)
        k, d, frames = self.kernel_size[0], self.dilation[0], x.shape[-1]
        total = d * (k - 1)
        padded = F.pad(x, (total // 2, total - total // 2))
        w = self.weight[:, 0, :, None]  # (C, K, 1)
        y = w[:, 0] * padded[..., :frames]
        for i in range(1, k):
            y = y + w[:, i] * padded[..., i * d : i * d + frames]
        return y + self.bias[:, None] if self.bias is not None else y


def _softmax_over_outputs(masks: Tensor) -> Tensor:
    # Across the K outputs (dim 1): the masks of one time-frequency point sum to one.
    return torch.softmax(masks, dim=1)


def _linear(masks: Tensor) -> Tensor:
    return masks


# Between the layers of a deep mask head: each name builds an nn.Module (the
# trunk is an nn.Sequential, so the analysis tools can read it layer by layer).
HIDDEN_ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry(
    "head.hidden_act",
    {"tanh": nn.Tanh, "relu": nn.ReLU, "prelu": nn.PReLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU},
    names=HIDDEN_ACTS,
)

# On the masks (B, K, N, frames): plain functions, not modules, so a head's
# module tree and state dict do not depend on its mask activation.
MASK_ACTIVATIONS: Registry[Callable[[Tensor], Tensor]] = Registry(
    "head.mask_act",
    {"sigmoid": torch.sigmoid, "relu": torch.relu, "softmax": _softmax_over_outputs, "linear": _linear},
    names=MASK_ACTS,
)
