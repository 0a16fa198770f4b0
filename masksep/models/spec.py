"""What a config can say about each part of a separator: the components' configs.

Torch-free, so that ``masksep.config`` (which composes these with the data and
training configs) loads and checks a config without importing torch. The
kinds below are the names a config may give; the registries that build them
(``masksep.models.separator``, ``masksep.models.layers``) are checked against
these tuples when they are made, so a name exists in both places or in neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ENCODER_KINDS = ("conv", "stft")
BACKBONE_KINDS = ("tcn", "dprnn")
HEAD_KINDS = ("shallow", "deep", "og")
HEAD_LAYOUTS = ("joint", "per_source")
HIDDEN_ACTS = ("tanh", "relu", "prelu", "sigmoid", "gelu")
MASK_ACTS = ("sigmoid", "relu", "softmax", "linear")
# C^P above this is refused by og_assign: 2^20 covers P = 20 with C = 2, P = 12 with C = 3.
OG_MAX_ASSIGNMENTS = 2**20


@dataclass
class EncoderConfig:
    """Front end. ``conv``: Conv-TasNet's learned filterbank (N filters of length L,
    stride L/2 by default). ``stft``: an STFT with a periodic Hann window of length
    ``kernel_size`` (= n_fft) and hop ``stride``; N is then kernel_size // 2 + 1 bins
    and ``n_filters`` is not used."""

    kind: Literal[ENCODER_KINDS] = "conv"
    n_filters: int = 64  # N
    kernel_size: int = 16  # L (stft: window and FFT length)
    stride: int = 8  # L / 2 in Conv-TasNet (stft: hop)

    @property
    def n_bins(self) -> int:
        """Size N of the representation that the masks multiply."""
        return self.kernel_size // 2 + 1 if self.kind == "stft" else self.n_filters


@dataclass
class TCNConfig:
    """Conv-TasNet's temporal convolutional network (Luo & Mesgarani 2019)."""

    bottleneck: int = 64  # B
    hidden: int = 128  # H
    kernel_size: int = 3  # P
    layers: int = 4  # X: blocks per repeat, dilations 1, 2, ..., 2^(X-1)
    repeats: int = 2  # R
    skip: int = 64  # skip-connection channels; 0 = no skip path (output = residual path)


@dataclass
class DPRNNConfig:
    """Dual-path RNN (Luo, Chen & Yoshioka 2020)."""

    bottleneck: int = 64
    hidden: int = 64  # LSTM units per direction
    chunk_size: int = 100  # K; chunks overlap by 50 %
    blocks: int = 2
    bidirectional: bool = True  # the inter-chunk RNN; the intra-chunk RNN is always bidirectional


@dataclass
class BackboneConfig:
    kind: Literal[BACKBONE_KINDS] = "tcn"
    tcn: TCNConfig = field(default_factory=TCNConfig)
    dprnn: DPRNNConfig = field(default_factory=DPRNNConfig)


@dataclass
class HeadConfig:
    """The mask estimation module, the subject of the study.

    shallow: one 1x1 conv to C*N, then ``mask_act`` (depth and width are not used).
    deep:    an MLP of ``depth`` 1x1 convs, hidden size ``width``, ``hidden_act``
             between layers; depth 1 is exactly shallow.
    og:      overseparation-grouping: a shallow or deep trunk (depth, width) to P*N
             masks (P = ``oversep`` >= C), then ``grouping``: ``learned`` (a trainable
             soft assignment of the P outputs to the C sources) or ``oracle``
             (MixIT-style best binary assignment against the references).

    layout (deep and og heads of depth >= 2; shallow heads and depth 1 ignore it):
      joint:      one MLP whose last layer emits all K x N masks at once (K = C, or P
                  for og): F -> width -> ... -> width -> K*N.
      per_source: the SIMO-SISO configuration of Luo et al. (2020, "Rethinking the
                  separation layers in speech separation networks"), through which
                  Li, Hu & Luo (2022) introduce the deep mask module: a SIMO 1x1 conv
                  F -> K*width makes one feature per output, then ``hidden_act``, then
                  a SISO MLP of depth - 1 layers (width -> ... -> N), shared by the K
                  outputs, maps each feature to its mask. For og heads K is P: the
                  SIMO layer makes one feature per overseparated output, and the
                  grouping then sums them into C sources as for a joint og head.
                  At depth 1 the SIMO conv maps F -> K*N directly, which is the
                  shallow head (the same module).
    """

    kind: Literal[HEAD_KINDS] = "shallow"
    depth: int = 1
    width: int = 256
    hidden_act: Literal[HIDDEN_ACTS] = "tanh"
    mask_act: Literal[MASK_ACTS] = "sigmoid"
    oversep: int = 4  # P, used by og only
    grouping: Literal["learned", "oracle"] = "learned"  # og only
    gated_output: bool = False  # DPRNN's gated output layer on each mask (tanh * sigmoid, 1x1 conv)
    layout: Literal[HEAD_LAYOUTS] = "joint"  # deep (and og) trunk: one MLP, or SIMO + shared SISO
