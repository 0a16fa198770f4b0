"""Separator models: front ends, backbones, mask heads, build_model."""
