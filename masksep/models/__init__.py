"""Separator models: front ends, backbones, mask heads, build_model, and the
registries that name them (masksep.config reads its choices from these)."""

from masksep.models.layers import HIDDEN_ACTIVATIONS, MASK_ACTIVATIONS
from masksep.models.separator import BACKBONES, ENCODERS, HEADS, Separator, build_model

__all__ = [
    "BACKBONES",
    "ENCODERS",
    "HEADS",
    "HIDDEN_ACTIVATIONS",
    "MASK_ACTIVATIONS",
    "Separator",
    "build_model",
]
