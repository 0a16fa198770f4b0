"""The separator: front end -> backbone -> mask head -> masks * encoding -> decoder.

As in Asteroid's ``BaseEncoderMaskerDecoder`` every step is a named method that
can be replaced alone; Asteroid's masker is split in two (backbone and head)
because the head is what this study varies.

The registries below build every front end, backbone and head that a config can
ask for; the names a config may give are in masksep.models.spec, and each
registry is checked against them when it is made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor, nn

from masksep.models import spec
from masksep.models.dprnn import DPRNN
from masksep.models.encoders import ConvFrontEnd, FrontEnd, STFTFrontEnd
from masksep.models.heads import MaskHead
from masksep.models.registry import Registry
from masksep.models.spec import BackboneConfig, EncoderConfig, HeadConfig
from masksep.models.tcn import TCN

if TYPE_CHECKING:
    from masksep.config import Config

# encoder.kind -> builder(cfg.encoder): a FrontEnd.
ENCODERS: Registry[Callable[[EncoderConfig], FrontEnd]] = Registry(
    "encoder.kind",
    {
        "conv": lambda enc: ConvFrontEnd(enc.n_filters, enc.kernel_size, enc.stride),
        "stft": lambda enc: STFTFrontEnd(enc.kernel_size, enc.stride),
    },
    names=spec.ENCODER_KINDS,
)

# backbone.kind -> builder(N, cfg.backbone): a module (B, N, frames) -> (B, F, frames)
# with F as its ``out_features``.
BACKBONES: Registry[Callable[[int, BackboneConfig], nn.Module]] = Registry(
    "backbone.kind",
    {
        "tcn": lambda n_bins, bb: TCN(n_bins, bb.tcn),
        "dprnn": lambda n_bins, bb: DPRNN(n_bins, bb.dprnn),
    },
    names=spec.BACKBONE_KINDS,
)

# head.kind -> builder(F, N, C, cfg.head): a module (B, F, frames) -> masks
# (B, n_out, N, frames) with ``n_out`` and ``oracle_grouping`` attributes (see
# MaskHead). One MaskHead does all three: shallow and deep differ in depth, og in P.
HEADS: Registry[Callable[[int, int, int, HeadConfig], nn.Module]] = Registry(
    "head.kind",
    {
        "shallow": MaskHead,
        "deep": MaskHead,
        "og": MaskHead,
    },
    names=spec.HEAD_KINDS,
)


class Separator(nn.Module):
    """forward: mix (B, T) -> estimates (B, n_out, T).

    ``n_out`` is ``n_src`` (C), except P for an og head with oracle grouping
    (``oracle_grouping`` True); those P estimates are grouped by the loss.
    """

    def __init__(self, frontend: FrontEnd, backbone: nn.Module, head: nn.Module, n_src: int):
        super().__init__()
        self.frontend = frontend
        self.backbone = backbone
        self.head = head
        self.n_src = n_src
        self.n_out = head.n_out
        self.oracle_grouping = head.oracle_grouping

    def forward(self, mix: Tensor) -> Tensor:
        if mix.dim() != 2:
            raise ValueError(f"expected a mixture of shape (batch, time), got {tuple(mix.shape)}")
        rep, feats = self.encode(mix)
        hidden = self.run_backbone(feats)
        masks = self.estimate_masks(hidden)
        masked = self.apply_masks(masks, rep)
        return self.decode(masked, mix.shape[-1])

    def encode(self, mix: Tensor) -> tuple[Tensor, Tensor]:
        """mix (B, T) -> (rep, feats), both (B, N, frames): ``rep`` is what the
        masks multiply, ``feats`` (real) what the backbone reads."""
        return self.frontend.encode(mix)

    def run_backbone(self, feats: Tensor) -> Tensor:
        """feats (B, N, frames) -> hidden (B, F, frames), F = ``backbone.out_features``."""
        return self.backbone(feats)

    def estimate_masks(self, hidden: Tensor) -> Tensor:
        """hidden (B, F, frames) -> masks (B, n_out, N, frames): the mask head."""
        return self.head(hidden)

    @staticmethod
    def apply_masks(masks: Tensor, rep: Tensor) -> Tensor:
        """masks (B, K, N, frames) * rep (B, N, frames) -> (B, K, N, frames)."""
        return masks * rep.unsqueeze(1)

    def decode(self, masked: Tensor, length: int) -> Tensor:
        """masked (B, K, N, frames) -> (B, K, length)."""
        return self.frontend.decode(masked, length)


def build_model(cfg: Config) -> Separator:
    """The separator that ``cfg`` describes, its parts taken from the registries.

    Built in the order front end -> backbone -> head, and the order matters:
    the head's random draws come last, so under one seed every head variant
    gets the same front end and backbone weights (common random numbers).
    """
    frontend = ENCODERS.get(cfg.encoder.kind)(cfg.encoder)
    backbone = BACKBONES.get(cfg.backbone.kind)(frontend.n_bins, cfg.backbone)
    head = HEADS.get(cfg.head.kind)(backbone.out_features, frontend.n_bins, cfg.n_src, cfg.head)
    return Separator(frontend, backbone, head, cfg.n_src)
