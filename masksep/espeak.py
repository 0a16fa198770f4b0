"""espeak-ng, the speech synthesizer, through its C library (the optional ``speech`` extra).

The ``espeakng-loader`` wheel ships espeak-ng 1.52's ``libespeak-ng.so`` and its
``espeak-ng-data``, with path helpers as its only Python API; this module calls
the library with ctypes. espeak-ng is GPL-3.0-or-later: only ``masksep data
speech`` loads this module (in worker processes), nothing else in masksep
imports it.

Facts that shape it (measured on espeak-ng 1.52):

- synchronous output (``AUDIO_OUTPUT_SYNCHRONOUS``) is at 22,050 Hz, 16-bit;
- the library has global state: one synthesizer per process, never two threads;
- the same call twice gives a different waveform, in one process and across
  processes: its noise generator (breathy and rough voices) is seeded from the
  clock, and ``srand`` does not reach it; ``espeak_ng_SetRandSeed`` does. So
  each utterance is said after ``espeak_ng_SetRandSeed(seed)`` with a seed of
  its own, in a fresh process for each talker (:func:`speak_all`), and the
  corpus is the same whatever the number of worker processes, and whenever it is made.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

RATE = 22050  # espeak-ng's synchronous output rate
_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER


class MissingExtra(ImportError):
    """The ``speech`` extra (espeakng-loader) is not installed."""


def data_dir() -> Path:
    """espeak-ng-data of the installed wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise MissingExtra("espeakng-loader") from None
    return Path(espeakng_loader.get_data_path())


def languages() -> set[str]:
    """Every language voice (the names espeak_SetVoiceByName takes)."""
    return {p.name for p in (data_dir() / "lang").rglob("*") if p.is_file()}


def variants() -> dict[str, str]:
    """Every voice variant and its gender ("female", "male" or "")."""
    out = {}
    for p in (data_dir() / "voices" / "!v").iterdir():
        if p.is_file():
            gender = ""
            for line in p.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "gender":
                    gender = parts[1]
            out[p.name] = gender
    return out


class Synthesizer:
    """The one espeak-ng of this process."""

    def __init__(self):
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_OUTPUT_SYNCHRONOUS, 0, str(data_dir().parent).encode(), 0)
        if rate != RATE:
            raise RuntimeError(f"espeak_Initialize returned {rate}, expected {RATE} Hz")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                         ctypes.c_void_p)

        def collect(wav, n, _events):
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0  # go on

        self._callback = callback_type(collect)  # kept: the library holds only the pointer
        lib.espeak_SetSynthCallback(self._callback)
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib = lib

    def say(self, voice: str, text: str, *, rate: int, pitch: int, pitch_range: int,
            seed: int | None = None) -> np.ndarray:
        """``text`` in ``voice`` ("en+f3"): float32 at :data:`RATE`, in [-1, 1)."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
            self.lib.espeak_SetParameter(parameter, int(value), 0)
        self._chunks.clear()
        if seed is not None:
            self.lib.espeak_ng_SetRandSeed(ctypes.c_long(seed % 2**31))
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


def speak_all(job: tuple[int, str, int, int, int, list[str]]) -> list[np.ndarray]:
    """One talker's sentences, in order, in this (fresh) process: (seed, voice,
    rate, pitch, range, sentences) -> waveforms at :data:`RATE`."""
    seed, voice, rate, pitch, pitch_range, sentences = job
    synth = Synthesizer()
    return [synth.say(voice, s, rate=rate, pitch=pitch, pitch_range=pitch_range, seed=seed + k)
            for k, s in enumerate(sentences)]
