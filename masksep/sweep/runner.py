"""Run a sweep: spec -> Ray Tune (Optuna search, ASHA) -> trials = train.fit -> report.

The whole Tune set-up is in :func:`build_tuner`; the trainable
(:func:`run_trial`) is a thin adapter around :func:`masksep.train.fit` that
knows nothing of the search.

Folder of a sweep (``--out DIR``)::

    DIR/sweep.json      what ran, where its Ray state lives, status
    DIR/spec.yaml       the spec as it was given
    DIR/optuna.db       the Optuna study (optuna-dashboard sqlite:///DIR/optuna.db)
    DIR/ray/NAME/       Ray Tune's experiment (unless storage_path points elsewhere):
                        one folder per trial with config.yaml, metrics.jsonl,
                        summary.json, checkpoints/ and Ray's result.json
    DIR/wandb/          offline W&B runs (when there is no API key)
    DIR/trials.csv, pareto.csv, summary.md, tradeoff.png, depth_vs_oversep.png
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from masksep.errors import UserError
from masksep.files import atomic_write
from masksep.report import STATE_FILE  # the file the report reads the sweep from
from masksep.reporting import Reporter
from masksep.sweep import spec as spec_mod
from masksep.sweep.spec import COST, FINAL_KEYS, METRIC, SweepSpec

# --------------------------------------------------------------------------- the trial side


class TuneReporter(Reporter):
    """Every epoch to Ray Tune with the trial's last checkpoint; the test
    metrics as one more report at the end. (cluster.WorkerReporter sends the
    same reports through Ray Train.)"""

    def __init__(self, static: dict[str, Any] | None = None):
        self.static = dict(static or {})
        self.last: dict[str, Any] = {}

    def start(self, info):
        self.static.update(info["complexity"])

    def epoch(self, metrics, checkpoint_dir):
        self.last = {**self.static, **metrics}
        result = {**self.last, **self._extra()}
        if checkpoint_dir is None:  # a DDP rank other than 0
            self._send(result)
            return
        # The checkpoint is last.pt alone (what a retry resumes from); best.pt
        # reaches the trial folder once, at the end (TrialFiles).
        stage = Path(tempfile.mkdtemp(prefix="masksep-ckpt-"))
        try:
            shutil.copy2(Path(checkpoint_dir) / "last.pt", stage / "last.pt")
            self._send(result, stage)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def end(self, summary):
        final = {k: summary[k] for k in FINAL_KEYS}
        self._send({**self.static, **self.last, **final, "final": True})

    def _extra(self) -> dict[str, Any]:
        """More keys for each epoch's report."""
        return {}

    def _send(self, result: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(result, checkpoint=checkpoint)


def run_trial(config: dict[str, Any], spec: SweepSpec) -> None:
    """The Ray Tune trainable: one point of the search space -> train.fit."""
    from ray import tune

    from masksep import config as config_mod
    from masksep.reporting import MultiReporter
    from masksep.sweep.cluster import TrialFiles, TrialFolder
    from masksep.train import fit

    cfg = spec.trial_config(config)  # train.threads = the CPUs Ray gave this trial
    tune_ctx = tune.get_context()
    trial_id = tune_ctx.get_trial_id()
    # fit writes on this trial's node (its working folder); TrialFiles copies
    # the files into the trial's folder in storage, where report.collect reads.
    storage = tune_ctx.get_storage()
    folder = TrialFolder(storage.storage_filesystem, storage.trial_fs_path)
    run_dir = Path(storage.trial_working_directory)

    restore = Path(tempfile.mkdtemp(prefix="masksep-restore-"))
    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        checkpoint.to_directory(str(restore))
        resume_from = restore / "last.pt"

    searched = spec_mod.searched_params(config)
    folder.put_bytes("searched.json", (json.dumps(searched, indent=2) + "\n").encode())
    # Before fit too, so that the report can describe a trial that fails early.
    folder.put_bytes("config.yaml", config_mod.to_yaml(cfg).encode())
    # Files first: summary.json is in storage before Tune hears "final".
    reporter = MultiReporter(TrialFiles(folder), TuneReporter({"trial_id": trial_id}))
    try:
        fit(cfg, run_dir, reporter, resume_from=resume_from)
    finally:
        shutil.rmtree(restore, ignore_errors=True)


# --------------------------------------------------------------------------- the driver side


def _line(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _describe(config: dict[str, Any]) -> str:
    shown = spec_mod.searched_params(config)
    return " ".join(f"{k}={_short(v)}" for k, v in shown.items()) or "(base config)"


def _progress_callback(total: int):
    """A line per trial event on the driver's stdout (Ray's own tables are off)."""
    from ray.tune import Callback

    class ProgressCallback(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            _line(f"start  {trial.trial_id}  {_describe(trial.config)}")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("final"):
                _line(f"test   {trial.trial_id}  SI-SNRi {result['test_si_snri']:.2f} dB, "
                      f"SDRi {result['test_sdri']:.2f} dB")
            elif "epoch" in result:
                _line(f"epoch  {trial.trial_id}  {result['epoch']:>3}  val SI-SNRi "
                      f"{result['val_si_snri']:6.2f} dB (best {result[METRIC]:.2f})")

        def on_trial_complete(self, iteration, trials, trial, **info):
            done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + 1
            _line(f"done   {trial.trial_id}  ({min(done, total)}/{total} trials finished)")

        def on_trial_recover(self, iteration, trials, trial, **info):
            _line(f"retry  {trial.trial_id}  from its last checkpoint")

        def on_trial_error(self, iteration, trials, trial, **info):
            _line(f"FAILED {trial.trial_id}  (its error.txt says why; the sweep goes on)")

    return ProgressCallback()


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class MultiRepeater:
    """ray.tune.search.Repeater for several objectives: Ray's Repeater averages
    one metric only; this one averages each objective over the seeds."""

    def __new__(cls, searcher, repeat: int):
        from ray.tune.search import Repeater

        class _MultiRepeater(Repeater):
            def on_trial_complete(self, trial_id, result=None, **kwargs):
                group = self._trial_id_to_group[trial_id]
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

        return _MultiRepeater(searcher, repeat=repeat)


def build_searcher(spec: SweepSpec, optuna_db: Path):
    """OptunaSearch (define-by-run space, SQLite storage) or None for a grid."""
    if spec.search == "grid":
        return None
    import optuna
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(f"sqlite:///{optuna_db.resolve()}")
    if spec.multi_objective:
        metric, mode = [METRIC, COST], ["max", "min"]
    else:
        metric, mode = METRIC, "max"
    searcher = OptunaSearch(
        space=spec_mod.DefineByRun(spec.dims), metric=metric, mode=mode,
        sampler=optuna.samplers.TPESampler(seed=spec.seed), study_name=spec.name,
        storage=storage, points_to_evaluate=[dict(p) for p in spec.initial_points] or None,
    )
    if spec.repeats > 1:
        searcher = (MultiRepeater(searcher, spec.repeats) if spec.multi_objective
                    else Repeater(searcher, repeat=spec.repeats, set_index=True))
    return searcher


def trainable_with_resources(spec: SweepSpec):
    from ray import tune

    r = spec.resources
    if r.workers_per_trial > 1:
        from masksep.sweep.cluster import ddp_trainable

        return ddp_trainable(spec)
    return tune.with_resources(tune.with_parameters(run_trial, spec=spec),
                               {"cpu": r.cpus, "gpu": r.gpus, **r.custom})


def build_tuner(spec: SweepSpec, out: Path, storage: str, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    searcher = build_searcher(spec, out / "optuna.db")
    if spec.search == "grid":
        param_space: dict[str, Any] = {spec_mod.GRID_KEY: tune.grid_search(spec.grid_points())}
        if spec.repeats > 1:
            param_space[spec_mod.TRIAL_INDEX] = tune.grid_search(list(range(spec.repeats)))
    else:
        param_space = {}
    scheduler = None
    if spec.scheduler == "asha":
        # max_t counts reports: one per epoch plus the final (test) report.
        scheduler = ASHAScheduler(
            metric=METRIC, mode="max", time_attr="training_iteration", max_t=spec.max_epochs + 1,
            grace_period=spec.asha.grace_period, reduction_factor=spec.asha.reduction_factor)
    # metric and mode live in the searcher and the scheduler; Tune objects to them twice.
    tune_config = tune.TuneConfig(
        search_alg=searcher,
        scheduler=scheduler,
        num_samples=spec.num_samples,
        max_concurrent_trials=spec.max_concurrent_trials,
        time_budget_s=spec.time_budget_s or None,
        reuse_actors=False,
        trial_name_creator=lambda trial: f"trial_{trial.trial_id}",
        trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
    )
    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=callbacks,
        verbose=0,
    )
    return tune.Tuner(trainable_with_resources(spec), param_space=param_space,
                      tune_config=tune_config, run_config=run_config)


def _storage_uri(spec: SweepSpec, out: Path, override: str | None) -> str:
    storage = override or spec.storage_path
    if not storage:
        return str((out / "ray").resolve())
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


def _write_state(out: Path, state: dict[str, Any]) -> None:
    atomic_write(out / STATE_FILE, json.dumps(state, indent=2) + "\n")


def read_state(out: Path) -> dict[str, Any]:
    path = Path(out) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{out}: no sweep here ({STATE_FILE} is missing)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable sweep state ({type(exc).__name__})") from None


def _start_ray(address: str | None, dashboard: bool, num_cpus: int | None) -> bool:
    """Connect to a cluster (address or RAY_ADDRESS) or start a private local Ray.
    Returns True when this process started Ray (and so must stop it)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        try:
            ray.init(address=address, **quiet)
        except Exception as exc:  # noqa: BLE001 - many types; one line for the user
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--address {address}: cannot connect to Ray ({first})") from None
        return False
    # A short private temp dir: Ray's socket paths must stay under ~100 characters,
    # and a private one keeps concurrent sweeps (and tests) out of each other's way.
    base = os.environ.get("RAY_TMPDIR") or ("/tmp" if os.path.isdir("/tmp") else None)
    temp_dir = tempfile.mkdtemp(prefix="msray-", dir=base)
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
             _temp_dir=temp_dir, **quiet)
    return True


def _check_resources(spec: SweepSpec, started_locally: bool) -> None:
    import ray

    total = ray.cluster_resources()
    r = spec.resources
    need_cpu = r.cpus * r.workers_per_trial
    need_gpu = r.gpus * r.workers_per_trial
    short = []
    if need_cpu > total.get("CPU", 0):
        short.append(f"resources.cpus: a trial needs {need_cpu:g} CPUs, Ray has {total.get('CPU', 0):g}")
    if need_gpu > total.get("GPU", 0):
        short.append(f"resources.gpus: a trial needs {need_gpu:g} GPUs, Ray has {total.get('GPU', 0):g}")
    for key, amount in r.custom.items():
        need = amount * r.workers_per_trial
        if need > total.get(key, 0):
            short.append(f"resources.custom.{key}: a trial needs {need:g}, Ray has {total.get(key, 0):g}")
    if r.workers_per_trial > 1 and 0 < r.gpus < 1:
        # NCCL cannot run two ranks of one process group on one GPU.
        raise UserError(f"{spec.path}: resources.gpus: DDP workers (workers_per_trial "
                        f"{r.workers_per_trial}) need a whole GPU each, got {r.gpus:g}")
    if short and started_locally:
        raise UserError(f"{spec.path}: {short[0]}")
    for line in short:  # an autoscaling cluster may still add nodes
        print(f"masksep: warning: {line} now; trials wait for the autoscaler", file=sys.stderr)


def run_sweep(
    spec_path: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    address: str | None = None,
    use_wandb: bool = True,
    storage_path: str | None = None,
    dashboard: bool = False,
    num_cpus: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) the sweep of ``spec_path`` into ``out``; returns the report summary."""
    from masksep import report as report_mod
    from masksep.sweep import tracking

    spec = spec_mod.load_spec(spec_path)  # every spec error surfaces before anything is written
    out = Path(out).resolve()
    if resume:
        state = read_state(out)
        if state.get("name") != spec.name:
            raise UserError(f"{out}: holds sweep {state.get('name')!r}, not {spec.name!r}")
    else:
        if (out / STATE_FILE).exists():
            raise UserError(f"{out}: already holds a sweep; pass --resume to continue it or pick another --out")
        state = {
            "name": spec.name,
            "uid": uuid.uuid4().hex[:8],
            "spec": str(Path(spec_path).resolve()),
            "storage": _storage_uri(spec, out, storage_path),
            "search": spec.search,
            "scheduler": spec.scheduler,
            "num_trials": spec_mod.count_trials(spec),
            "max_concurrent_trials": spec.max_concurrent_trials,
            "started": time.time(),
        }
    experiment = f"{state['storage'].rstrip('/')}/{spec.name}"

    # Every trial checkpoints every epoch by design; with short epochs Tune warns
    # each time its experiment snapshot follows them. The warning, not the snapshot, goes.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = _start_ray(address, dashboard, num_cpus)
    try:
        _check_resources(spec, started)
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            shutil.copyfile(spec_path, out / "spec.yaml")
        state.update(status="running", pid=os.getpid(), resumed=resume, driver_started=time.time())
        _write_state(out, state)

        target = tracking.resolve_target(spec.wandb, spec.name, out) if (
            use_wandb and spec.wandb.enabled) else None
        callbacks = [_progress_callback(state["num_trials"])]
        if target is not None:
            callbacks.append(tracking.make_wandb_callback(target, spec, state["uid"]))
        _line(spec_mod.spec_summary(spec))
        _line(f"results: {out}   optuna: sqlite:///{out / 'optuna.db'}"
                     + (f"   W&B: {target.project} ({target.mode})" if target else "   W&B: off"))
        if resume:
            from ray import tune

            tuner = tune.Tuner.restore(
                experiment, trainable=trainable_with_resources(spec),
                resume_unfinished=True, resume_errored=False, restart_errored=False)
            _line(f"resuming {experiment}")
        else:
            tuner = build_tuner(spec, out, state["storage"], callbacks)
        t0 = time.monotonic()
        tuner.fit()
        state.update(status="finished", finished=time.time(),
                     driver_wall_s=state.get("driver_wall_s", 0.0) + time.monotonic() - t0)
        _write_state(out, state)
    finally:
        if started:
            import ray

            ray.shutdown()

    summary = report_mod.write_report(out)
    _line(f"report: {out / 'summary.md'}")
    if target is not None:
        rows, columns = report_mod.read_trials(out / "trials.csv")
        tracking.log_sweep_run(target, rows, columns, {"sweep": spec.name, **summary}, state["uid"])
        offline = tracking.offline_runs(out)
        if offline:
            _line(f"W&B runs are offline; upload them with: wandb sync {out / 'wandb'}/offline-run-*")
    return summary
