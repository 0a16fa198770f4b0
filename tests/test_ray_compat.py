"""Ray's private names that masksep reads (masksep/sweep/ray_compat.py) exist in the
installed Ray; a Ray that renamed one, or is outside the pinned range, fails loudly here."""

from __future__ import annotations

import pytest
import ray

from masksep.errors import UserError
from masksep.sweep import ray_compat


def test_the_installed_ray_has_every_private_name_masksep_reads():
    ray_compat.check()
    lo, hi = ray_compat.SUPPORTED
    assert lo <= tuple(int(p) for p in ray.__version__.split(".")[:2]) < hi


def test_a_renamed_name_or_another_ray_is_one_line_naming_it(monkeypatch):
    monkeypatch.setattr(ray_compat, "WANDB_CALLBACK_PRIVATE",
                        (*ray_compat.WANDB_CALLBACK_PRIVATE, "_renamed_in_a_later_ray"))
    with pytest.raises(UserError, match="WandbLoggerCallback._renamed_in_a_later_ray"):
        ray_compat.check()
    monkeypatch.setattr(ray, "__version__", "2.99.0")
    with pytest.raises(UserError, match=r"ray 2.99.0: masksep supports ray >= 2.52, < 2.61"):
        ray_compat.check()


def test_the_pin_in_pyproject_is_the_checked_range():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    lo, hi = ray_compat.SUPPORTED
    assert f'"ray[default,tune]>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}"' in text
