"""Dynamic mixing: mixtures made on the fly from a folder of single-speaker utterances.

``data.root`` holds one folder per split — ``train`` (or ``tr``), ``valid``
(or ``dev``, ``cv``), ``test`` (or ``tt``) — with wav or flac utterances at any
depth. The first folder level below the split names the speaker (as in
LibriSpeech's ``<speaker>/<chapter>/<utt>.flac`` or WSJ0's ``<speaker>/<utt>.wav``);
files lying directly in the split folder are each their own speaker.

Each mixture takes ``n_src`` utterances of distinct speakers (of distinct
utterances when there are fewer speakers), normalises each to unit RMS,
applies a gain uniform in [``mix_gain_db_min``, ``mix_gain_db_max``] dB, sums
them and scales all down together if a sample would pass 0.9.

- train: ``train_items`` mixtures per epoch, random ``segment_s`` crops; new
  pairs, crops and gains every epoch, deterministic per (seed, epoch, item)
  (the training loop calls :meth:`DynamicMixtures.set_epoch`).
- valid / test: ``valid_items`` / ``test_items`` fixed mixtures of whole
  utterances, cut to the shortest (LibriMix's "min" mode).

Several corpora at once (``data.roots``, each a folder as above with a weight):
each mixture comes from one corpus, chosen with probability weight / sum of the
weights, and takes its utterances from that corpus alone (a mixture of two
engines' voices would teach the engines apart, not the speakers). The choice is
the first draw of the mixture's "who speaks" stream, so the same seed gives the
same mixtures, and one root gives today's mixtures exactly (no draw is made).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from masksep.data import audio
from masksep.data.items import read_finite
from masksep.data.problems import check_files, iter_audio, settle
from masksep.data.synthetic import SPLITS, item_index, seed_sequence
from masksep.errors import UserError

SPLIT_FOLDERS = {"train": ("train", "tr"), "valid": ("valid", "dev", "cv"), "test": ("test", "tt")}
PEAK = 0.9


def split_folder(root: Path, split: str) -> Path:
    for name in SPLIT_FOLDERS[split]:
        if (root / name).is_dir():
            return root / name
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found")
    raise UserError(
        f"{root}: no {split} folder of utterances (looked for {', '.join(SPLIT_FOLDERS[split])})"
    )


def speaker_of(path: Path, folder: Path) -> str:
    rel = path.relative_to(folder)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


class DynamicMixtures(Dataset):
    """``(mix[T], sources[C, T])`` float32 tensors mixed from utterance files.

    ``root``: one folder, or several (``data.roots``) with ``weights`` (> 0, one
    per folder; default equal); ``fields`` name the folders in errors
    (``data.roots[1].root``)."""

    def __init__(
        self,
        root: str | Path | Sequence[str | Path],
        split: str,
        *,
        n_items: int,
        n_src: int,
        rate: int,
        segment: int | None,
        seed: int = 0,
        gain_db: tuple[float, float] = (-2.5, 2.5),
        allow_resample: bool = False,
        skip_bad: bool = False,
        check: str = "auto",
        weights: Sequence[float] | None = None,
        fields: Sequence[str] | None = None,
    ):
        roots = [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]
        weights = [1.0] * len(roots) if weights is None else [float(w) for w in weights]
        fields = fields or [""] * len(roots)
        if not roots or len(weights) != len(roots) or len(fields) != len(roots):
            raise ValueError("one weight and one field name per root")
        self.paths: list[Path] = []
        self.infos = {}
        self.by_speaker: list[np.ndarray] = []
        self.pools: list[tuple[np.ndarray, list[np.ndarray]]] = []  # (utterances, by speaker) a corpus
        self.skipped = 0
        for folder_root, name in zip(roots, fields, strict=True):
            here = f"{name}: " if name else ""
            if not folder_root.is_dir():
                raise UserError(f"{here}{folder_root}: data folder not found")
            try:
                folder = split_folder(folder_root, split)
            except UserError as exc:
                raise UserError(f"{here}{exc}") from None
            paths = list(iter_audio(folder))
            report = check_files(paths, rate=rate, level=check, allow_resample=allow_resample)
            bad = settle(report, str(folder), skip_bad, str(folder_root))
            paths = [p for i, p in enumerate(paths) if i not in bad]
            if len(paths) < n_src:
                raise UserError(f"{here}{folder}: {len(paths)} usable utterances, need at least {n_src}")
            offset = len(self.paths)
            speakers = [speaker_of(p, folder) for p in paths]
            names = sorted(set(speakers))
            index = {s: k for k, s in enumerate(names)}
            speaker = np.array([index[s] for s in speakers])
            by_speaker = [offset + np.flatnonzero(speaker == k) for k in range(len(names))]
            self.pools.append((offset + np.arange(len(paths)), by_speaker))
            self.by_speaker += by_speaker
            self.paths += paths
            self.infos.update({p: report.infos[p] for p in paths})
            self.skipped += len(bad)
        total = sum(weights)
        self.weights = np.array([w / total for w in weights]) if len(roots) > 1 else None
        self.lengths = np.array([audio.length_at(self.infos[p], rate) for p in self.paths])
        self.split = split
        self.n_items = int(n_items)
        self.n_src = int(n_src)
        self.rate = int(rate)
        self.segment = segment
        self.seed = int(seed)
        self.gain_db = gain_db
        self.allow_resample = allow_resample
        self.epoch = 0
        self.fixed_length = segment is not None

    def __len__(self) -> int:
        return self.n_items

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rngs(self, index: int) -> tuple[np.random.Generator, np.random.Generator]:
        """Two independent streams of one mixture: who speaks, and crops and gains."""
        epoch = self.epoch if self.segment is not None else 0
        seq = seed_sequence(self.seed, SPLITS.index(self.split), epoch, index)
        who, draw = seq.spawn(2)
        return np.random.default_rng(who), np.random.default_rng(draw)

    def pick(self, index: int) -> list[int]:
        """Indices of the utterances of mixture ``index``, all of one corpus: distinct
        speakers when possible."""
        rng = self._rngs(index)[0]
        pool = 0 if self.weights is None else int(rng.choice(len(self.pools), p=self.weights))
        utterances, by_speaker = self.pools[pool]
        if len(by_speaker) >= self.n_src:
            spk = rng.choice(len(by_speaker), size=self.n_src, replace=False)
            return [int(rng.choice(by_speaker[s])) for s in spk]
        return [int(i) for i in rng.choice(utterances, size=self.n_src, replace=False)]

    def item_name(self, index: int) -> str:
        return "_".join(self.paths[i].stem for i in self.pick(index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = item_index(index, self.n_items)
        chosen = self.pick(index)
        rng = self._rngs(index)[1]
        if self.segment is None:
            length = int(min(self.lengths[chosen]))
            starts = [0] * self.n_src
        else:
            length = self.segment
            starts = [int(rng.integers(0, max(0, self.lengths[i] - length) + 1)) for i in chosen]
        sources = []
        for i, start in zip(chosen, starts, strict=True):
            path = self.paths[i]
            x = read_finite(path, self.rate, start, length, self.infos[path], self.allow_resample)
            rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
            sources.append(x / rms if rms > 0 else x)
        gains = 10.0 ** (rng.uniform(self.gain_db[0], self.gain_db[1], self.n_src) / 20.0)
        src = np.stack(sources).astype(np.float64) * gains[:, None]
        mix = src.sum(axis=0)
        peak = max(float(np.abs(mix).max(initial=0.0)), float(np.abs(src).max(initial=0.0)))
        src *= min(1.0, PEAK / peak) if peak > 0 else 1.0
        src = src.astype(np.float32)
        return torch.from_numpy(src.sum(axis=0)), torch.from_numpy(src)
