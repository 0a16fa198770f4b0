"""Dual-path RNN backbone (Luo, Chen & Yoshioka 2020), laid out like Asteroid's.

One deliberate difference: the chunks are overlap-added back to frames at the
end of the backbone (Asteroid applies its first 1x1 output conv before the
overlap-add). Because we average the overlapping chunks, a 1x1 conv commutes
with the overlap-add, so the two orders compute the same function with the
same parameters; ours lets every mask head see plain (batch, F, frames).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from masksep.models.layers import GlobalLayerNorm
from masksep.models.spec import DPRNNConfig


class DPRNNBlock(nn.Module):
    """Intra-chunk BLSTM + Linear + gLN + residual, then inter-chunk LSTM
    (bidirectional or not) + Linear + gLN + residual.

    forward: x (batch, C, K, S) -> (batch, C, K, S); K = chunk size,
    S = number of chunks.
    """

    def __init__(self, channels: int, hidden: int, bidirectional: bool):
        super().__init__()
        self.intra_rnn = nn.LSTM(channels, hidden, batch_first=True, bidirectional=True)
        self.intra_linear = nn.Linear(2 * hidden, channels)
        self.intra_norm = GlobalLayerNorm(channels)
        n_dir = 2 if bidirectional else 1
        self.inter_rnn = nn.LSTM(channels, hidden, batch_first=True, bidirectional=bidirectional)
        self.inter_linear = nn.Linear(n_dir * hidden, channels)
        self.inter_norm = GlobalLayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, k, s = x.shape
        # Within each chunk: sequences of length K, one per (example, chunk).
        intra = x.permute(0, 3, 2, 1).reshape(batch * s, k, channels)
        intra = self.intra_linear(self.intra_rnn(intra)[0])
        intra = intra.reshape(batch, s, k, channels).permute(0, 3, 2, 1)
        x = x + self.intra_norm(intra)
        # Across chunks: sequences of length S, one per (example, position in chunk).
        inter = x.permute(0, 2, 3, 1).reshape(batch * k, s, channels)
        inter = self.inter_linear(self.inter_rnn(inter)[0])
        inter = inter.reshape(batch, k, s, channels).permute(0, 3, 1, 2)
        return x + self.inter_norm(inter)


class DPRNN(nn.Module):
    """gLN + 1x1 conv N->bottleneck, 50 %-overlapping chunks of size K,
    ``blocks`` DPRNN blocks, PReLU, overlap-add back to frames.

    forward: feats (batch, N, frames) -> (batch, F, frames), F = ``out_features``
    = bottleneck.
    """

    def __init__(self, in_channels: int, cfg: DPRNNConfig):
        super().__init__()
        self.chunk_size = cfg.chunk_size
        self.hop = cfg.chunk_size // 2
        self.bottleneck = nn.Sequential(
            GlobalLayerNorm(in_channels), nn.Conv1d(in_channels, cfg.bottleneck, 1)
        )
        self.blocks = nn.Sequential(
            *(DPRNNBlock(cfg.bottleneck, cfg.hidden, cfg.bidirectional) for _ in range(cfg.blocks))
        )
        self.out_act = nn.PReLU()
        self.out_features = cfg.bottleneck

    def padding(self, frames: int) -> tuple[int, int]:
        """Zero frames (left, right) added before chunking.

        K - hop (= a hop when K is even, as in the original DPRNN code) on
        each side, so that the first and last frames also sit in two chunks,
        then enough on the right for whole chunks to cover the sequence.
        """
        k, hop = self.chunk_size, self.hop
        edge = k - hop
        total = frames + 2 * edge
        n_chunks = max(0, -(-(total - k) // hop)) + 1
        return edge, (n_chunks - 1) * hop + k - frames - edge

    def chunk(self, x: Tensor) -> Tensor:
        """(batch, C, frames) -> (batch, C, K, S), zero-padded, hop K // 2."""
        left, right = self.padding(x.shape[-1])
        x = F.pad(x, (left, right))
        return x.unfold(-1, self.chunk_size, self.hop).transpose(2, 3)

    def overlap_add(self, chunks: Tensor, frames: int) -> Tensor:
        """(batch, C, K, S) -> (batch, C, frames): the mean of the chunks that
        cover each frame, padding removed. Inverse of :meth:`chunk`."""
        batch, channels, k, s = chunks.shape
        left, right = self.padding(frames)
        padded = left + frames + right
        fold = dict(output_size=(padded, 1), kernel_size=(k, 1), stride=(self.hop, 1))
        summed = F.fold(chunks.reshape(batch, channels * k, s), **fold)
        # Dividing by the cover count (2 inside, when K is even) keeps the
        # output's scale independent of K and makes the edges no different.
        ones = torch.ones(1, k, s, dtype=chunks.dtype, device=chunks.device)
        count = F.fold(ones, **fold)
        out = (summed / count).reshape(batch, channels, padded)
        return out[..., left : left + frames]

    def forward(self, feats: Tensor) -> Tensor:
        frames = feats.shape[-1]
        x = self.chunk(self.bottleneck(feats))
        x = self.out_act(self.blocks(x))
        return self.overlap_add(x, frames)
