"""Small layers shared by the backbones and the mask heads, and the activations by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from masksep.models.registry import Registry


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
        # Statistics in float32: under mixed precision eps=1e-8 underflows to 0
        # in float16 and a silent (e.g. zero-padded) example would divide by 0.
        x32 = x.float()
        dims = tuple(range(1, x.dim()))
        mean = x32.mean(dim=dims, keepdim=True)
        var = (x32 - mean).pow(2).mean(dim=dims, keepdim=True)
        normed = (x32 - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        out = normed * self.gamma.view(shape) + self.beta.view(shape)
        return out.to(x.dtype)


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
)

# On the masks (B, K, N, frames): plain functions, not modules, so a head's
# module tree and state dict do not depend on its mask activation.
MASK_ACTIVATIONS: Registry[Callable[[Tensor], Tensor]] = Registry(
    "head.mask_act",
    {"sigmoid": torch.sigmoid, "relu": torch.relu, "softmax": _softmax_over_outputs, "linear": _linear},
)
