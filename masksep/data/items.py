"""A data set of mixtures stored as files (LibriMix, WSJ0-mix, WHAM!).

Opening one checks it first (:mod:`masksep.data.problems`): a data set with
problems is refused with the list, or, with ``skip_bad``, opened without the
bad items (and says how many on stderr). Training items are random crops of
``segment`` samples, deterministic per (seed, epoch, item) — the training
loop calls :meth:`FileMixtures.set_epoch`; validation and test items are
whole utterances.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from masksep.data import audio
from masksep.data.problems import MixtureItem, Problem, check_items, settle
from masksep.data.synthetic import item_index, seed_sequence
from masksep.errors import UserError

if TYPE_CHECKING:
    from masksep.config import Config


def read_finite(path, rate: int, start: int, length: int | None, info: audio.AudioInfo,
                allow_resample: bool) -> np.ndarray:
    """audio.read_mono, refusing NaN/Inf samples (a float file can hold them;
    `masksep data check` finds them up front, this catches a file changed since)."""
    x = audio.read_mono(path, rate, start, length, allow_resample=allow_resample, file_info=info)
    if info.can_hold_nan and not np.isfinite(x).all():
        raise UserError(f"{path}: has NaN/Inf samples (run `masksep data check`)")
    return x


def reading_options(cfg: Config, split: str) -> dict[str, Any]:
    """How a reader of files reads ``split`` of ``cfg``'s data, as keyword arguments of
    FileMixtures (and DynamicMixtures): the rate and sources, training crops of
    ``data.segment_s`` (validation and test: whole utterances), resampling and the checks."""
    d = cfg.data
    segment = max(1, round(d.segment_s * cfg.sample_rate)) if split == "train" else None
    return dict(rate=cfg.sample_rate, n_src=cfg.n_src, segment=segment, seed=cfg.seed,
                allow_resample=d.resample, skip_bad=d.skip_bad, check=d.check)


class FileMixtures(Dataset):
    """``(mix[T], sources[C, T])`` float32 tensors read from disk.

    ``segment`` (samples) set: random crops of that length (utterances shorter
    than it are zero-padded at the end), ``fixed_length = True``. ``segment``
    None: whole utterances, ``fixed_length = False``.
    """

    def __init__(
        self,
        items: list[MixtureItem],
        *,
        rate: int,
        n_src: int,
        where: str,
        segment: int | None = None,
        seed: int = 0,
        allow_resample: bool = False,
        skip_bad: bool = False,
        check: str = "auto",
        extra: list[Problem] | None = None,
        folder: str | None = None,
    ):
        """``extra``: problems found while listing the items (e.g. a bad CSV line);
        ``folder``: the data folder, named in the error's hint."""
        report = check_items(
            items, rate=rate, n_src=n_src, level=check, allow_resample=allow_resample
        )
        report.problems[:0] = extra or []
        if not items and not report.problems:
            raise UserError(f"{where}: no mixtures found")
        bad = settle(report, where, skip_bad, folder)
        self.skipped = len(bad)
        self.items = [item for i, item in enumerate(items) if i not in bad]
        self.lengths = [audio.length_at(report.infos[item.mix], rate) for item in self.items]
        self.infos = {p: report.infos[p] for item in self.items for p in item.files}
        self.rate = int(rate)
        self.n_src = int(n_src)
        self.where = where
        self.segment = segment
        self.seed = int(seed)
        self.allow_resample = allow_resample
        self.skip_bad = skip_bad
        self.epoch = 0
        self.fixed_length = segment is not None

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's crops (deterministic per (seed, epoch, item))."""
        self.epoch = int(epoch)

    def item_name(self, index: int) -> str:
        return self.items[index].name

    def _read(self, path, start: int, length: int) -> np.ndarray:
        return read_finite(path, self.rate, start, length, self.infos[path], self.allow_resample)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        item = self.items[index]
        n = self.lengths[index]
        if self.segment is None:
            start, length = 0, n
        else:
            rng = np.random.default_rng(seed_sequence(self.seed, self.epoch, index))
            start = int(rng.integers(0, max(0, n - self.segment) + 1))
            length = self.segment
        mix = self._read(item.mix, start, length)
        sources = np.stack([self._read(p, start, length) for p in item.sources])
        return mix, sources

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = item_index(index, len(self))
        try:
            mix, sources = self._load(index)
        except UserError:
            # Only reachable with header-level checks (or a file changed since):
            # with skip_bad take the next readable item, otherwise one clear error.
            if not self.skip_bad:
                raise
            for step in range(1, min(len(self), 100)):
                try:
                    mix, sources = self._load((index + step) % len(self))
                    break
                except UserError:
                    continue
            else:
                raise
        return torch.from_numpy(mix), torch.from_numpy(sources)
