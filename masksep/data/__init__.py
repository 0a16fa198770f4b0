"""Data sets: the embedded synthetic mixtures and readers for real corpora.

Every data set yields ``(mix[T], sources[C, T])`` float32 tensors, so torch's
default collate makes ``(batch, T)`` and ``(batch, C, T)``.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from masksep.config import Config
from masksep.data.synthetic import SPLITS, SyntheticMixtures
from masksep.errors import UserError

__all__ = ["SyntheticMixtures", "build_dataset"]


# Data made on the fly, deterministic per (seed, split, epoch, item): worth a cache.
CACHEABLE = ("synthetic", "dynamic")


def build_dataset(cfg: Config, split: str, cache: str | Path | None = None) -> Dataset:
    """The ``split`` ('train', 'valid' or 'test') of the data set ``cfg.data`` names.

    ``cache``: a folder shared by the runs that train on the same data (a
    study's variants at one seed): data made on the fly is made there once per
    (data config, seed, split, epoch) and read by the others, the same items
    bit for bit (:mod:`masksep.data.cache`). Corpora on disk are read as they are.

    Synthetic: training items are ``data.segment_s`` long, validation and test
    items ``data.eval_seconds``; ``cfg.seed`` seeds all three, and the splits
    share no speaker.

    Corpora on disk (librimix, wsj0mix, wham, dynamic) are checked when opened:
    problems raise :class:`~masksep.data.problems.DataCheckError` with the list,
    or with ``data.skip_bad`` the bad items are left out (said on stderr).
    Training items are ``segment_s`` crops (``fixed_length``), validation and
    test items whole utterances. Training sets of files have ``set_epoch``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    dataset = _made_dataset(cfg, split)
    if cache is None or cfg.data.kind not in CACHEABLE:
        return dataset
    from masksep.config import to_dict
    from masksep.data.cache import CachedMixtures, cache_key

    key = cache_key(to_dict(cfg)["data"], n_src=cfg.n_src, sample_rate=cfg.sample_rate,
                    seed=cfg.seed)
    return CachedMixtures(dataset, cache, key, split, last_epoch=cfg.train.epochs)


def _made_dataset(cfg: Config, split: str) -> Dataset:
    d = cfg.data
    if d.kind == "synthetic":
        n_items, seconds = {
            "train": (d.train_items, d.segment_s),
            "valid": (d.valid_items, d.eval_seconds),
            "test": (d.test_items, d.eval_seconds),
        }[split]
        return SyntheticMixtures(split, n_items, cfg.n_src, cfg.sample_rate, seconds, cfg.seed)
    return _files_dataset(cfg, split)


def _files_dataset(cfg: Config, split: str) -> Dataset:
    """A corpus on disk: checked when opened (see :mod:`masksep.data.problems`)."""
    from masksep.config import expand_root
    from masksep.data import dynamic, librimix, wsj0mix
    from masksep.data.items import FileMixtures

    d = cfg.data
    root = expand_root(d.root)
    segment = max(1, round(d.segment_s * cfg.sample_rate)) if split == "train" else None
    common = dict(
        rate=cfg.sample_rate, n_src=cfg.n_src, segment=segment, seed=cfg.seed,
        allow_resample=d.resample, skip_bad=d.skip_bad, check=d.check,
    )
    if d.kind == "dynamic":
        n_items = {"train": d.train_items, "valid": d.valid_items, "test": d.test_items}[split]
        several = {}
        if d.roots is not None:  # several corpora (config validation: roots or root, not both)
            several = dict(weights=[r.weight for r in d.roots],
                           fields=[f"data.roots[{i}].root" for i in range(len(d.roots))])
            root = [expand_root(r.root, f"data.roots[{i}].root") for i, r in enumerate(d.roots)]
        return dynamic.DynamicMixtures(
            root, split, n_items=n_items, gain_db=(d.mix_gain_db_min, d.mix_gain_db_max), **several,
            **common
        )
    if d.kind == "librimix":
        folder = librimix.resolve_root(root, cfg.sample_rate, d.mode)
        name = librimix.split_name(split, d.librimix_train)
        items, problems = librimix.load_items(folder, name, d.task, cfg.n_src)
        where = str(librimix.csv_path(folder, name, d.task))
    elif d.kind in ("wsj0mix", "wham"):
        folder = wsj0mix.resolve_root(root, cfg.n_src, cfg.sample_rate, d.mode)
        split_dir = folder / wsj0mix.split_name(split)
        mix_sub = wsj0mix.mix_folder(d.kind, d.task)
        items, problems = wsj0mix.list_items(
            split_dir, mix_sub, cfg.n_src, noisy=mix_sub == "mix_both"
        )
        where = str(split_dir / mix_sub)
    else:
        raise UserError(f"data.kind: unknown kind {d.kind!r}")
    return FileMixtures(items, where=where, extra=problems, folder=str(folder), **common)
