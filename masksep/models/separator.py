"""The separator: front end -> backbone -> mask head -> masks * encoding -> decoder.

As in Asteroid's ``BaseEncoderMaskerDecoder`` every step is a named method that
can be replaced alone; Asteroid's masker is split in two (backbone and head)
because the head is what this study varies.
"""

from __future__ import annotations

from torch import Tensor, nn

from masksep.config import Config
from masksep.models.dprnn import DPRNN
from masksep.models.encoders import FrontEnd, build_frontend
from masksep.models.heads import MaskHead
from masksep.models.tcn import TCN


class Separator(nn.Module):
    """forward: mix (B, T) -> estimates (B, n_out, T).

    ``n_out`` is ``n_src`` (C), except P for an og head with oracle grouping
    (``oracle_grouping`` True); those P estimates are grouped by the loss.
    """

    def __init__(self, frontend: FrontEnd, backbone: nn.Module, head: MaskHead, n_src: int):
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
        masks = self.head(self.backbone(feats))
        masked = self.apply_masks(masks, rep)
        return self.decode(masked, mix.shape[-1])

    def encode(self, mix: Tensor) -> tuple[Tensor, Tensor]:
        """mix (B, T) -> (rep, feats), both (B, N, frames)."""
        return self.frontend.encode(mix)

    @staticmethod
    def apply_masks(masks: Tensor, rep: Tensor) -> Tensor:
        """masks (B, K, N, frames) * rep (B, N, frames) -> (B, K, N, frames)."""
        return masks * rep.unsqueeze(1)

    def decode(self, masked: Tensor, length: int) -> Tensor:
        """masked (B, K, N, frames) -> (B, K, length)."""
        return self.frontend.decode(masked, length)


def build_model(cfg: Config) -> Separator:
    """The separator that ``cfg`` describes (backbone chosen by ``backbone.kind``)."""
    frontend = build_frontend(cfg.encoder)
    if cfg.backbone.kind == "tcn":
        backbone: nn.Module = TCN(frontend.n_bins, cfg.backbone.tcn)
    elif cfg.backbone.kind == "dprnn":
        backbone = DPRNN(frontend.n_bins, cfg.backbone.dprnn)
    else:
        raise ValueError(f"unknown backbone kind {cfg.backbone.kind!r}")
    head = MaskHead(backbone.out_features, frontend.n_bins, cfg.n_src, cfg.head)
    return Separator(frontend, backbone, head, cfg.n_src)
