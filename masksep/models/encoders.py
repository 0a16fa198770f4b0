"""Front ends: the representation that the masks multiply, and the way back to audio.

Two kinds (``encoder.kind``):

* ``conv``: Conv-TasNet's learned filterbank. N filters of length L with stride
  S, a ReLU on the encoder output, and a transposed convolution back.
* ``stft``: an STFT with a periodic Hann window of length L (= n_fft) and hop
  S; N = L // 2 + 1 bins. Real masks multiply the complex spectrogram.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FrontEnd(nn.Module):
    """Base class of the front ends.

    ``encode(mix (B, T)) -> (rep, feats)``: ``rep`` (B, N, frames) is what the
    masks multiply; ``feats`` (B, N, frames), real, is the backbone input.
    ``decode(masked (B, K, N, frames), length) -> (B, K, length)``.
    """

    n_bins: int  # N

    def encode(self, mix: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def decode(self, masked: Tensor, length: int) -> Tensor:
        raise NotImplementedError

    def forward(self, mix: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode(mix)


class ConvFrontEnd(FrontEnd):
    """Learned filterbank: Conv1d(1, N, L, stride, bias=False) + ReLU, and
    ConvTranspose1d(N, 1, L, stride, bias=False) back. ``feats`` is ``rep``."""

    def __init__(self, n_filters: int, kernel_size: int, stride: int):
        super().__init__()
        self.n_bins = n_filters
        self.kernel_size = kernel_size
        self.stride = stride
        self.encoder = nn.Conv1d(1, n_filters, kernel_size, stride=stride, bias=False)
        self.decoder = nn.ConvTranspose1d(n_filters, 1, kernel_size, stride=stride, bias=False)

    def padding(self, length: int) -> tuple[int, int]:
        """Zeros (left, right) added to a length-``length`` input before encoding.

        Both ends get L - S extra samples (as in Luo's original Conv-TasNet
        code) so that the first and last samples are covered by as many
        overlapping frames as the middle ones, and the right end is then
        rounded up so that whole frames cover the signal.
        """
        edge = self.kernel_size - self.stride
        total = length + 2 * edge
        n_frames = max(0, -(-(total - self.kernel_size) // self.stride)) + 1
        padded = (n_frames - 1) * self.stride + self.kernel_size
        return edge, padded - length - edge

    def encode(self, mix: Tensor) -> tuple[Tensor, Tensor]:
        """mix (B, T) -> rep = feats (B, N, frames), non-negative."""
        left, right = self.padding(mix.shape[-1])
        x = F.pad(mix.unsqueeze(1), (left, right))
        rep = torch.relu(self.encoder(x))
        return rep, rep

    def decode(self, masked: Tensor, length: int) -> Tensor:
        """masked (B, K, N, frames) -> (B, K, length)."""
        batch, n_out, n_bins, frames = masked.shape
        y = self.decoder(masked.reshape(batch * n_out, n_bins, frames))
        left = self.kernel_size - self.stride
        return y[..., left : left + length].reshape(batch, n_out, length)


class STFTFrontEnd(FrontEnd):
    """STFT with a periodic Hann window of length n_fft and hop ``hop``.

    ``rep`` is the complex spectrogram (B, N, frames), N = n_fft // 2 + 1;
    ``feats`` is its magnitude. Plain magnitude, not log1p: like the conv
    front end's ReLU(conv) it scales linearly with the input, so the gLN at the
    backbone input makes the masks independent of the mixture's level; log1p
    would make the model behave differently on quiet and loud data sets.
    """

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft = n_fft
        self.hop = hop
        self.n_bins = n_fft // 2 + 1
        # Not persistent: it is fixed, so checkpoints need not carry it.
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)

    def encode(self, mix: Tensor) -> tuple[Tensor, Tensor]:
        """mix (B, T) -> (complex spectrogram, magnitude), both (B, N, frames)."""
        spec = torch.stft(
            mix,
            n_fft=self.n_fft,
            hop_length=self.hop,
            win_length=self.n_fft,
            window=self.window,
            center=True,
            # Zeros, not reflection: reflection needs T > n_fft // 2, and zeros
            # match the conv front end's padding.
            pad_mode="constant",
            return_complex=True,
        )
        return spec, spec.abs()

    def decode(self, masked: Tensor, length: int) -> Tensor:
        """masked complex (B, K, N, frames) -> (B, K, length)."""
        batch, n_out, n_bins, frames = masked.shape
        y = torch.istft(
            masked.reshape(batch * n_out, n_bins, frames),
            n_fft=self.n_fft,
            hop_length=self.hop,
            win_length=self.n_fft,
            window=self.window,
            center=True,
            length=length,
        )
        return y.reshape(batch, n_out, length)

