"""Separator models: front ends, backbones, mask heads, build_model, and the
registries that name them. ``masksep.models.spec`` holds their configs and is
torch-free; the names below load the torch parts on first use, so importing
the spec (as masksep.config does) does not import torch."""

from __future__ import annotations

import importlib

_WHERE = {
    "BACKBONES": "masksep.models.separator",
    "ENCODERS": "masksep.models.separator",
    "HEADS": "masksep.models.separator",
    "HEAD_LAYOUTS": "masksep.models.heads",
    "Separator": "masksep.models.separator",
    "build_model": "masksep.models.separator",
    "HIDDEN_ACTIVATIONS": "masksep.models.layers",
    "MASK_ACTIVATIONS": "masksep.models.layers",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'masksep.models' has no attribute {name!r}")
