"""Data sets: the embedded synthetic mixtures and readers for real corpora.

Every data set yields ``(mix[T], sources[C, T])`` float32 tensors, so torch's
default collate makes ``(batch, T)`` and ``(batch, C, T)``. ``data.kind`` names
one reader in the ``DATASETS`` registry (masksep/data/datasets.py); the names a
config may give are in ``masksep.data.spec``, which is torch-free. The names
below load the torch parts on first use, so importing the spec (as
masksep.config does) does not import torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "DATASETS": "masksep.data.datasets",
    "build_dataset": "masksep.data.datasets",
    "SyntheticMixtures": "masksep.data.synthetic",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'masksep.data' has no attribute {name!r}")
