"""build_dataset and the registry of readers it picks from by ``data.kind``.

``DATASETS`` maps each name of ``masksep.data.spec.DATA_KINDS`` to a builder
``(cfg, split) -> Dataset``, as the models' registries map ``head.kind`` and the
others to their builders (masksep/models/separator.py). Adding a data set is a
file, a line here and its name in the spec (docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from masksep.config import Config, expand_root, to_dict
from masksep.data import dynamic, librimix, spec, wsj0mix
from masksep.data.items import FileMixtures, reading_options
from masksep.data.synthetic import SPLITS, SyntheticMixtures
from masksep.models.registry import Registry


def _items_per_split(cfg: Config, split: str) -> int:
    d = cfg.data
    return {"train": d.train_items, "valid": d.valid_items, "test": d.test_items}[split]


def _synthetic(cfg: Config, split: str) -> Dataset:
    """Training items are ``data.segment_s`` long, validation and test items
    ``data.eval_seconds``; ``cfg.seed`` seeds all three, and the splits share no speaker."""
    seconds = cfg.data.segment_s if split == "train" else cfg.data.eval_seconds
    return SyntheticMixtures(split, _items_per_split(cfg, split), cfg.n_src, cfg.sample_rate,
                             seconds, cfg.seed)


def _dynamic(cfg: Config, split: str) -> Dataset:
    d = cfg.data
    if d.roots is not None:  # several corpora (config validation: roots or root, not both)
        root = [expand_root(r.root, f"data.roots[{i}].root") for i, r in enumerate(d.roots)]
        several = dict(weights=[r.weight for r in d.roots],
                       fields=[f"data.roots[{i}].root" for i in range(len(d.roots))])
    else:
        root, several = expand_root(d.root), {}
    return dynamic.DynamicMixtures(
        root, split, n_items=_items_per_split(cfg, split),
        gain_db=(d.mix_gain_db_min, d.mix_gain_db_max), **several, **reading_options(cfg, split))


def _librimix(cfg: Config, split: str) -> Dataset:
    d = cfg.data
    folder = librimix.resolve_root(expand_root(d.root), cfg.sample_rate, d.mode)
    name = librimix.split_name(split, d.librimix_train)
    items, problems = librimix.load_items(folder, name, d.task, cfg.n_src)
    return FileMixtures(items, where=str(librimix.csv_path(folder, name, d.task)), extra=problems,
                        folder=str(folder), **reading_options(cfg, split))


def _wsj0mix(cfg: Config, split: str) -> Dataset:
    """WSJ0-mix, and WHAM! (the same layout, with noisy mixtures)."""
    d = cfg.data
    folder = wsj0mix.resolve_root(expand_root(d.root), cfg.n_src, cfg.sample_rate, d.mode)
    split_dir = folder / wsj0mix.split_name(split)
    mix_sub = wsj0mix.mix_folder(d.kind, d.task)
    items, problems = wsj0mix.list_items(split_dir, mix_sub, cfg.n_src, noisy=mix_sub == "mix_both")
    return FileMixtures(items, where=str(split_dir / mix_sub), extra=problems, folder=str(folder),
                        **reading_options(cfg, split))


# data.kind -> builder(cfg, split): a Dataset of (mix[T], sources[C, T]).
DATASETS: Registry[Callable[[Config, str], Dataset]] = Registry(
    "data.kind",
    {
        "synthetic": _synthetic,
        "librimix": _librimix,
        "wsj0mix": _wsj0mix,
        "wham": _wsj0mix,
        "dynamic": _dynamic,
    },
    names=spec.DATA_KINDS,
    spec="masksep/data/spec.py",
)


def build_dataset(cfg: Config, split: str, cache: str | Path | None = None) -> Dataset:
    """The ``split`` ('train', 'valid' or 'test') of the data set ``cfg.data`` names.

    ``cache``: a folder shared by the runs that train on the same data (a
    study's variants at one seed): data made on the fly is made there once per
    (data config, seed, split, epoch) and read by the others, the same items
    bit for bit (:mod:`masksep.data.cache`). Corpora on disk are read as they are.

    Corpora on disk (librimix, wsj0mix, wham, dynamic) are checked when opened:
    problems raise :class:`~masksep.data.problems.DataCheckError` with the list,
    or with ``data.skip_bad`` the bad items are left out (said on stderr).
    Training items are ``segment_s`` crops (``fixed_length``), validation and
    test items whole utterances. Training sets of files have ``set_epoch``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    dataset = DATASETS.get(cfg.data.kind)(cfg, split)
    if cache is None or cfg.data.kind not in spec.MADE_ON_THE_FLY:
        return dataset
    from masksep.data.cache import CachedMixtures, cache_key

    key = cache_key(to_dict(cfg)["data"], n_src=cfg.n_src, sample_rate=cfg.sample_rate,
                    seed=cfg.seed)
    return CachedMixtures(dataset, cache, key, split, last_epoch=cfg.train.epochs)
