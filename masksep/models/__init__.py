"""Separator models: front ends, backbones, mask heads, build_model."""

from masksep.models.separator import Separator, build_model

__all__ = ["Separator", "build_model"]
