"""The mask estimation module: the subject of the study.

``shallow``: one 1x1 conv F -> C*N, then the mask activation.
``deep``:    ``depth`` 1x1 convs F -> width -> ... -> width -> C*N with
             ``hidden_act`` between them; depth 1 is exactly ``shallow``.
             ``layout: per_source`` (Luo et al. 2020's SIMO-SISO, through which
             Li, Hu & Luo 2022 introduce the deep module) splits it: a SIMO 1x1
             conv F -> C*width (one feature per source) and ``hidden_act``, then
             one SISO MLP width -> ... -> width -> N of depth - 1 layers, shared by
             the sources, on each source's feature. Depth 1 is ``shallow`` again.
``og``:      overseparation-grouping: the same trunk to P*N masks, the mask
             activation over the P outputs, then ``learned`` grouping (a
             trainable soft assignment of the P masks to the C sources, used at
             inference too) or ``oracle`` grouping (the P masks are returned and
             the loss picks the best assignment against the references).
             With ``layout: per_source`` the SIMO layer makes one feature per
             overseparated output (P of them, not C) and the shared SISO MLP maps
             each to its mask; the grouping is unchanged. This keeps the two
             rules the module lives by: the trunk estimates ``n_masks`` masks
             whatever its layout, and depth 1 is the shallow og head.

Optionally (``gated_output``, DPRNN's output layer) each mask goes through
tanh(1x1 conv) * sigmoid(1x1 conv) and a bias-free 1x1 conv, shared by all
outputs, before the mask activation.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from masksep.models import spec
from masksep.models.layers import HIDDEN_ACTIVATIONS, MASK_ACTIVATIONS
from masksep.models.registry import Registry
from masksep.models.spec import HeadConfig

# Weight of an output's own source in the initial learned grouping (see
# _initial_group_logits).
_GROUP_INIT_WEIGHT = 0.9


class GatedOutput(nn.Module):
    """DPRNN's gated output layer, applied to each mask with shared weights.

    forward: (B, K, N, frames) -> (B, K, N, frames).
    """

    def __init__(self, n_bins: int):
        super().__init__()
        self.net_out = nn.Conv1d(n_bins, n_bins, 1)
        self.net_gate = nn.Conv1d(n_bins, n_bins, 1)
        self.end_conv = nn.Conv1d(n_bins, n_bins, 1, bias=False)

    def forward(self, masks: Tensor) -> Tensor:
        batch, n_out, n_bins, frames = masks.shape
        x = masks.reshape(batch * n_out, n_bins, frames)
        x = torch.tanh(self.net_out(x)) * torch.sigmoid(self.net_gate(x))
        return self.end_conv(x).reshape(batch, n_out, n_bins, frames)


def _initial_group_logits(n_src: int, n_masks: int) -> Tensor:
    """Logits (C, P) of the learned grouping at initialisation.

    Not zeros: a uniform assignment gives every source the same mask (the
    mean of all P), so training would start where all outputs are equal and
    only small gradient asymmetries break the tie. Instead output p starts
    mostly assigned to source p mod C, the even fixed grouping an OG system
    would otherwise use, so the head is a working separator from step one.
    Not a hard (saturated) assignment either: at weight 0.9 the softmax still
    passes gradient, so training can move outputs between sources.
    """
    logits = torch.zeros(n_src, n_masks)
    if n_src > 1:
        # softmax over C gives e^s / (e^s + C - 1) = w  <=>  s = log(w (C - 1) / (1 - w))
        strength = math.log(_GROUP_INIT_WEIGHT * (n_src - 1) / (1 - _GROUP_INIT_WEIGHT))
        logits[torch.arange(n_masks) % n_src, torch.arange(n_masks)] = strength
    return logits


class SharedSISO(nn.Module):
    """One single-input-single-output module applied to each of K stacked
    features with the same weights (the SISO part of SIMO-SISO).

    forward: (B, K*width, frames) -> (B, K*n_out, frames), feature k in channels
    [k*width, (k+1)*width) and its output in [k*n_out, (k+1)*n_out): the channel
    order of a joint head's last layer, so the trunk's output reshapes to
    (B, K, N, frames) the same way for both layouts.
    """

    def __init__(self, n_outputs: int, net: nn.Sequential):
        super().__init__()
        self.n_outputs = n_outputs
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, frames = x.shape
        y = self.net(x.reshape(batch * self.n_outputs, channels // self.n_outputs, frames))
        return y.reshape(batch, -1, frames)


def joint_trunk(in_features: int, n_masks: int, n_bins: int, cfg: HeadConfig, depth: int
                ) -> nn.Sequential:
    """conv F -> width, act, ..., conv width -> n_masks*N: one MLP for all masks."""
    act = HIDDEN_ACTIVATIONS.get(cfg.hidden_act)
    layers: list[nn.Module] = []
    width_in = in_features
    for _ in range(depth - 1):
        layers += [nn.Conv1d(width_in, cfg.width, 1), act()]
        width_in = cfg.width
    layers.append(nn.Conv1d(width_in, n_masks * n_bins, 1))
    return nn.Sequential(*layers)


def per_source_trunk(in_features: int, n_masks: int, n_bins: int, cfg: HeadConfig, depth: int
                     ) -> nn.Sequential:
    """SIMO conv F -> n_masks*width, act, then SharedSISO(conv width -> width, act,
    ..., conv width -> N); at depth 1 the SIMO conv is F -> n_masks*N, the joint trunk."""
    if depth == 1:
        return joint_trunk(in_features, n_masks, n_bins, cfg, depth)
    act = HIDDEN_ACTIVATIONS.get(cfg.hidden_act)
    siso: list[nn.Module] = []
    for _ in range(depth - 2):
        siso += [nn.Conv1d(cfg.width, cfg.width, 1), act()]
    siso.append(nn.Conv1d(cfg.width, n_bins, 1))
    return nn.Sequential(nn.Conv1d(in_features, n_masks * cfg.width, 1), act(),
                         SharedSISO(n_masks, nn.Sequential(*siso)))


# head.layout -> builder(F, n_masks, N, cfg.head, depth): the trunk, an nn.Sequential of
# 1x1 convs (and activations) from features to n_masks*N pre-activations.
HEAD_LAYOUTS: Registry[Callable[[int, int, int, HeadConfig, int], nn.Sequential]] = Registry(
    "head.layout", {"joint": joint_trunk, "per_source": per_source_trunk}, names=spec.HEAD_LAYOUTS)


class MaskHead(nn.Module):
    """forward: feats (B, F, frames) -> masks (B, K, N, frames), K = ``n_out``.

    ``n_out`` is C, except P for an og head with oracle grouping
    (``oracle_grouping`` True), whose P masks the loss groups.
    """

    def __init__(self, in_features: int, n_bins: int, n_src: int, cfg: HeadConfig):
        super().__init__()
        og = cfg.kind == "og"
        self.kind = cfg.kind
        self.n_bins = n_bins
        self.n_src = n_src
        self.n_masks = cfg.oversep if og else n_src  # masks the trunk estimates
        self.oracle_grouping = og and cfg.grouping == "oracle"
        self.n_out = self.n_masks if self.oracle_grouping else n_src
        self.mask_act = cfg.mask_act

        depth = 1 if cfg.kind == "shallow" else cfg.depth
        # What the head computes in the trunk's layout: joint, or per_source from
        # depth 2 (at depth 1 the two are one conv F -> n_masks*N).
        self.layout = cfg.layout if depth > 1 else "joint"
        # One Sequential for every depth and layout, so a depth-1 deep head has the
        # same parameter names as a shallow one (their state dicts are exchangeable).
        self.trunk = HEAD_LAYOUTS.get(cfg.layout)(in_features, self.n_masks, n_bins, cfg, depth)
        self.gate = GatedOutput(n_bins) if cfg.gated_output else None
        if og and not self.oracle_grouping:
            self.group_logits = nn.Parameter(_initial_group_logits(n_src, self.n_masks))
        else:
            self.register_parameter("group_logits", None)

    def grouping_weights(self) -> Tensor | None:
        """A (C, P): the share of each overseparated output given to each
        source (columns sum to one); None unless the grouping is learned."""
        if self.group_logits is None:
            return None
        return torch.softmax(self.group_logits, dim=0)

    def forward(self, feats: Tensor) -> Tensor:
        batch, _, frames = feats.shape
        masks = self.trunk(feats).reshape(batch, self.n_masks, self.n_bins, frames)
        if self.gate is not None:
            masks = self.gate(masks)
        masks = MASK_ACTIVATIONS.get(self.mask_act)(masks)
        weights = self.grouping_weights()
        if weights is not None:
            masks = torch.einsum("cp,bpnt->bcnt", weights.to(masks.dtype), masks)
        return masks
