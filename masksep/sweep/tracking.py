"""W&B tracking for sweeps: one run per trial, one sweep-level run at the end.

All of it runs in the sweep's driver, fed by Ray Tune's events.

W&B is an observer. Every call into it is guarded: a failure (no network, a
refused key, a server error) turns W&B off for that run with one warning, and
never fails or stalls a trial. Without an API key the runs are written offline
under the sweep's folder, and ``wandb sync`` uploads them later.
"""

from __future__ import annotations

import logging
import netrc
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masksep import config as config_mod

log = logging.getLogger("masksep.wandb")

INIT_TIMEOUT_S = 30.0  # W&B's default is 90 s; a trial should not wait that long
FINISH_TIMEOUT_S = 60.0


@dataclass
class WandbTarget:
    """Where and how the runs of one sweep go (picklable: it travels to trials)."""

    project: str
    group: str
    mode: str  # online | offline
    dir: str  # runs are written under DIR/wandb/
    entity: str = ""
    sweep_id: str = ""


def has_api_key() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators("api.wandb.ai")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_target(spec_wandb, sweep_name: str, out_dir: Path) -> WandbTarget:
    """Decide project, mode and sweep id from the spec and the environment."""
    mode = os.environ.get("WANDB_MODE", "") or spec_wandb.mode
    if mode in ("", "auto", "run"):
        mode = "online" if has_api_key() else "offline"
    if mode not in ("online", "offline"):
        mode = "offline"
    return WandbTarget(
        project=spec_wandb.project or os.environ.get("WANDB_PROJECT") or "masksep",
        entity=spec_wandb.entity or os.environ.get("WANDB_ENTITY", ""),
        group=sweep_name,
        mode=mode,
        dir=str(Path(out_dir).resolve()),
        sweep_id=spec_wandb.sweep_id or os.environ.get("WANDB_SWEEP_ID", ""),
    )


def _run_with_timeout(fn, timeout: float) -> bool:
    """Run fn in a daemon thread; False if it did not finish in time (it is abandoned)."""
    done = threading.Event()
    errors: list[BaseException] = []

    def target():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported below, never raised
            errors.append(exc)
        finally:
            done.set()

    threading.Thread(target=target, daemon=True, name="masksep-wandb").start()
    if not done.wait(timeout):
        return False
    if errors:
        raise errors[0]
    return True


def start_run(target: WandbTarget, *, name: str, run_id: str, job_type: str,
              config: dict[str, Any], resume: bool = False):
    """wandb.init for ``target``; falls back to offline when online init fails.
    Returns the run, or None when W&B cannot be used at all."""
    try:
        import wandb
    except ImportError:
        log.warning("masksep: wandb is not installed; W&B tracking is off")
        return None
    run_dir = Path(target.dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        run_dir = Path.cwd()  # the sweep folder is not on this node; keep the run beside the trial
    modes = [target.mode] + (["offline"] if target.mode == "online" else [])
    for mode in modes:
        settings = wandb.Settings(
            init_timeout=INIT_TIMEOUT_S, silent=True, console="off", x_disable_stats=True,
            sweep_id=target.sweep_id or None,
        )
        try:
            return wandb.init(
                project=target.project, entity=target.entity or None, group=target.group,
                job_type=job_type, name=name, id=run_id, dir=str(run_dir), mode=mode,
                config=config, resume="allow" if resume else None, reinit="create_new",
                settings=settings,
            )
        except Exception as exc:  # noqa: BLE001 - W&B must never fail a trial
            log.warning("masksep: W&B %s init failed (%s: %s)", mode, type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "")
    return None


def finish_run(run, exit_code: int = 0) -> None:
    if run is None:
        return
    try:
        if not _run_with_timeout(lambda: run.finish(exit_code=exit_code), FINISH_TIMEOUT_S):
            log.warning("masksep: W&B finish did not return in %.0f s; moving on", FINISH_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001
        log.warning("masksep: W&B finish failed (%s)", type(exc).__name__)


class _Worker:
    """One background thread that makes every W&B call in order, so a slow or
    hanging W&B never blocks Ray Tune's event loop (and so never the sweep)."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="masksep-wandb")
        self.thread.start()

    def _loop(self):
        while True:
            job = self.queue.get()
            if job is None:
                return
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - W&B must never fail the sweep
                log.warning("masksep: W&B call failed (%s: %s)", type(exc).__name__,
                            str(exc).splitlines()[0][:200] if str(exc) else "")

    def submit(self, job) -> None:
        self.queue.put(job)

    def drain(self, timeout: float) -> bool:
        """Finish the queued calls; False if they did not end within ``timeout``."""
        self.queue.put(None)
        self.thread.join(timeout)
        return not self.thread.is_alive()


# Result keys that are Ray's bookkeeping, not metrics.
_RAY_KEYS = {
    "timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "training_iteration",
    "trial_id", "date", "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip",
    "config", "time_since_restore", "iterations_since_restore", "experiment_tag", "final",
}
STATIC_KEYS = ("params", "head_params", "macs_per_s", "head_macs_per_s")


class WandbCallback:
    """A W&B run per trial, driven from the sweep's driver by Ray Tune events.

    Logging from the driver (not from inside trials) keeps W&B out of the
    training processes: a trial that ASHA stops, that fails, or whose node
    dies cannot take its W&B run down half-written, and the API key is only
    needed where the driver runs. Built on :class:`ray.tune.Callback` by
    :func:`make_wandb_callback`.
    """

    def __init__(self, target: WandbTarget, spec, sweep_uid: str):
        self.target = target
        self.spec = spec
        self.sweep_uid = sweep_uid
        self._worker: _Worker | None = None
        self._runs: dict[str, Any] = {}

    def __getstate__(self):  # Ray pickles callbacks into its experiment state
        state = self.__dict__.copy()
        state["_worker"], state["_runs"] = None, {}
        return state

    @property
    def worker(self) -> _Worker:
        if self._worker is None:
            self._worker = _Worker()
        return self._worker

    def trial_start(self, trial) -> None:
        from masksep.sweep.spec import searched_params

        trial_id = trial.trial_id
        searched = searched_params(trial.config)
        try:
            cfg = self.spec.trial_config(trial.config)
            config = {**config_mod.flatten(cfg), **config_mod.head_summary(cfg)}
        except Exception:  # noqa: BLE001 - the trial itself will report a bad config
            config = {}
        config.update({"trial_id": trial_id, "sweep": self.spec.name,
                       **{f"searched/{k}": v for k, v in searched.items()}})

        def start():
            if trial_id in self._runs:  # a retried trial keeps its run
                return
            self._runs[trial_id] = start_run(
                self.target, name=f"{self.spec.name}-{trial_id}", run_id=f"{self.sweep_uid}-{trial_id}",
                job_type="trial", config=config, resume=True)
            run = self._runs[trial_id]
            if run is not None:
                run.define_metric("*", step_metric="epoch")

        self.worker.submit(start)

    def trial_result(self, trial, result: dict[str, Any]) -> None:
        trial_id = trial.trial_id
        metrics = {k: v for k, v in result.items()
                   if k not in _RAY_KEYS and k not in STATIC_KEYS and isinstance(v, (int, float))}
        static = {k: result[k] for k in STATIC_KEYS if k in result}
        final = bool(result.get("final"))

        def log_result():
            run = self._runs.get(trial_id)
            if run is None:
                return
            if static:
                run.config.update(static, allow_val_change=True)
            if final:
                run.summary.update({k: v for k, v in metrics.items() if k.startswith("test_")})
            else:
                run.log(metrics)

        self.worker.submit(log_result)

    def trial_end(self, trial, status: str) -> None:
        trial_id = trial.trial_id

        def finish():
            run = self._runs.pop(trial_id, None)
            if run is None:
                return
            run.summary["status"] = status
            finish_run(run, exit_code=1 if status == "failed" else 0)

        self.worker.submit(finish)

    def close(self, timeout: float = FINISH_TIMEOUT_S) -> None:
        """Wait for queued W&B calls, at most ``timeout`` seconds, then move on."""
        if self._worker is None:
            return

        def finish_all():
            for trial_id in list(self._runs):
                finish_run(self._runs.pop(trial_id))

        self._worker.submit(finish_all)
        if not self._worker.drain(timeout):
            log.warning("masksep: W&B did not finish within %.0f s; some trial runs may be incomplete",
                        timeout)
        self._worker = None


def make_wandb_callback(target: WandbTarget, spec, sweep_uid: str):
    """The :class:`WandbCallback` as a ``ray.tune.Callback``."""
    from ray.tune import Callback

    class _TuneWandb(WandbCallback, Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            self.trial_start(trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.trial_result(trial, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.trial_end(trial, "completed" if trial.last_result.get("final") else "stopped")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.trial_end(trial, "failed")

        def on_experiment_end(self, trials, **info):
            self.close()

    return _TuneWandb(target, spec, sweep_uid)


def log_sweep_run(target: WandbTarget, rows: list[dict[str, Any]], columns: list[str],
                  sweep_info: dict[str, Any], sweep_uid: str) -> str | None:
    """A sweep-level run: a W&B Table of every trial and SI-SNRi against head MACs.
    Returns the run's local folder, or None if W&B could not be used."""
    run = start_run(target, name=f"{target.group}-summary", run_id=f"{sweep_uid}-summary",
                    job_type="sweep", config=sweep_info)
    if run is None:
        return None
    try:
        import wandb

        table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
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
    finish_run(run)
    return local


def offline_runs(out_dir: Path) -> list[Path]:
    return sorted((Path(out_dir) / "wandb").glob("offline-run-*"))
