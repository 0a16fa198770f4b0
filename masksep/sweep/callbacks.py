"""masksep's subclasses of Ray's classes, all of them, on Ray's public hooks.

Imported when a sweep builds its Tuner (after Ray has started: it imports Ray),
and by a DDP trial's driver. Tune pickles its callbacks and its searcher with the
experiment's state, so each is a module-level class whose state is plain data;
threads, queues and the Optuna export are made again after a restore. None is
defined inside a function. (What Ray has no public form for is read through
masksep/sweep/ray_compat.py.)

* :class:`Progress`: a line per trial event on the driver's terminal (Ray's own
  tables are off).
* :class:`WandbRuns`: a W&B run per trial, written by a thread of the driver and
  fed by Tune's events (see :mod:`masksep.sweep.tracking` for what masksep's runs
  add to Ray's own W&B callback, which this replaces).
* :class:`ExportingOptunaSearch`: Ray's OptunaSearch, whose study is also exported
  to ``OUT/optuna.db`` (:class:`StudyExport`) for optuna-dashboard.
* :class:`MultiRepeater`: Ray's Repeater for several objectives.
* :class:`ForwardToTune`: Ray Train's TuneReportCallback for a DDP trial
  (masksep/sweep/ddp.py), with every rank's own training loss.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from queue import Queue
from typing import Any

from ray.tune import Callback
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch

from masksep import config as config_mod
from masksep.progress import line
from masksep.rundir import read_state
from masksep.sweep import ray_compat, tracking
from masksep.sweep import spec as spec_mod
from masksep.sweep.spec import METRIC, SweepSpec


def describe(spec: SweepSpec, config: dict[str, Any]) -> str:
    """A trial's searched values (a study's variant) and seed, for its terminal lines."""
    shown = spec.searched(config) if spec.study is None else {
        spec_mod.VARIANT_KEY: spec_mod.searched_params(config).get(spec_mod.VARIANT_KEY)}
    seed = spec.trial_config(config).seed
    return " ".join(f"{k}={_short(v)}" for k, v in shown.items()) + f" seed={seed}"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class Progress(Callback):
    """A line per trial event on the driver's stdout."""

    def __init__(self, spec: SweepSpec, total: int):
        self.spec = spec
        self.total = total

    def on_trial_start(self, iteration, trials, trial, **info):
        line(f"start  {trial.trial_id}  {describe(self.spec, trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("final"):
            line(f"test   {trial.trial_id}  SI-SNRi {result['test_si_snri']:.2f} dB, "
                 f"SDRi {result['test_sdri']:.2f} dB")
        elif "epoch" in result:
            line(f"epoch  {trial.trial_id}  {result['epoch']:>3}  val SI-SNRi "
                 f"{result['val_si_snri']:6.2f} dB (best {result[METRIC]:.2f})")

    def on_trial_complete(self, iteration, trials, trial, **info):
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1
        line(f"done   {trial.trial_id}  ({min(done, self.total)}/{self.total} trials finished)")

    def on_trial_recover(self, iteration, trials, trial, **info):
        line(f"retry  {trial.trial_id}  from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        line(f"FAILED {trial.trial_id}  (its error.txt says why; the sweep goes on)")


class WandbRuns(Callback):
    """A W&B run per trial, each a thread of the driver fed by a queue (no Ray
    worker processes: W&B runs several runs in one process, reinit="create_new").

    Where the runs go is read from ``OUT/sweep.json`` at set-up, written by this
    invocation of ``masksep sweep`` (``--resume`` included), so a resumed sweep
    honours its own W&B flags; when it says W&B is off, the callback does nothing.
    A restarted trial (a retry, a resumed driver) keeps its run: the run id is the
    sweep's uid and the trial id, and W&B resumes it.
    """

    def __init__(self, spec: SweepSpec, out: Path, sweep_uid: str):
        self.spec = spec
        self.out_dir = str(Path(out).resolve())
        self.sweep_uid = sweep_uid
        self.target: dict[str, Any] | None = None
        self._feeds: dict[str, Queue] = {}  # trial id -> its run's queue
        self._threads: dict[str, threading.Thread] = {}

    def __getstate__(self):
        # Tune pickles its callbacks; threads and queues stay behind.
        return {**self.__dict__, "_feeds": {}, "_threads": {}}

    def setup(self, **info):
        self.target = read_state(Path(self.out_dir)).get("wandb")

    def _start(self, trial) -> None:
        if self.target is None or trial.trial_id in self._threads:
            return
        try:
            cfg = self.spec.trial_config(trial.config)
            config = {**config_mod.flatten(cfg), **config_mod.head_summary(cfg)}
        except Exception:  # noqa: BLE001 - the trial itself will report a bad config
            config = {}
        config.update({"trial_id": trial.trial_id, "sweep": self.spec.name,
                       **{f"searched/{k}": v
                          for k, v in spec_mod.searched_params(trial.config).items()}})
        feed: Queue = Queue()
        kwargs = dict(target=self.target, run_id=f"{self.sweep_uid}-{trial.trial_id}",
                      name=f"{self.spec.name}-{trial.trial_id}", job_type="trial", config=config)
        thread = threading.Thread(target=tracking.write_run, args=(feed, kwargs),
                                  name=f"wandb-{trial.trial_id}", daemon=True)
        self._feeds[trial.trial_id] = feed
        self._threads[trial.trial_id] = thread
        thread.start()

    def _stop(self, trial_id: str) -> None:
        feed = self._feeds.pop(trial_id, None)
        if feed is not None:
            feed.put(None)  # the run finishes after what is queued

    def _join(self, timeout: float) -> None:
        """Wait for the runs' threads within one deadline; a thread still running
        then is left (a daemon: its offline files stay for wandb sync)."""
        deadline = time.monotonic() + timeout
        for trial_id, thread in list(self._threads.items()):
            thread.join(max(0.0, deadline - time.monotonic()))
            if not thread.is_alive():
                self._threads.pop(trial_id, None)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._start(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.target is None:
            return
        self._start(trial)
        feed = self._feeds.get(trial.trial_id)
        if feed is not None:
            feed.put(tracking.result_item(result))

    def _end(self, trial, status: str) -> None:
        feed = self._feeds.get(trial.trial_id)
        if feed is None:
            return
        feed.put({"summary": {"status": status}})
        self._stop(trial.trial_id)
        self._join(0)  # forget the threads that have finished

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, "completed" if trial.last_result.get("final") else "stopped")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "failed")

    def on_experiment_end(self, trials, **info):
        for trial_id in list(self._feeds):
            self._stop(trial_id)
        self._join(tracking.FINISH_TIMEOUT_S)

    def __del__(self):
        for trial_id in list(getattr(self, "_feeds", {})):
            self._stop(trial_id)
        if getattr(self, "_threads", None):
            self._join(2)


# --------------------------------------------------------------------------- the search


class ExportingOptunaSearch(OptunaSearch):
    """OptunaSearch whose in-memory study is exported to SQLite after every
    trial it is told about (the export is for optuna-dashboard; nothing reads it back)."""

    def __init__(self, *args, export_path: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.export_path = export_path

    def on_trial_complete(self, trial_id, result=None, error=False):
        super().on_trial_complete(trial_id, result=result, error=error)
        if getattr(self, "_export", None) is None:  # once per driver session
            self._export = StudyExport(Path(self.export_path))
        self._export.update(ray_compat.optuna_study(self))

    def save(self, checkpoint_path: str):
        export, self._export = getattr(self, "_export", None), None  # not pickled
        try:
            super().save(checkpoint_path)
        finally:
            self._export = export


class StudyExport:
    """The finished trials of an in-memory Optuna study, in SQLite at ``path``.

    The first update of a driver session writes a fresh file beside ``path`` and
    renames it over (a reader never sees half an export, and one left by a killed
    session is replaced whole, so the file mirrors Tune's snapshot); later updates
    add the newly finished trials, one transaction each (a full copy took 1.5 s of
    Tune's event loop at every trial's end)."""

    def __init__(self, path: Path):
        self.path = path
        self.study = None
        self.done: set[int] = set()

    def update(self, study) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per export
        finished = [t for t in study.get_trials(deepcopy=False)
                    if t.state.is_finished() and t.number not in self.done]
        try:
            if self.study is None:
                tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
                tmp.unlink(missing_ok=True)
                storage = optuna.storages.RDBStorage(f"sqlite:///{tmp}")
                copy = optuna.create_study(storage=storage, study_name=study.study_name,
                                           directions=study.directions)
                copy.add_trials(finished)
                storage.engine.dispose()
                os.replace(tmp, self.path)
                self.study = optuna.load_study(study_name=study.study_name,
                                               storage=f"sqlite:///{self.path}")
            else:
                self.study.add_trials(finished)
            self.done.update(t.number for t in finished)
        except Exception as exc:  # noqa: BLE001 - an export must never stop the sweep
            logging.getLogger("masksep").warning("masksep: optuna.db export failed (%s)", exc)


class MultiRepeater(Repeater):
    """ray.tune.search.Repeater for several objectives: Ray's Repeater averages
    one metric only; this one averages each objective over the seeds."""

    def on_trial_complete(self, trial_id, result=None, **kwargs):
        group = ray_compat.repeater_group(self, trial_id)
        metrics = self.searcher.metric
        score = ([result.get(m, math.nan) for m in metrics]
                 if result else [math.nan] * len(metrics))
        group.report(trial_id, score)
        if group.finished_reporting():
            import numpy as np

            mean = np.nanmean(np.array(group.scores(), dtype=float), axis=0)
            self.searcher.on_trial_complete(
                group.primary_trial_id, result=dict(zip(metrics, mean.tolist(), strict=True)),
                **kwargs)


# --------------------------------------------------------------------------- DDP trials

# Each rank's own mean training loss of the epoch, before the all-reduce; the
# Tune result gets them as one list, worker_train_loss, in rank order.
LOCAL_LOSS = "rank_train_loss"


class ForwardToTune(TuneReportCallback):
    """Ray's TuneReportCallback (it forwards rank 0's result to the Tune trial),
    plus every rank's own training loss as one list."""

    def after_report(self, run_context, metrics, checkpoint):
        result = {k: v for k, v in metrics[0].items() if k != LOCAL_LOSS}
        local = [m.get(LOCAL_LOSS) for m in metrics]
        if not result.get("final") and all(isinstance(v, (int, float)) for v in local):
            result["worker_train_loss"] = local
        super().after_report(run_context, [result], checkpoint)
