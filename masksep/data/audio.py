"""Audio files: soundfile reading and writing, resampling, atomic wav writes.

Every failure to read a file is a :class:`~masksep.errors.UserError` naming the
file. Writes go to a temporary name in the target folder and are renamed into
place only when complete, so a crash never leaves a half-written wav behind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from masksep.errors import UserError

AUDIO_SUFFIXES = (".wav", ".flac")
# PCM subtypes hold integers: they cannot contain NaN or Inf, so no sample scan is needed.
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


@dataclass(frozen=True)
class AudioInfo:
    frames: int
    samplerate: int
    channels: int
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.samplerate if self.samplerate else 0.0

    @property
    def can_hold_nan(self) -> bool:
        return self.subtype in FLOAT_SUBTYPES


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:160]


def info(path: str | Path) -> AudioInfo:
    """The header of an audio file; a missing or unreadable file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        i = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise UserError(f"{path}: not a readable audio file ({_reason(exc)})") from None
    return AudioInfo(int(i.frames), int(i.samplerate), int(i.channels), str(i.subtype))


def read(path: str | Path, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Samples ``[start, stop)`` as float32 (channels, frames) and the file's rate."""
    try:
        data, rate = sf.read(
            str(path), start=start, stop=stop, dtype="float32", always_2d=True
        )
    except Exception as exc:
        if not Path(path).is_file():
            raise UserError(f"{path}: file not found") from None
        raise UserError(f"{path}: cannot be read ({_reason(exc)})") from None
    return np.ascontiguousarray(data.T), int(rate)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy's resample_poly), float32."""
    if from_rate == to_rate:
        return x
    g = math.gcd(int(from_rate), int(to_rate))
    return resample_poly(x, to_rate // g, from_rate // g, axis=-1).astype(np.float32)


def rate_error(path: str | Path, file_rate: int, rate: int) -> UserError:
    return UserError(
        f"{path}: sample rate is {file_rate} Hz but the model runs at {rate} Hz "
        "(set data.resample=true to resample)"
    )


def length_at(info: AudioInfo, rate: int) -> int:
    """Samples of a file once brought to ``rate`` (resample_poly's output length)."""
    if info.samplerate == rate:
        return info.frames
    g = math.gcd(info.samplerate, rate)
    return -(-info.frames * (rate // g) // (info.samplerate // g))


def read_mono(
    path: str | Path,
    rate: int,
    start: int = 0,
    length: int | None = None,
    *,
    allow_resample: bool = False,
    file_info: AudioInfo | None = None,
) -> np.ndarray:
    """``length`` samples (all when None) from ``start``, both counted at ``rate``,
    of a mono file, as float32 [length].

    A file at another rate is resampled when ``allow_resample`` (the segment is
    read at the file's rate with a margin for the filter, then cut to the exact
    length), otherwise refused naming both rates. Past the end the result is
    zero-padded to ``length``.
    """
    i = file_info or info(path)
    if i.channels != 1:
        raise UserError(f"{path}: has {i.channels} channels, expected 1 (mono)")
    if i.samplerate == rate:
        stop = None if length is None else min(start + length, i.frames)
        x = read(path, min(start, i.frames), stop)[0][0]
    else:
        if not allow_resample:
            raise rate_error(path, i.samplerate, rate)
        g = math.gcd(i.samplerate, rate)
        up, down = rate // g, i.samplerate // g
        # Start on a file sample that maps onto a whole output sample, so every
        # crop of a mixture and of its sources lines up exactly; the margin
        # covers resample_poly's filter (about 10 input samples per side).
        margin = 64
        f_start = max(0, start * down // up - margin) // down * down
        f_stop = None
        if length is not None:
            f_stop = min(i.frames, -(-(start + length) * down // up) + margin)
        x = read(path, min(f_start, i.frames), f_stop)[0][0]
        x = resample(x, i.samplerate, rate)[start - f_start // down * up :]
        if length is None:
            x = x[: length_at(i, rate) - start]
    if length is not None:
        x = x[:length]
        if x.shape[0] < length:
            x = np.pad(x, (0, length - x.shape[0]))
    return np.ascontiguousarray(x, dtype=np.float32)


def tmp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (same folder, so os.replace is atomic)."""
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def write_wav(path: str | Path, data: np.ndarray, rate: int, subtype: str = "PCM_16") -> None:
    """Write ``data`` (frames,) or (channels, frames) atomically (temp name, then rename)."""
    path = Path(path)
    tmp = tmp_name(path)
    arr = np.asarray(data)
    try:
        sf.write(str(tmp), arr.T if arr.ndim == 2 else arr, int(rate), subtype=subtype, format="WAV")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_wav_writer(
    path: str | Path, rate: int, channels: int, subtype: str = "FLOAT"
) -> Iterator[sf.SoundFile]:
    """A SoundFile open for streaming writes; renamed to ``path`` only if the block succeeds."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with sf.SoundFile(
            str(tmp), "w", samplerate=int(rate), channels=int(channels), subtype=subtype, format="WAV"
        ) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
