"""``masksep data synth``: the synthetic data set written to disk in a corpus layout.

So the readers and the data check run on real files (tests, demos, a first
end-to-end run without a corpus). Layouts:

- ``librimix``: ``OUT/metadata/mixture_{split}_mix_clean.csv`` (mixture_ID,
  mixture_path, source_1_path, ..., length; absolute paths, as LibriMix
  writes them) and ``OUT/{split}/mix_clean/ s1/ s2/ ...``; with ``noise`` also
  ``mix_both/``, ``noise/`` and ``mixture_{split}_mix_both.csv`` (+ noise_path).
  OUT plays the part of ``Libri2Mix/wav8k/min``.
- ``wsj0mix``: ``OUT/{tr,cv,tt}/mix/ s1/ s2/ ...``.
- ``wham``: ``OUT/{tr,cv,tt}/mix_clean/ mix_both/ s1/ s2/ noise/``.
- ``utterances``: single-speaker utterances for dynamic mixing,
  ``OUT/{train,valid,test}/spk<k>/<k>-<n>.wav``.

Mixtures come from :mod:`masksep.data.synthetic` (speakers of the train,
valid and test splits are disjoint). Files are 16-bit PCM like the corpora,
each written atomically; the CSVs are written last, so an interrupted run
leaves no list of missing files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from masksep.data import audio, librimix, wsj0mix
from masksep.data.synthetic import (
    SPLITS,
    item_rng,
    make_mixture,
    make_source,
    seed_sequence,
    split_speakers,
)
from masksep.errors import UserError
from masksep.files import atomic_write

LAYOUTS = ("librimix", "wsj0mix", "wham", "utterances")
NOISE_SNR_DB = (-6.0, 3.0)  # speech-to-noise ratio of noisy mixtures (WHAM!'s range)
UTTERANCE_DB = -25.0  # level of written utterances (RMS, dBFS)


def layout_split(layout: str, split: str) -> tuple[str, str]:
    """(folder name in the layout, synthetic speaker split) for a split name."""
    if layout == "librimix":
        name = librimix.split_name(split)
        valid = librimix.SPLITS
    elif layout in ("wsj0mix", "wham"):
        name = wsj0mix.split_name(split)
        valid = wsj0mix.SPLITS
    else:
        name = {"tr": "train", "cv": "valid", "dev": "valid", "tt": "test"}.get(split, split)
        valid = SPLITS
    if name not in valid:
        raise UserError(
            f"--split: {split!r} is not a {layout} split (one of {', '.join(valid)}, "
            "or train, valid, test)"
        )
    synth = {"dev": "valid", "cv": "valid", "tt": "test", "tr": "train"}.get(name, name)
    if synth.startswith("train"):
        synth = "train"
    return name, synth


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Coloured Gaussian noise (spectral slope 1/f^a, a in [0, 1.5]), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size) + 1.0
    spec /= f ** (rng.uniform(0.0, 1.5) / 2)
    x = np.fft.irfft(spec, n)
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-12)


def _lengths(seed: int, split: str, num: int, rate: int, seconds: float, max_seconds: float | None):
    if not max_seconds or max_seconds <= seconds:
        return [max(1, round(seconds * rate))] * num
    rng = np.random.default_rng(seed_sequence(seed, SPLITS.index(split), 0x6C656E))
    return [max(1, round(s * rate)) for s in rng.uniform(seconds, max_seconds, num)]


def _refuse_existing(*paths: Path) -> None:
    for p in paths:
        if p.exists() and (p.is_file() or any(p.iterdir())):
            raise UserError(f"{p}: already exists; remove it or pick another --out")


def _csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def synth(
    out: str | Path,
    layout: str = "librimix",
    split: str = "test",
    num: int = 10,
    *,
    n_src: int = 2,
    sample_rate: int = 8000,
    seconds: float = 3.0,
    max_seconds: float | None = None,
    seed: int = 0,
    noise: bool = False,
) -> dict:
    """Write ``num`` synthetic mixtures (or utterances); returns what was written."""
    _check_args(layout, num, n_src, sample_rate, seconds, noise)
    out = Path(out).resolve()
    name, synth_split = layout_split(layout, split)
    lengths = _lengths(seed, synth_split, num, sample_rate, seconds, max_seconds)
    speakers = split_speakers(synth_split)
    if layout == "utterances":
        return _utterances(out / name, synth_split, lengths, sample_rate, seed, speakers)

    split_dir = out / name
    csvs = {}
    if layout == "librimix":
        csvs["mix_clean"] = librimix.csv_path(out, name, "sep_clean")
        if noise:
            csvs["mix_both"] = librimix.csv_path(out, name, "sep_noisy")
    noisy = noise or layout == "wham"
    mix_subs = ["mix"] if layout == "wsj0mix" else ["mix_clean"] + (["mix_both"] if noisy else [])
    subs = mix_subs + [f"s{i + 1}" for i in range(n_src)] + (["noise"] if noisy else [])
    _refuse_existing(split_dir, *csvs.values())
    for sub in subs:
        (split_dir / sub).mkdir(parents=True, exist_ok=True)

    rows: dict[str, list[list]] = {k: [] for k in csvs}
    for i, n in enumerate(lengths):
        rng = item_rng(seed, synth_split, i)
        _, sources = make_mixture(rng, speakers, n_src, n, sample_rate)
        sources = sources.astype(np.float64)
        clean = sources.sum(axis=0)
        files = {f"s{c + 1}": sources[c] for c in range(n_src)}
        if noisy:
            files, clean = _with_noise(files, clean, seed_sequence(seed, SPLITS.index(synth_split), i, 1))
        files["mix" if layout == "wsj0mix" else "mix_clean"] = clean
        mix_id = f"synth{synth_split[:2]}{i:05d}"
        paths = {sub: split_dir / sub / f"{mix_id}.wav" for sub in files}
        for sub, x in files.items():
            audio.write_wav(paths[sub], x, sample_rate)
        for key in rows:
            src_cols = [str(paths[f"s{c + 1}"]) for c in range(n_src)]
            noise_col = [str(paths["noise"])] if key == "mix_both" else []
            rows[key].append([mix_id, str(paths[key]), *src_cols, *noise_col, n])
    for key, path in csvs.items():
        header = ["mixture_ID", "mixture_path", *[f"source_{c + 1}_path" for c in range(n_src)]]
        header += (["noise_path"] if key == "mix_both" else []) + ["length"]
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, _csv_text([header, *rows[key]]))
    return {
        "out": str(out), "layout": layout, "split": name, "mixtures": num,
        "folders": [str(split_dir / s) for s in subs], "metadata": [str(p) for p in csvs.values()],
        "sample_rate": sample_rate, "n_src": n_src,
    }


def _check_args(layout: str, num: int, n_src: int, sample_rate: int, seconds: float,
                noise: bool) -> None:
    if layout not in LAYOUTS:
        raise UserError(f"--layout: must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if num < 1:
        raise UserError(f"--num: must be >= 1, got {num}")
    if seconds <= 0:
        raise UserError(f"--seconds: must be > 0, got {seconds}")
    if sample_rate < 1000:
        raise UserError(f"--sample-rate: must be >= 1000 Hz, got {sample_rate}")
    if n_src < 1:
        raise UserError(f"--n-src: must be >= 1, got {n_src}")
    if layout == "wsj0mix" and noise:
        raise UserError("--noise: WSJ0-mix has no noisy mixtures (use --layout wham or librimix)")


def _with_noise(files: dict[str, np.ndarray], clean: np.ndarray, seeds
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The item's files with noise at a random SNR (and the noisy mixture), all scaled
    so that nothing clips; and the clean mixture, scaled the same."""
    nrng = np.random.default_rng(seeds)
    speech_rms = float(np.sqrt(np.mean(clean**2)))
    snr = nrng.uniform(*NOISE_SNR_DB)
    nz = _noise(nrng, clean.shape[-1]) * speech_rms * 10 ** (-snr / 20)
    scale = min(1.0, 0.9 / max(float(np.abs(clean + nz).max()), float(np.abs(nz).max()), 1e-12))
    files = {k: v * scale for k, v in files.items()}
    clean, nz = clean * scale, nz * scale
    return {**files, "noise": nz, "mix_both": clean + nz}, clean


def _utterances(folder: Path, split: str, lengths, rate: int, seed: int, speakers) -> dict:
    _refuse_existing(folder)
    level = 10 ** (UTTERANCE_DB / 20)
    n_speakers = min(len(speakers), max(2, len(lengths) // 2))
    for i, n in enumerate(lengths):
        spk = speakers[i % n_speakers]
        rng = item_rng(seed, split, i)
        x = make_source(rng, n, rate, spk) * level
        x *= min(1.0, 0.9 / max(float(np.abs(x).max()), 1e-12))
        path = folder / f"spk{spk.index:03d}" / f"{spk.index:03d}-{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        audio.write_wav(path, x, rate)
    return {
        "out": str(folder.parent), "layout": "utterances", "split": folder.name,
        "utterances": len(lengths), "speakers": n_speakers, "sample_rate": rate,
    }
