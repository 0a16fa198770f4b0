"""The names ``data.kind`` accepts, torch-free so that ``masksep.config`` checks a
config without importing torch. The registry that builds them
(``masksep.data.datasets.DATASETS``) is checked against ``DATA_KINDS`` when it is
made, so a name exists in both places or in neither (as masksep.models.spec)."""

from __future__ import annotations

DATA_KINDS = ("synthetic", "librimix", "wsj0mix", "wham", "dynamic")
# Made on the fly from data.train_items/valid_items/test_items, deterministic per
# (seed, split, epoch, item): the items per epoch are known from the config, and a
# study's variants at one seed can share them through a cache (masksep/data/cache.py).
MADE_ON_THE_FLY = ("synthetic", "dynamic")
