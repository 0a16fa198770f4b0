"""Small layers shared by the backbones and the mask heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn


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


def hidden_activation(name: str) -> nn.Module:
    """The activation between the layers of a deep mask head (``head.hidden_act``)."""
    makers = {
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "prelu": nn.PReLU,
        "sigmoid": nn.Sigmoid,
        "gelu": nn.GELU,
    }
    if name not in makers:
        raise ValueError(f"unknown hidden activation {name!r} (known: {', '.join(makers)})")
    return makers[name]()


def mask_activation(masks: Tensor, name: str) -> Tensor:
    """Apply ``head.mask_act`` to masks of shape (B, K, N, frames).

    ``softmax`` normalises across the K outputs (dim 1), so the masks of one
    time-frequency point sum to one.
    """
    if name == "sigmoid":
        return torch.sigmoid(masks)
    if name == "relu":
        return torch.relu(masks)
    if name == "softmax":
        return torch.softmax(masks, dim=1)
    if name == "linear":
        return masks
    raise ValueError(f"unknown mask activation {name!r}")
