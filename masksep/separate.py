"""``masksep separate``: run a trained separator on audio files.

Each input ``X.wav`` gives ``X_s1.wav`` ... ``X_sC.wav`` in the output folder,
at the input's sample rate and with the input's channel count.

Long inputs, bounded memory. The input is read and the outputs are written
in chunks (``chunk_s``, default 8 s) that overlap by ``overlap_s`` (default
1 s), so memory depends on the chunk length only, never on the input length
(the outputs stream to disk). Each chunk is separated on its own; on the
overlap the two neighbouring chunks are cross-faded with complementary
squared-sine windows (they sum to one), which hides the chunk edges where the
model saw no context on one side. Normalisation over the whole input
(Conv-TasNet's global layer norm) is then taken per chunk, so the result is
close to, not identical with, separating the whole input at once (about 30 dB
SI-SNR apart for the test model).

Source order. A separator trained with PIT may emit the speakers in another
order in each chunk. Before the cross-fade, the outputs of each chunk are
permuted to match the previous chunk: the permutation that maximizes the sum
of the normalized correlations between the previous chunk's outputs and this
chunk's outputs on the overlap, where both hold the same audio (scipy's
linear_sum_assignment). The order of the first chunk is kept.

Channels. A multi-channel input is separated channel by channel (the channels
go through the model as one batch); each channel's outputs are put in the
order of channel 0's by the same correlation rule over the whole chunk, so
``X_s1.wav`` holds the same talker on every channel.

Sample rates. An input at another rate than the model's is resampled to the
model's rate per chunk and the outputs back to the input's rate
(scipy.signal.resample_poly); the filter's edge effects fall where the
cross-fade weight is near zero.

Output format: 32-bit float wav (RF64, WAV with 64-bit sizes, for an output
past the 4 GiB a WAV file can hold). A separator trained with SI-SNR fixes the
scale of its outputs only loosely (the loss is scale-invariant), so 16-bit
PCM could clip them; float keeps exactly what the model produced.

og heads with oracle grouping are refused: their P outputs are grouped into
sources with the reference signals (MixIT-style), and separation has none.
Any blind grouping would be a different system from the one trained and
evaluated; train with ``head.grouping=learned`` for a separator that groups
by itself.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.optimize import linear_sum_assignment

from masksep.config import Config
from masksep.data import audio
from masksep.errors import UserError
from masksep.models.separator import Separator

DEFAULT_CHUNK_S = 8.0
DEFAULT_OVERLAP_S = 1.0
OUTPUT_SUBTYPE = "FLOAT"


def load_separator(checkpoint: str | Path) -> tuple[Config, Separator]:
    """The model of a checkpoint, ready for inference; refuses oracle grouping."""
    from masksep import train

    ckpt = train.load_checkpoint(checkpoint)
    try:
        cfg, model = train.model_from_checkpoint(ckpt, str(checkpoint))
    except UserError:
        raise
    except Exception as exc:  # a config the current code cannot build
        raise UserError(f"{checkpoint}: cannot rebuild its model ({exc.__class__.__name__}: {exc})") from None
    if model.oracle_grouping:
        raise UserError(
            f"{checkpoint}: an og head with oracle grouping returns P={model.n_out} outputs "
            "that only the reference sources can group, and separation has no references; "
            "use a separator with head.grouping=learned, or a shallow or deep head"
        )
    model.eval()
    return cfg, model


def _correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalized correlation of every row of a (K, T) with every row of b (K, T)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    # einsum rather than a BLAS product: OpenBLAS threads fight torch's for the cores
    return np.einsum("it,jt->ij", a / np.maximum(na, 1e-12), b / np.maximum(nb, 1e-12))


def best_permutation(reference: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """perm such that ``outputs[perm]`` best matches ``reference``, both (K, ..., T):
    the assignment maximizing the summed normalized correlation (summed over
    any middle axes, e.g. channels)."""
    k = reference.shape[0]
    ref = reference.reshape(k, -1, reference.shape[-1])
    out = outputs.reshape(k, -1, outputs.shape[-1])
    score = sum(_correlations(ref[:, c], out[:, c]) for c in range(ref.shape[1]))
    _, cols = linear_sum_assignment(-score)
    return cols


def fades(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out) over ``n`` samples; squared sine and cosine: they sum to 1."""
    t = (np.arange(n) + 0.5) / max(n, 1)
    fade_in = np.sin(0.5 * np.pi * t) ** 2
    return fade_in.astype(np.float32), (1.0 - fade_in).astype(np.float32)


def check_chunking(chunk_s: float, overlap_s: float) -> None:
    """--chunk-s and --overlap-s, before any work: finite (inf has no sample count)."""
    if not (math.isfinite(chunk_s) and chunk_s >= 0.1):
        raise UserError(f"--chunk-s: must be a finite number of seconds >= 0.1, got {chunk_s}")
    if not (math.isfinite(overlap_s) and 0 < overlap_s <= chunk_s / 2):
        # no overlap, nothing to align the source order of two chunks on
        raise UserError(
            f"--overlap-s: must be > 0 and at most half of --chunk-s ({chunk_s / 2:g}), got {overlap_s}"
        )


class ChunkedSeparator:
    """Separates a stream chunk by chunk; see the module docstring for the method."""

    def __init__(
        self,
        model: Separator,
        model_rate: int,
        device: torch.device | str = "cpu",
        chunk_s: float = DEFAULT_CHUNK_S,
        overlap_s: float = DEFAULT_OVERLAP_S,
    ):
        check_chunking(chunk_s, overlap_s)
        self.model = model
        self.model_rate = int(model_rate)
        self.device = torch.device(device)
        self.chunk_s = float(chunk_s)
        self.overlap_s = float(overlap_s)

    def plan(self, frames: int, rate: int) -> tuple[list[int], int, int]:
        """Chunk starts, chunk length and overlap (samples at ``rate``) for ``frames``.

        Consecutive chunks overlap by exactly ``overlap`` samples; the last one
        may be shorter but always extends past the overlap.
        """
        length = max(2, round(self.chunk_s * rate))
        overlap = max(1, min(round(self.overlap_s * rate), length // 2))
        hop = length - overlap
        starts = [0]
        while starts[-1] + length < frames:
            starts.append(starts[-1] + hop)
        return starts, length, overlap

    def _run_model(self, x: np.ndarray, rate: int) -> np.ndarray:
        """x (channels, T) at ``rate`` -> (C, channels, T) at ``rate``."""
        n = x.shape[-1]
        xm = audio.resample(x, rate, self.model_rate)
        with torch.inference_mode():
            y = self.model(torch.from_numpy(np.ascontiguousarray(xm)).to(self.device))
        y = y.float().cpu().numpy()  # (channels, C, Tm)
        y = audio.resample(y, self.model_rate, rate)
        if y.shape[-1] < n:
            y = np.pad(y, [(0, 0), (0, 0), (0, n - y.shape[-1])])
        y = y[..., :n]
        # channel c -> the source order of channel 0
        for c in range(1, y.shape[0]):
            y[c] = y[c][best_permutation(y[0], y[c])]
        return np.ascontiguousarray(y.transpose(1, 0, 2))

    def run(self, reader: sf.SoundFile, writers: list[sf.SoundFile], where: str = "",
            outputs: list[Path] | None = None) -> int:
        """Read all of ``reader``, write source k to ``writers[k]`` (the file
        ``outputs[k]``, named when a write fails); returns the chunk count."""
        self._outputs = outputs or [Path(w.name if isinstance(w.name, str) else os.fsdecode(w.name))
                                    for w in writers]
        rate, frames = reader.samplerate, reader.frames
        starts, length, overlap = self.plan(frames, rate)
        fade_in, fade_out = fades(overlap)
        tail: np.ndarray | None = None  # the previous chunk's outputs on the coming overlap
        for k, start in enumerate(starts):
            reader.seek(start)
            x = reader.read(min(length, frames - start), dtype="float32", always_2d=True).T
            bad = ~np.isfinite(x)
            if bad.any():
                t = (start + int(np.argmax(bad.any(axis=0)))) / rate
                raise UserError(f"{where}: NaN/Inf samples (the first near {t:.2f} s)")
            y = self._run_model(x, rate)  # (C, channels, n)
            n = y.shape[-1]
            last = k == len(starts) - 1
            head = 0
            if tail is not None:
                y = y[best_permutation(tail, y[..., :overlap])]
                blended = tail * fade_out + y[..., :overlap] * fade_in
                self._write(writers, blended)
                head = overlap
            end = n if last else n - overlap
            self._write(writers, y[..., head:end])
            tail = None if last else y[..., end:].copy()
        return len(starts)

    def _write(self, writers: list[sf.SoundFile], y: np.ndarray) -> None:
        for w, source, path in zip(writers, y, self._outputs, strict=True):
            try:
                w.write(np.ascontiguousarray(source.T))
            except (OSError, sf.LibsndfileError) as exc:  # a full disk: one line, no half file
                raise audio.write_failure(path, exc) from None


def output_paths(inp: Path, out_dir: Path, n_src: int) -> list[Path]:
    return [out_dir / f"{inp.stem}_s{k + 1}.wav" for k in range(n_src)]


def check_inputs(inputs: list[Path], out_dir: Path, n_src: int,
                 force: bool = False) -> list[audio.AudioInfo]:
    """Every input readable and non-empty, no two writing the same output, and no
    output already there unless ``force``; before any work."""
    infos = []
    seen: dict[Path, Path] = {}
    for inp in inputs:
        i = audio.info(inp)
        if i.frames == 0:
            raise UserError(f"{inp}: empty audio file (0 samples)")
        for out in output_paths(inp, out_dir, n_src):
            if out in seen:
                raise UserError(f"{inp}: would write {out.name} as {seen[out]} does (same file name)")
            if not force and (out.exists() or out.is_symlink()):
                raise UserError(f"{out}: already exists; pass --force to overwrite it")
            seen[out] = inp
        infos.append(i)
    return infos


def separate_files(
    checkpoint: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    *,
    chunk_s: float = DEFAULT_CHUNK_S,
    overlap_s: float | None = None,
    device: str = "auto",
    threads: int = 0,
    force: bool = False,
) -> list[dict]:
    """Separate each input into ``out_dir``; one result dict per input.

    ``overlap_s`` None: :data:`DEFAULT_OVERLAP_S`, at most a quarter of a chunk.
    Outputs that exist already are refused before any work, unless ``force``
    (Asteroid's ``force_overwrite``).
    """
    from masksep import train

    if overlap_s is None:
        overlap_s = min(DEFAULT_OVERLAP_S, chunk_s / 4)

    if not inputs:
        raise UserError("separate: no input files given")
    check_chunking(chunk_s, overlap_s)
    cfg, model = load_separator(checkpoint)
    dev = train.pick_device(device)
    n_threads = train.setup_threads(threads)
    model.to(dev)
    out_dir = Path(out_dir)
    inputs = [Path(p) for p in inputs]
    infos = check_inputs(inputs, out_dir, cfg.n_src, force)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out_dir}: cannot create the output folder ({exc.strerror})") from None
    sep = ChunkedSeparator(model, cfg.sample_rate, dev, chunk_s, overlap_s)
    results = []
    for inp, info in zip(inputs, infos, strict=True):
        outs = output_paths(inp, out_dir, cfg.n_src)
        t0 = time.perf_counter()
        with ExitStack() as stack:
            try:
                reader = stack.enter_context(sf.SoundFile(os.fsencode(inp)))
            except Exception as exc:
                raise UserError(f"{inp}: cannot be read ({exc})") from None
            writers = [
                stack.enter_context(
                    audio.atomic_wav_writer(p, info.samplerate, info.channels, OUTPUT_SUBTYPE,
                                            frames=info.frames)
                )
                for p in outs
            ]
            try:
                chunks = sep.run(reader, writers, str(inp), outs)
            except sf.LibsndfileError as exc:
                raise UserError(f"{inp}: cannot be read ({exc})") from None
        wall = time.perf_counter() - t0
        results.append({
            "input": str(inp),
            "outputs": [str(p) for p in outs],
            "seconds": round(info.seconds, 3),
            "sample_rate": info.samplerate,
            "model_rate": cfg.sample_rate,
            "channels": info.channels,
            "chunks": chunks,
            "wall_s": round(wall, 3),
            "rtf": round(wall / max(info.seconds, 1e-9), 4),
            "device": str(dev),
            "threads": n_threads,
        })
    return results
