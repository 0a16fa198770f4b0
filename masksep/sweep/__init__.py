"""Sweeps: spec, Ray Tune runner, W&B tracking, cluster helpers."""
