"""Data sets: the embedded synthetic mixtures and readers for real corpora.

Every data set yields ``(mix[T], sources[C, T])`` float32 tensors, so torch's
default collate makes ``(batch, T)`` and ``(batch, C, T)``.
"""

from __future__ import annotations

from torch.utils.data import Dataset

from masksep.config import Config
from masksep.data.synthetic import SPLITS, SyntheticMixtures
from masksep.errors import UserError

__all__ = ["SyntheticMixtures", "build_dataset"]


def build_dataset(cfg: Config, split: str) -> Dataset:
    """The ``split`` ('train', 'valid' or 'test') of the data set ``cfg.data`` names.

    Synthetic: training items are ``data.segment_s`` long, validation and test
    items ``data.eval_seconds``; ``cfg.seed`` seeds all three, and the splits
    share no speaker.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    d = cfg.data
    if d.kind == "synthetic":
        n_items, seconds = {
            "train": (d.train_items, d.segment_s),
            "valid": (d.valid_items, d.eval_seconds),
            "test": (d.test_items, d.eval_seconds),
        }[split]
        return SyntheticMixtures(split, n_items, cfg.n_src, cfg.sample_rate, seconds, cfg.seed)
    raise UserError(f"data.kind: {d.kind} reader is not available yet")
