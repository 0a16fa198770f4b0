"""One trial of a sweep: the Ray Tune trainable, and the trial's folder in storage.

The trial's folder in storage (Tune's trial folder: a local path, a shared
folder or s3:// / gs://) is the one source of truth for its progress::

    searched.json config.yaml      what the trial is
    metrics.jsonl                  a line per finished epoch
    checkpoints/last.pt            every epoch, written whole (it carries the best weights too)
    checkpoints/best.pt            at the end: the best epoch's checkpoint, for eval and separate
    summary.json                   at the end: the test metrics of the best weights
    attempts.json                  every start of the trial: where, from which epoch, and
                                   the epochs it finished (a finished epoch is never trained twice)

A trial that starts (first time, retried after a failure or a lost node, or
restarted after a driver resume) reads that folder: with a summary.json it
re-sends its final result and returns, without training or writing anything;
with a last.pt it resumes from it; otherwise it starts from scratch. Tune holds
no checkpoint of ours, so it can never delete one before its snapshot names the
next, and no second store has to agree with the folder after a kill.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any

from masksep import rundir
from masksep.progress import MultiReporter, Reporter
from masksep.sweep.spec import FINAL_KEYS, SweepSpec

LAST, BEST, SUMMARY, ATTEMPTS = rundir.LAST, rundir.BEST, rundir.SUMMARY, rundir.ATTEMPTS


class TrialFolder(rundir.Store):
    """The Tune trial's folder in storage (masksep/rundir.py's Store)."""

    @classmethod
    def of_this_trial(cls) -> TrialFolder:
        from ray import tune

        storage = tune.get_context().get_storage()  # DeveloperAPI: the folder and its filesystem
        return cls(storage.storage_filesystem, storage.trial_fs_path)


class TrialFiles(Reporter):
    """Copies fit's files from its folder on the trial's node into the trial
    folder in storage as they change: config.yaml and metrics.jsonl at the start,
    last.pt then metrics.jsonl every epoch, best.pt and summary.json at the end,
    and keeps attempts.json. Rank 0 alone writes (``info["rank"]``)."""

    def __init__(self, folder: TrialFolder):
        self.folder = folder
        self.run_dir: Path | None = None
        self.active = True
        self.attempts: list[dict[str, Any]] = []

    def start(self, info):
        self.run_dir = Path(info["out_dir"])
        self.active = info.get("rank", 0) == 0
        if self.active:
            self.folder.put_file(self.run_dir / rundir.CONFIG)
            self.folder.put_file(self.run_dir / rundir.METRICS)
            earlier = self.folder.read_json(ATTEMPTS)
            self.attempts = [*(earlier if isinstance(earlier, list) else []), {
                "attempt": len(earlier or []) + 1, "host": socket.gethostname(), "pid": os.getpid(),
                "started": time.time(), "start_epoch": info["start_epoch"], "epochs": []}]
            self._put_attempts()

    def epoch(self, metrics, checkpoint_dir):
        if self.active:
            self.folder.put_file(self.run_dir / LAST, LAST)
            self.folder.put_file(self.run_dir / rundir.METRICS)
            # After last.pt: an epoch listed here is one a restart will not train again.
            self.attempts[-1]["epochs"].append(metrics["epoch"])
            self._put_attempts()

    def _put_attempts(self) -> None:
        self.folder.put_bytes(ATTEMPTS, (json.dumps(self.attempts, indent=1) + "\n").encode())

    def end(self, summary):
        if not self.active:
            return
        if (self.run_dir / BEST).is_file():
            self.folder.put_file(self.run_dir / BEST, BEST)
        self.folder.put_file(self.run_dir / SUMMARY)


class TuneReporter(Reporter):
    """Every epoch to Ray Tune, and the test metrics as one more, final report.
    Results carry no checkpoint: progress lives in the trial folder."""

    def __init__(self, static: dict[str, Any] | None = None):
        self.static = dict(static or {})
        self.last: dict[str, Any] = {}

    def start(self, info):
        self.static.update(info["complexity"])

    def epoch(self, metrics, checkpoint_dir):
        self.last = {**self.static, **metrics}
        self._send({**self.last, **self._extra()})

    def end(self, summary):
        self._send(final_result(summary, {**self.static, **self.last}))

    def _extra(self) -> dict[str, Any]:
        """More keys for each epoch's report."""
        return {}

    def _send(self, result: dict[str, Any]) -> None:
        from ray import tune

        tune.report(result)


def final_result(summary: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """The final report: the objective and test metrics, and the trial's own epoch
    (ASHA's time attribute; a trial resumed after its last epoch reports no epoch
    before this one)."""
    final = {k: summary[k] for k in FINAL_KEYS}
    complexity = {k: summary[k] for k in rundir.COMPLEXITY_KEYS
                  if k in summary}
    return {**complexity, **last, **final, "epoch": summary["epochs"], "final": True}


def trial_reporters(folder: TrialFolder, trial_id: str, tune_reporter: Reporter) -> Reporter:
    """Files first, so that what Tune hears is already in storage."""
    from masksep.testing import fault_point

    fault = fault_point(trial_id)  # None unless a fault test asked for one
    return MultiReporter(*[r for r in (TrialFiles(folder), fault, tune_reporter) if r is not None])


def describe(folder: TrialFolder, spec: SweepSpec, config: dict[str, Any]) -> None:
    """searched.json and config.yaml before training, so that the report can
    describe a trial that fails early."""
    from masksep import config as config_mod

    folder.put_bytes(rundir.SEARCHED, (json.dumps(spec.searched(config), indent=2) + "\n").encode())
    folder.put_bytes(rundir.CONFIG, config_mod.to_yaml(spec.trial_config(config)).encode())


DATA_CACHE = rundir.DATA_CACHE


def data_cache_dir(storage) -> Path:
    """Where a sweep's trials share their data: the experiment folder when the
    storage is a path (on a cluster, one every node sees), else a folder of
    this node (cloud storage cannot be mapped)."""
    if storage.storage_filesystem.type_name == "local":
        return Path(storage.experiment_fs_path) / DATA_CACHE
    return Path(tempfile.gettempdir()) / "masksep-data-cache" / Path(storage.experiment_fs_path).name


def run_trial(config: dict[str, Any], spec: SweepSpec) -> None:
    """The Ray Tune trainable: one point of the search space -> train.fit."""
    from ray import tune

    from masksep.train import fit

    folder = TrialFolder.of_this_trial()
    tune_reporter = TuneReporter({"trial_id": tune.get_context().get_trial_id()})
    summary = folder.read_json(SUMMARY)
    if summary is not None:  # it finished before the driver restarted: say so again, nothing more
        tune_reporter.end(summary)
        return
    cfg = spec.trial_config(config)  # train.threads = the CPUs Ray gave this trial
    run_dir = Path(tune.get_context().get_storage().trial_working_directory)
    restore = Path(tempfile.mkdtemp(prefix="masksep-restore-"))
    try:
        resume_from = folder.fetch(LAST, restore / PurePosixPath(LAST).name)
        if resume_from is None:
            describe(folder, spec, config)
        reporter = trial_reporters(folder, tune.get_context().get_trial_id(), tune_reporter)
        cache = data_cache_dir(tune.get_context().get_storage()) if spec.data_cache else None
        fit(cfg, run_dir, reporter, resume_from=resume_from, data_cache=cache)
    finally:
        shutil.rmtree(restore, ignore_errors=True)
