"""Run a sweep: spec -> Ray Tune (Optuna search, ASHA) -> trials (sweep/trial.py).

It ends at ``tuner.fit``: the report and W&B's summary run come after it, one level
up (masksep/pipeline.py), so that this package knows nothing of the report.

The whole Tune set-up is in :func:`build_tuner`. One source of truth for each
kind of state:

* search state (the Optuna study, the trial table, ASHA's counters) lives only
  in Tune's experiment snapshot: OptunaSearch keeps its study in memory and Tune
  pickles it in the same save as the trial table. ``OUT/optuna.db`` is an export
  of that study, written at every trial completion for optuna-dashboard, and
  never read back;
* a trial's progress lives only in its own folder in storage (sweep/trial.py).

On ``--resume`` the newest snapshot decides which trials exist; trial folders it
does not know (started after the snapshot the kill left behind) are moved to
``OUT/orphaned/`` and Tune proposes replacements. Restarted trials continue
from their folders; finished ones re-send their results without training.

Folder of a sweep (``--out DIR``)::

    DIR/sweep.json      what ran, where its Ray state lives, status, this run's W&B target
    DIR/.masksep.lock   while a driver runs: its host and pid (masksep/locks.py)
    DIR/spec.yaml       the spec, self-contained (base configs inlined)
    DIR/optuna.db       export of the Optuna study (optuna-dashboard sqlite:///DIR/optuna.db)
    DIR/ray/NAME/       Ray Tune's experiment (unless storage_path points elsewhere),
                        one folder per trial (sweep/trial.py), and masksep-sweep.json
                        (sweep.json's uid: a resume restores only its own sweep's state)
    DIR/orphaned/       trial folders a resume found but Tune's snapshot did not know
    DIR/wandb/          offline W&B runs
    DIR/trials.csv, pareto.csv, summary.md, *.png   the report
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from masksep import locks, rundir
from masksep.errors import UserError
from masksep.progress import line as _line
from masksep.rundir import STATE as STATE_FILE
from masksep.rundir import experiment_path, read_state, write_state
from masksep.sweep import ray_compat
from masksep.sweep import spec as spec_mod
from masksep.sweep.spec import COST, METRIC, SweepSpec
from masksep.sweep.trial import DATA_CACHE

# --------------------------------------------------------------------------- the search


def build_searcher(spec: SweepSpec, optuna_db: Path):
    """OptunaSearch (define-by-run space, in-memory study) or None for a grid."""
    if spec.search == "grid":
        return None
    import optuna
    from ray.tune.search import Repeater

    # imports Ray's searchers: Ray has started (build_tuner)
    from masksep.sweep.callbacks import ExportingOptunaSearch, MultiRepeater

    if spec.multi_objective:
        metric, mode = [METRIC, COST], ["max", "min"]
    else:
        metric, mode = METRIC, "max"
    searcher = ExportingOptunaSearch(
        space=spec_mod.DefineByRun(spec.dims), metric=metric, mode=mode,
        sampler=optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.startup_trials),
        study_name=spec.name,
        points_to_evaluate=[dict(p) for p in spec.initial_points] or None,
        export_path=str(optuna_db.resolve()),
    )
    if spec.repeats > 1:
        searcher = (MultiRepeater(searcher, repeat=spec.repeats) if spec.multi_objective
                    else Repeater(searcher, repeat=spec.repeats, set_index=True))
    return searcher


def trainable_with_resources(spec: SweepSpec):
    from ray import tune

    r = spec.resources
    if r.workers_per_trial > 1 or r.ray_train:
        from masksep.sweep.ddp import ddp_trainable

        return ddp_trainable(spec)
    from masksep.sweep.trial import run_trial

    return tune.with_resources(tune.with_parameters(run_trial, spec=spec),
                               {"cpu": r.cpus, "gpu": r.gpus, **r.custom})


def build_tuner(spec: SweepSpec, out: Path, storage: str, callbacks: list):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    searcher = build_searcher(spec, out / rundir.OPTUNA_DB)
    if spec.search == "grid":
        # The seed index first: a study cut short by its time budget still has
        # every variant at the seeds it reached.
        param_space: dict[str, Any] = {}
        if spec.repeats > 1:
            param_space[spec_mod.TRIAL_INDEX] = tune.grid_search(list(range(spec.repeats)))
        param_space[spec_mod.GRID_KEY] = tune.grid_search(spec.grid_points())
    else:
        param_space = {}
    scheduler = None
    if spec.scheduler == "asha":
        # The trial's own epoch, not Tune's iteration counter (which restarts with
        # a restarted trial). max_t above the last epoch: the final (test) report
        # repeats the last epoch, and ASHA must not stop a trial before it.
        scheduler = ASHAScheduler(
            metric=METRIC, mode="max", time_attr="epoch", max_t=spec.max_epochs + 1,
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
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    run_config = tune.RunConfig(
        name=spec.name,
        storage_path=storage,
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        # Tune's own result files, named so that Tune adds no TensorBoard logger
        # (see _quiet_tune); ExperimentAnalysis reads these.
        callbacks=[*callbacks, CSVLoggerCallback(), JsonLoggerCallback()],
        verbose=0,
    )
    return tune.Tuner(trainable_with_resources(spec), param_space=param_space,
                      tune_config=tune_config, run_config=run_config)


# --------------------------------------------------------------------------- the driver


def _storage_uri(spec: SweepSpec, out: Path, override: str | None) -> str:
    storage = override or spec.storage_path
    if not storage:
        return str((out / "ray").resolve())
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


# Ray prints two lines that mean nothing to a masksep user. Both are turned off
# through Ray's own settings (environment variables it documents), not patched:
# * Tune's "To visualize your results with TensorBoard, run: `tensorboard --logdir
#   <a temp folder of the driver>`", printed whenever its TensorBoard logger runs.
#   build_tuner names Tune's CSV and JSON loggers (ExperimentAnalysis reads their
#   files) and TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 keeps Tune from adding the
#   TensorBoard one; W&B is the live view. A sweep started before this keeps its
#   loggers on a resume (sweep.json's "tune_loggers" says which kind it has).
# * "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled
#   to opt out": Ray's notice when a new local Ray turns token auth on because
#   RAY_AUTH_MODE is unset. For its private local Ray masksep sets RAY_AUTH_MODE=token
#   itself (a value of the user's own is kept): the same Ray, without the notice.
#   Ray reads the variable once, when it is imported, so this is done only before
#   the first `import ray` of the process (the CLI's case); later, Ray's notice stays.
TUNE_LOGGERS = "csv+json"  # sweep.json's tune_loggers of a sweep whose Tuner names them


@contextmanager
def _quiet_tune(state: dict[str, Any]):
    """tuner.fit without Tune's TensorBoard logger, for a sweep that names its loggers."""
    key = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    if state.get("tune_loggers") != TUNE_LOGGERS:
        yield
        return
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _start_ray(address: str | None, dashboard: bool, num_cpus: int | None) -> bool:
    """Connect to a cluster (address or RAY_ADDRESS) or start a private local Ray.
    Returns True when this process started Ray (and so must stop it)."""
    where = "--address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS")
    if not address and "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # Ray's own default, said explicitly
    import ray

    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address and address.startswith(("http://", "https://")):
        raise UserError(f"{where} {address}: a dashboard's address (what masksep submit takes); "
                        "a sweep joins the cluster itself: HEAD:6379 or ray://HEAD:10001")
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
    ray_compat.init_local(temp_dir, num_cpus=num_cpus, include_dashboard=dashboard,
                          dashboard_host="127.0.0.1", **quiet)
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


def _check_same_spec(spec: SweepSpec, out: Path) -> None:
    """A resume runs the sweep that was started: the same spec, base configs included."""
    from masksep.config import first_difference, load_yaml_text

    saved = out / rundir.SPEC
    if not saved.is_file():
        return
    old = load_yaml_text(saved.read_text(), str(saved))
    new = load_yaml_text(spec_mod.self_contained_yaml(spec))
    changed = first_difference(old, new)
    if changed is not None:
        key, was, now = changed
        raise UserError(f"{spec.path}: {key} is {now!r} here but {was!r} in the sweep {out} "
                        f"started with ({saved}); resume with the spec it started with")


def _set_orphans_aside(experiment: str, out: Path) -> list[str]:
    """Trial folders the newest snapshot does not know -> OUT/orphaned/. Returns their names."""
    store = rundir.Store.of_uri(experiment)
    # The snapshot read as JSON (nothing unpickled); none yet: every folder is an orphan.
    known = set(rundir.tune_trials(store) or {})
    moved = []
    for name, is_dir in store.listdir():
        if not is_dir or not name.startswith("trial_") or name in known:
            continue
        store.move_out(name, out / rundir.ORPHANED / f"{name}-{uuid.uuid4().hex[:6]}")
        moved.append(name)
    return moved


def _drop_data_cache(experiment: str) -> None:
    """The data the trials shared is not a result: gone once the sweep has run
    (a resume makes again what it needs)."""
    if "://" not in experiment:
        shutil.rmtree(Path(experiment) / DATA_CACHE, ignore_errors=True)


def _resumed_state(spec: SweepSpec, out: Path, storage_path: str | None, retry_failed: bool = False
                   ) -> dict[str, Any] | None:
    """sweep.json of the sweep a resume continues (None: it has already finished,
    and with ``retry_failed``, none of its trials failed).

    A resume restores Tune's snapshot, which Tune unpickles: whoever can write OUT
    or the sweep's storage can run code in this process (docs/trust.md). So it
    reads only a folder that its sweep.json identifies as this sweep's: the spec's
    name, the spec itself (spec.yaml), the storage this run would use, and an
    experiment whose owner file names sweep.json's uid."""
    state = read_state(out)
    if state.get("name") != spec.name:
        raise UserError(f"{out}: holds sweep {state.get('name')!r}, not {spec.name!r}")
    _check_same_spec(spec, out)
    if _storage_uri(spec, out, storage_path) != state["storage"]:
        if storage_path:
            raise UserError(f"--storage-path {storage_path}: the sweep in {out} keeps its Ray state "
                            f"at {state['storage']}; resume without --storage-path")
        raise UserError(f"{out / STATE_FILE}: keeps its Ray state at {state['storage']}, not where "
                        f"this sweep would ({_storage_uri(spec, out, None)}): a sweep folder moved "
                        f"or copied is not resumed; resume it where it ran, or pass "
                        f"--storage-path {state['storage']} if you trust that folder")
    if state.get("owner"):
        owner = rundir.Store.of_uri(experiment_path(state)).read_json(state["owner"])
        if not isinstance(owner, dict) or owner.get("uid") != state.get("uid"):
            raise UserError(f"{experiment_path(state)}: is not the Ray state of the sweep in {out} "
                            f"(its {state['owner']} does not name uid {state.get('uid')!r}); "
                            "not resumed")
    if state.get("status") == "finished":
        failed = _trial_statuses(state).count("ERROR") if retry_failed else 0
        if not failed:
            _line(f"the sweep in {out} has already finished"
                  + ("; none of its trials failed" if retry_failed else "")
                  + f"; nothing to run (its report: {out / rundir.REPORT})")
            return None
        _line(f"the sweep in {out} had finished with {failed} failed trial(s); running them "
              "again, each from its last checkpoint")
        state.pop("finished", None)
    return state


def _trial_statuses(state: dict[str, Any]) -> list[str]:
    """Each trial's status in Tune's last snapshot of the sweep (TERMINATED, ERROR, ...)."""
    trials = rundir.tune_trials(rundir.Store.of_uri(experiment_path(state))) or {}
    return [t["status"] for t in trials.values()]


def _new_state(spec: SweepSpec, spec_path: str | Path, out: Path, storage_path: str | None
               ) -> dict[str, Any]:
    """sweep.json of a sweep about to start."""
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
        "tune_loggers": TUNE_LOGGERS,
    }
    if spec.search.startswith("optuna"):  # the report states the sampler's random start-up
        state["startup_trials"] = spec.startup_trials
        state["configurations"] = spec.configurations
    if spec.study is not None:
        state["study"] = spec.study.to_dict()
    return state


def _tuner(spec: SweepSpec, out: Path, state: dict[str, Any], resume: bool, retry_failed: bool = False):
    """Tune's Tuner: restored from the experiment's snapshot on a resume (its failed
    trials run again with ``retry_failed``), else new."""
    from ray import tune

    experiment = experiment_path(state)
    if resume and tune.Tuner.can_restore(experiment):
        orphans = _set_orphans_aside(experiment, out)
        if orphans:
            _line(f"moved {len(orphans)} trial folder(s) the last snapshot did not know to "
                  f"{out / rundir.ORPHANED}: {', '.join(orphans)}; Tune proposes replacements")
        tuner = tune.Tuner.restore(
            experiment, trainable=trainable_with_resources(spec),
            resume_unfinished=True, resume_errored=retry_failed, restart_errored=False)
        _line(f"resuming {experiment}")
        return tuner
    if resume:  # killed before Tune's first snapshot: nothing to resume but the folders
        orphans = _set_orphans_aside(experiment, out)
        _line(f"no snapshot of the sweep in {experiment} yet; starting it again"
              + (f" ({len(orphans)} trial folder(s) moved to {out / rundir.ORPHANED})" if orphans else ""))
    from masksep.sweep.callbacks import Progress, WandbRuns  # imports Ray: it has started

    callbacks = [Progress(spec, state["num_trials"]), WandbRuns(spec, out, state["uid"])]
    return build_tuner(spec, out, state["storage"], callbacks)


def run_sweep(
    spec_path: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    retry_failed: bool = False,
    address: str | None = None,
    use_wandb: bool = True,
    storage_path: str | None = None,
    dashboard: bool = False,
    num_cpus: int | None = None,
) -> dict[str, Any] | None:
    """Run (or resume) the sweep of ``spec_path`` into ``out`` to its end; returns
    its state (sweep.json's contents), or None when a resume finds it already finished.
    Raises KeyboardInterrupt, with sweep.json's status "interrupted" (which
    ``resume`` continues), when Tune was stopped by SIGINT or SIGUSR1 before every
    trial ended. ``retry_failed`` (with ``resume``): the trials that failed run again, each
    from its last checkpoint, even when the sweep had finished (a full disk, a node
    lost); an Optuna search keeps them as failed in its own study."""
    spec = spec_mod.load_spec(spec_path)  # every spec error surfaces before anything is written
    out = Path(out).resolve()
    # One driver per sweep folder (masksep sweep holds it already: re-entrant).
    with locks.hold_folder(out, f"masksep sweep {spec.name}"):
        return _run_sweep(spec, spec_path, out, resume=resume, retry_failed=retry_failed and resume,
                          address=address, use_wandb=use_wandb, storage_path=storage_path,
                          dashboard=dashboard, num_cpus=num_cpus)


def _run_sweep(spec: SweepSpec, spec_path: str | Path, out: Path, *, resume: bool, retry_failed: bool,
               address: str | None, use_wandb: bool, storage_path: str | None, dashboard: bool,
               num_cpus: int | None) -> dict[str, Any] | None:
    from masksep.sweep import tracking

    state = _resumed_state(spec, out, storage_path, retry_failed) if resume else _new_state(
        spec, spec_path, out, storage_path)
    if state is None:
        return None
    started = _start_ray(address, dashboard, num_cpus)
    try:
        _check_resources(spec, started)
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            (out / rundir.SPEC).write_text(spec_mod.self_contained_yaml(spec))
            # Ties the experiment to this sweep.json (a resume checks it), before sweep.json exists.
            rundir.Store.of_uri(experiment_path(state)).put_bytes(rundir.OWNER, json.dumps(
                {"name": spec.name, "uid": state["uid"], "out": str(out)}).encode())
            state["owner"] = rundir.OWNER
        # This invocation's W&B target: the callback pickled in Tune's state reads it
        # from here at set-up, so a resume honours --no-wandb and changed settings.
        target = tracking.resolve_target(spec.wandb, spec.name, out) if (
            use_wandb and spec.wandb.enabled) else None
        # Each driver run of the sweep, so that a report knows whether its wall time is
        # whole: a driver stopped by a kill (SIGKILL, a session's end) records none.
        drivers = state.setdefault("drivers", [] if not resume else [
            {"started": state.get("started"), "wall_s": None}])  # a sweep.json from before
        drivers.append({"started": time.time(), "wall_s": None})
        state.update(status="running", pid=os.getpid(), resumed=resume,
                     wandb=target.to_dict() if target else None)
        write_state(out, state)
        _line(spec_mod.spec_summary(spec))
        _line(f"results: {out}"
              + (f"   optuna: sqlite:///{out / rundir.OPTUNA_DB}" if spec.search != "grid" else "")
              + (f"   W&B: {target.project} ({target.mode})" if target else "   W&B: off"))
        if target is not None and target.note:
            _line(f"W&B: {target.note}")
        tuner = _tuner(spec, out, state, resume, retry_failed)
        t0 = time.monotonic()
        with _quiet_tune(state):
            tuner.fit()
        # Tune catches SIGINT (Ctrl-C) and SIGUSR1, snapshots, then stops every trial
        # (marking it terminated in the ResultGrid fit() returns) and returns as if done.
        # Its last snapshot still says which trials had ended: one that had not means
        # interrupted, and --resume continues it. A time budget ends trials (terminated
        # before the snapshot) and may leave some never started: that sweep has finished.
        statuses = _trial_statuses(state)
        ended = sum(status in ("TERMINATED", "ERROR") for status in statuses)
        never_started = len(statuses) < state["num_trials"] and not spec.time_budget_s
        drivers[-1]["wall_s"] = time.monotonic() - t0
        wall = state.get("driver_wall_s", 0.0) + drivers[-1]["wall_s"]
        if ended < len(statuses) or never_started:
            state.update(status="interrupted", driver_wall_s=wall)
            write_state(out, state)
            _line(f"interrupted with {ended} of {state['num_trials']} trials ended; "
                  "--resume continues it")
            raise KeyboardInterrupt
        _drop_data_cache(experiment_path(state))
        state.update(status="finished", finished=time.time(), driver_wall_s=wall)
        write_state(out, state)
    finally:
        if started:
            import ray

            ray.shutdown()
    return state
