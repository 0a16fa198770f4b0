"""W&B tracking for sweeps: a run per trial, as Ray's ``WandbLoggerCallback`` keeps
them, through a ``ray.tune.Callback`` of masksep's own (masksep/sweep/callbacks.py).

As with Ray's callback, each trial's run lives on the driver's node and is fed by
Tune's events, so a trial that is stopped, fails or loses its node cannot leave
its run half-written, and only the driver's node needs the API key. Ray's callback
is not subclassed (its logging actors and queues are private); masksep's adds:

* an offline fallback that loses nothing: when online init fails (a refused key,
  an unreachable server) the run goes on offline under ``OUT/wandb/`` with a
  new run id (the abandoned online attempt still holds the old one), and every
  metric goes there; ``wandb sync`` uploads it later;
* bounded waiting: the server is probed once per sweep, before any trial
  starts; an unreachable one sends every run offline at once instead of each
  waiting out its own timeouts;
* a smaller footprint: each trial's run is a thread of the driver, not two Ray
  worker processes (Ray's logging actor and its queue's actor);
* the run's config is the flattened trial config and head summary, history is
  stepped by the trial's own epoch (Tune's iteration counter restarts with a
  restarted trial), the test metrics go to the summary, and W&B sweeps are
  attached with ``sweep_id``;
* settings from this invocation: Tune pickles its callbacks when a sweep starts,
  so the callback reads where its runs go (or that W&B is off) from
  ``OUT/sweep.json`` at set-up, which every ``masksep sweep`` (``--resume``
  included) writes first;
* a sweep-level run with a Table of every trial and a scatter of SI-SNRi
  against head MACs (:func:`log_sweep_run`).

No API key is ever passed as an argument or written into a file under OUT.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import Queue
from typing import Any
from urllib.parse import urlsplit

from masksep import rundir

log = logging.getLogger("masksep.wandb")

INIT_TIMEOUT_S = 20.0  # W&B's default is 90 s; no trial's run should wait that long
PROBE_TIMEOUT_S = 3.0
FINISH_TIMEOUT_S = 60.0  # at the sweep's end, for the last runs to finish (then moved on)
DEFAULT_BASE_URL = "https://api.wandb.ai"
# Result keys that are Ray's bookkeeping, not metrics.
RAY_KEYS = {
    "timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "training_iteration",
    "trial_id", "date", "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip",
    "config", "time_since_restore", "iterations_since_restore", "experiment_tag", "final",
}
STATIC_KEYS = rundir.COMPLEXITY_KEYS


@dataclass
class WandbTarget:
    """Where and how the runs of one sweep go (JSON in sweep.json)."""

    project: str
    group: str
    mode: str  # online | offline
    dir: str  # runs are written under DIR/wandb/
    entity: str = ""
    sweep_id: str = ""
    note: str = ""  # why the mode is what it is, when that is news to the user

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def has_api_key() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).hostname or ""
    try:
        auth = netrc.netrc().authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def probe_server(base_url: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """'' when the W&B server's port accepts a connection, else why not."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((host, port), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        return f"cannot reach {host}:{parts.port or ''} ({reason})".replace(":(", " (").replace(": (", " (")
    return ""


def resolve_target(spec_wandb, sweep_name: str, out_dir: Path) -> WandbTarget | None:
    """Project, mode and sweep id from the spec and the environment (None:
    WANDB_MODE=disabled); an online target whose server cannot be reached
    becomes offline here, once."""
    mode = os.environ.get("WANDB_MODE", "") or spec_wandb.mode
    if mode == "disabled":
        return None
    note = ""
    if mode in ("", "auto", "run"):
        mode = "online" if has_api_key() else "offline"
    if mode not in ("online", "offline"):
        mode = "offline"
    if mode == "online":
        base_url = os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
        problem = probe_server(base_url)
        if problem:
            mode = "offline"
            note = (f"the W&B server {base_url}: {problem}; every run is written offline under "
                    f"{Path(out_dir).resolve() / 'wandb'} (upload it later with wandb sync)")
    return WandbTarget(
        project=spec_wandb.project or os.environ.get("WANDB_PROJECT") or "masksep",
        entity=spec_wandb.entity or os.environ.get("WANDB_ENTITY", ""),
        group=sweep_name,
        mode=mode,
        dir=str(Path(out_dir).resolve()),
        sweep_id=spec_wandb.sweep_id or os.environ.get("WANDB_SWEEP_ID", ""),
        note=note,
    )


def init_run(target: dict[str, Any], *, run_id: str, name: str, job_type: str,
             config: dict[str, Any], resume: bool = True):
    """wandb.init for ``target``; when online init fails, offline with a new run
    id. Returns the run, or None when W&B cannot be used at all."""
    try:
        import wandb
    except ImportError:
        log.warning("masksep: wandb is not installed; W&B tracking is off")
        return None
    run_dir = Path(target["dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    attempts = [(target["mode"], run_id)]
    if target["mode"] == "online":
        # A new id: the abandoned online attempt may still hold the old one.
        attempts.append(("offline", f"{run_id}-offline-{uuid.uuid4().hex[:4]}"))
    for mode, attempt_id in attempts:
        settings = wandb.Settings(init_timeout=INIT_TIMEOUT_S, silent=True, console="off",
                                  x_disable_stats=True, sweep_id=target.get("sweep_id") or None)
        try:
            return wandb.init(
                project=target["project"], entity=target.get("entity") or None,
                group=target["group"], job_type=job_type, name=name, id=attempt_id,
                dir=str(run_dir), mode=mode, config=config,
                resume="allow" if resume else None, reinit="create_new", settings=settings)
        except Exception as exc:  # noqa: BLE001 - W&B must never fail a trial
            log.warning("masksep: W&B %s init failed (%s: %s)", mode, type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "")
    return None


def write_run(feed: Queue, kwargs: dict[str, Any]) -> None:
    """One trial's W&B run, written from ``feed`` until None: init (offline fallback,
    a new id), then each item of :func:`result_item` and the final status, then finish.
    Runs in a thread of the driver (masksep.sweep.callbacks.WandbRuns)."""
    kwargs = dict(kwargs)
    run = init_run(kwargs.pop("target"), **kwargs)
    if run is not None:
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
    while True:
        item = feed.get()
        if item is None:
            break
        if run is None:
            continue
        try:
            if item.get("config"):
                run.config.update(item["config"], allow_val_change=True)
            if item.get("log"):
                run.log(item["log"])
            if item.get("summary"):
                run.summary.update(item["summary"])
        except Exception as exc:  # noqa: BLE001 - a lost point, never a lost sweep
            log.warning("masksep: W&B log failed (%s)", type(exc).__name__)
    if run is not None:
        run.finish()


def result_item(result: dict[str, Any]) -> dict[str, Any]:
    """What a Tune result gives a trial's run: the model's complexity to its config,
    an epoch's metrics to its history (stepped by the trial's own epoch), the final
    result's test metrics to its summary."""
    numbers = {k: v for k, v in result.items()
               if k not in RAY_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}
    item: dict[str, Any] = {"config": {k: numbers.pop(k) for k in STATIC_KEYS if k in numbers}}
    if result.get("final"):
        item["summary"] = {k: v for k, v in numbers.items() if k.startswith("test_")}
    else:
        item["log"] = numbers
    return item


def log_sweep_run(target, trials_csv: Path, sweep_info: dict[str, Any], sweep_uid: str) -> str | None:
    """A sweep-level run: a W&B Table of every trial and SI-SNRi against head MACs.
    Returns the run's local folder, or None if W&B could not be used."""
    import pandas as pd

    run = init_run(target.to_dict(), run_id=f"{sweep_uid}-summary", name=f"{target.group}-summary",
                   job_type="sweep", config=sweep_info, resume=False)
    if run is None:
        return None
    try:
        import wandb

        table = wandb.Table(dataframe=pd.read_csv(trials_csv))
        run.log({
            "trials": table,
            "si_snri_vs_head_macs": wandb.plot.scatter(
                table, "head_macs_per_s", "best_val_si_snri",
                title="Best validation SI-SNRi vs head MACs per second"),
        })
        local = run.dir
    except Exception as exc:  # noqa: BLE001
        log.warning("masksep: W&B sweep summary failed (%s)", type(exc).__name__)
        local = None
    run.finish()
    return local


def offline_runs(out_dir: Path) -> list[Path]:
    return sorted((Path(out_dir) / "wandb").glob("offline-run-*"))
