"""The one place where masksep reaches into Ray's private names, and the check that they are there.

Ray's public API has no way to read OptunaSearch's study or a Repeater's groups,
to give a local Ray a temp dir, or to find a cluster's dashboard from its address;
masksep needs each (the optuna.db export, the multi-objective repeater, short socket
paths, masksep submit). They are read through the
functions below, and :func:`check` (run by the test suite) names whatever a Ray
release renamed or dropped, instead of a sweep failing half-way. (W&B needs none:
masksep's runs hang off ``ray.tune.Callback``'s public hooks, sweep/callbacks.py.)
"""

from __future__ import annotations

import inspect
from typing import Any

from masksep.errors import UserError

# The Ray releases these names were read from (pyproject pins the same range).
SUPPORTED = ((2, 52), (2, 61))  # from 2.52 up to, not including, 2.61
# The private attributes read below, by the class that holds them.
PRIVATE_ATTRIBUTES = {"OptunaSearch": ("_ot_study",), "Repeater": ("_trial_id_to_group",)}


def optuna_study(searcher) -> Any:
    """The optuna.Study inside a ray.tune.search.optuna.OptunaSearch."""
    return searcher._ot_study


def repeater_group(repeater, trial_id: str) -> Any:
    """The group (one configuration's repeats) of a trial in a ray.tune.search.Repeater."""
    return repeater._trial_id_to_group[trial_id]


def dashboard_of(cluster_address: str) -> str:
    """The dashboard URL of the running cluster at ``cluster_address`` (GCS
    ``HOST:PORT`` or ``ray://``), found as `ray job submit` finds it."""
    from ray.dashboard.utils import get_address_for_submission_client

    return get_address_for_submission_client(cluster_address)


def init_local(temp_dir: str, **kwargs) -> None:
    """ray.init of a private local Ray whose files (and socket paths) are under ``temp_dir``."""
    import ray

    ray.init(_temp_dir=temp_dir, **kwargs)


def check() -> None:
    """Every private name above exists in the installed Ray, of a supported version;
    else one UserError naming what is missing."""
    import ray
    from ray import tune
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    version = tuple(int(p) for p in ray.__version__.split(".")[:2])
    lo, hi = SUPPORTED
    if not lo <= version < hi:
        raise UserError(f"ray {ray.__version__}: masksep supports ray >= {lo[0]}.{lo[1]}, "
                        f"< {hi[0]}.{hi[1]} (masksep/sweep/ray_compat.py)")
    search = OptunaSearch(space={"x": tune.uniform(0, 1)}, metric="m", mode="max")
    objects = {"OptunaSearch": search, "Repeater": Repeater(search, repeat=2)}
    missing = [f"{cls}.{name}" for cls, names in PRIVATE_ATTRIBUTES.items()
               for name in names if not hasattr(objects[cls], name)]
    init = inspect.unwrap(ray.init)  # it takes _temp_dir from its **kwargs
    if '"_temp_dir"' not in inspect.getsource(init) and "_temp_dir" not in inspect.signature(init).parameters:
        missing.append("ray.init(_temp_dir=...)")
    try:
        from ray.dashboard.utils import get_address_for_submission_client  # noqa: F401
    except ImportError:
        missing.append("ray.dashboard.utils.get_address_for_submission_client")
    if missing:
        raise UserError(f"ray {ray.__version__}: private names masksep uses are gone: "
                        f"{', '.join(missing)} (masksep/sweep/ray_compat.py)")
