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
"""

from __future__ import annotations

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
    """``(mix[T], sources[C, T])`` float32 tensors mixed from utterance files."""

    def __init__(
        self,
        root: str | Path,
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
    ):
        folder = split_folder(Path(root), split)
        paths = list(iter_audio(folder))
        where = str(folder)
        report = check_files(paths, rate=rate, level=check, allow_resample=allow_resample)
        bad = settle(report, where, skip_bad, str(root))
        paths = [p for i, p in enumerate(paths) if i not in bad]
        if len(paths) < n_src:
            raise UserError(f"{folder}: {len(paths)} usable utterances, need at least {n_src}")
        self.paths = paths
        self.infos = {p: report.infos[p] for p in paths}
        self.lengths = np.array([audio.length_at(self.infos[p], rate) for p in paths])
        speakers = [speaker_of(p, folder) for p in paths]
        names = sorted(set(speakers))
        self.speaker = np.array([names.index(s) for s in speakers])
        self.by_speaker = [np.flatnonzero(self.speaker == k) for k in range(len(names))]
        self.skipped = len(bad)
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
        """Indices of the utterances of mixture ``index``: distinct speakers when possible."""
        rng = self._rngs(index)[0]
        if len(self.by_speaker) >= self.n_src:
            spk = rng.choice(len(self.by_speaker), size=self.n_src, replace=False)
            return [int(rng.choice(self.by_speaker[s])) for s in spk]
        return [int(i) for i in rng.choice(len(self.paths), size=self.n_src, replace=False)]

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
