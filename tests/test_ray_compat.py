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
    monkeypatch.setitem(ray_compat.PRIVATE_ATTRIBUTES, "Repeater",
                        (*ray_compat.PRIVATE_ATTRIBUTES["Repeater"], "_renamed_in_a_later_ray"))
    with pytest.raises(UserError, match="Repeater._renamed_in_a_later_ray"):
        ray_compat.check()
    monkeypatch.setattr(ray, "__version__", "2.99.0")
    with pytest.raises(UserError, match=r"ray 2.99.0: masksep supports ray >= 2.52, < 2.61"):
        ray_compat.check()


def test_the_pin_in_pyproject_is_the_checked_range():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    lo, hi = ray_compat.SUPPORTED
    assert f'"ray[default,tune]>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}"' in text


def test_wandb_needs_no_private_ray_name():
    """masksep's W&B runs hang off ray.tune.Callback's public hooks: no subclass of
    Ray's WandbLoggerCallback, nothing of ray.air.integrations.wandb."""
    from pathlib import Path

    from ray.tune import Callback

    from masksep.sweep.callbacks import Progress, WandbRuns

    assert issubclass(WandbRuns, Callback) and issubclass(Progress, Callback)
    package = Path(ray_compat.__file__).parent
    for path in package.glob("*.py"):
        assert "ray.air.integrations.wandb" not in path.read_text(), path
