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
from masksep.files import fsync_folder, write_error

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
        i = sf.info(os.fsencode(path))  # bytes: a name that is not UTF-8 opens too
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise UserError(f"{path}: not a readable audio file ({_reason(exc)})") from None
    return AudioInfo(int(i.frames), int(i.samplerate), int(i.channels), str(i.subtype))


def read(path: str | Path, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, int]:
    """Samples ``[start, stop)`` as float32 (channels, frames) and the file's rate."""
    try:
        data, rate = sf.read(
            os.fsencode(path), start=start, stop=stop, dtype="float32", always_2d=True
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


# A WAV file's sizes are 32-bit: its RIFF chunk holds at most 4 GiB minus the
# header. Longer outputs are written as RF64 (EBU Tech 3306: WAV with 64-bit
# sizes, read by libsndfile, ffmpeg, sox and the DAWs). The room left for the
# header chunks (fmt, fact, PEAK) is generous: 64 KiB.
WAV_MAX_DATA_BYTES = 2**32 - 1 - (64 << 10)
_SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
                 "DOUBLE": 8}


def wav_format(frames: int, channels: int, subtype: str) -> str:
    """The format to write: RF64 when ``frames`` x ``channels`` samples of ``subtype``
    pass what WAV holds, else WAV."""
    data = int(frames) * int(channels) * _SAMPLE_BYTES[subtype]
    return "RF64" if data > WAV_MAX_DATA_BYTES else "WAV"


def write_failure(path: str | Path, exc: Exception) -> UserError:
    """The one line for a wav write that failed: libsndfile reports a failed
    system call as "System error"; the call's errno says which (cffi keeps it)."""
    if isinstance(exc, OSError):
        return write_error(path, exc)
    reason = _reason(exc) or "a system error"
    if isinstance(exc, sf.LibsndfileError):
        err = getattr(getattr(sf, "_ffi", None), "errno", 0) if exc.code == 2 else 0
        reason = os.strerror(err) if err else exc.error_string
    return UserError(f"{path}: cannot be written ({reason})")


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_wav(path: str | Path, data: np.ndarray, rate: int, subtype: str = "PCM_16") -> None:
    """Write ``data`` (frames,) or (channels, frames) atomically (temp name, then
    rename); RF64 when WAV cannot hold it. A failed write is one UserError line."""
    path = Path(path)
    tmp = tmp_name(path)
    arr = np.asarray(data)
    frames, channels = (arr.shape[-1], arr.shape[0]) if arr.ndim == 2 else (arr.shape[0], 1)
    try:
        sf.write(os.fsencode(tmp), arr.T if arr.ndim == 2 else arr, int(rate), subtype=subtype,
                 format=wav_format(frames, channels, subtype))
        _sync(tmp)
        os.replace(tmp, path)
    except (OSError, sf.LibsndfileError) as exc:
        raise write_failure(path, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_folder(path.parent)


@contextmanager
def atomic_wav_writer(
    path: str | Path, rate: int, channels: int, subtype: str = "FLOAT", frames: int = 0
) -> Iterator[sf.SoundFile]:
    """A SoundFile open for streaming writes; renamed to ``path`` only if the block
    succeeds. ``frames``: how many the block will write, for the format (RF64 past
    what WAV holds). The block's own write errors are its caller's to name
    (:func:`write_failure`); opening, syncing and renaming fail as one line here."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        try:
            f = sf.SoundFile(os.fsencode(tmp), "w", samplerate=int(rate), channels=int(channels),
                             subtype=subtype, format=wav_format(frames, channels, subtype))
        except (OSError, sf.LibsndfileError) as exc:
            raise write_failure(path, exc) from None
        with f:
            yield f
        try:
            _sync(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            raise write_failure(path, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_folder(path.parent)
