"""The one place where masksep reaches into Ray's private names, and the check that they are there.

Ray's public API has no way to read OptunaSearch's study, a Repeater's groups,
the items of WandbLoggerCallback's queues, or to give a local Ray a temp dir;
masksep needs each (the optuna.db export, the multi-objective repeater, W&B
runs as threads of the driver, short socket paths). They are read through the
functions below, and :func:`check` (run by the test suite) names whatever a Ray
release renamed or dropped, instead of a sweep failing half-way.
``SweepWandb`` in :mod:`masksep.sweep.tracking` subclasses WandbLoggerCallback and
keeps its bookkeeping attributes (:data:`WANDB_CALLBACK_PRIVATE`); they are checked here too.
"""

from __future__ import annotations

import inspect
from typing import Any

from masksep.errors import UserError

# The Ray releases these names were read from (pyproject pins the same range).
SUPPORTED = ((2, 52), (2, 61))  # from 2.52 up to, not including, 2.61
WANDB_CALLBACK_PRIVATE = (
    "_trial_queues", "_trial_logging_actors", "_trial_logging_futures", "_logging_future_to_trial",
    "_start_logging_actor", "_cleanup_logging_actor", "_signal_logging_actor_stop",
    "_cleanup_logging_actors",
)


def optuna_study(searcher) -> Any:
    """The optuna.Study inside a ray.tune.search.optuna.OptunaSearch."""
    return searcher._ot_study


def repeater_group(repeater, trial_id: str) -> Any:
    """The group (one configuration's repeats) of a trial in a ray.tune.search.Repeater."""
    return repeater._trial_id_to_group[trial_id]


def wandb_queue_item():
    """The item kinds (RESULT, END) of WandbLoggerCallback's per-trial queues."""
    from ray.air.integrations.wandb import _QueueItem

    return _QueueItem


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
    from ray.air.integrations.wandb import WandbLoggerCallback
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    version = tuple(int(p) for p in ray.__version__.split(".")[:2])
    lo, hi = SUPPORTED
    if not lo <= version < hi:
        raise UserError(f"ray {ray.__version__}: masksep supports ray >= {lo[0]}.{lo[1]}, "
                        f"< {hi[0]}.{hi[1]} (masksep/sweep/ray_compat.py)")
    missing = []
    from ray import tune

    search = OptunaSearch(space={"x": tune.uniform(0, 1)}, metric="m", mode="max")
    if not hasattr(search, "_ot_study"):
        missing.append("OptunaSearch._ot_study")
    if not hasattr(Repeater(search, repeat=2), "_trial_id_to_group"):
        missing.append("Repeater._trial_id_to_group")
    try:
        item = wandb_queue_item()
        if not (hasattr(item, "RESULT") and hasattr(item, "END")):
            missing.append("ray.air.integrations.wandb._QueueItem.RESULT/END")
    except ImportError:
        missing.append("ray.air.integrations.wandb._QueueItem")
    callback = WandbLoggerCallback(project="masksep-compat-check")
    missing += [f"WandbLoggerCallback.{n}" for n in WANDB_CALLBACK_PRIVATE if not hasattr(callback, n)]
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
