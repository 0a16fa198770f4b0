"""Multi-worker (DDP) trials: ``resources.workers_per_trial > 1``.

Ray 2.60 runs Ray Train inside Ray Tune this way: the Tune trial is only the
driver of a Ray Train run. It asks Tune for no CPU of its own
(:data:`DRIVER_RESOURCES`), starts a ``TorchTrainer`` whose workers each get
``resources.cpus`` / ``gpus`` / ``custom``, and waits for it. Every worker calls
:func:`masksep.train.fit`, the one training loop, with its explicit
:class:`masksep.parallel.Dist` (rank, world size): fit wraps the model in DDP
(nccl on GPUs, gloo on CPUs), shards the training and validation data and
all-reduces the metrics, so every rank reports the same averaged numbers.

State lives where it does for a one-process trial (masksep/sweep/trial.py):
in the Tune trial's folder in storage. Rank 0 writes checkpoints/last.pt there
every epoch; Ray Train keeps no checkpoint of ours. Fault tolerance: a worker
that dies (say its node is lost) makes Ray Train restart the worker group (its
FailureConfig), and a driver that dies makes Ray Tune retry the trial; either
way every rank of the new group reads last.pt from the trial folder and
resumes there: the epoch in flight is computed again, no finished epoch is.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from masksep.sweep.callbacks import LOCAL_LOSS, ForwardToTune
from masksep.sweep.spec import SweepSpec
from masksep.sweep.trial import LAST, SUMMARY, TrialFolder, TuneReporter, describe, trial_reporters

TRAIN_RUN = "train"  # Ray Train's run folder inside the Tune trial folder


class WorkerReporter(TuneReporter):
    """A Ray Train worker's reports: TuneReporter's, through Ray Train. Every
    rank reports each epoch (Ray Train's report is a barrier), with its own
    training loss beside the all-reduced one."""

    def __init__(self, trial_id: str):
        super().__init__({"trial_id": trial_id})
        self.local_loss = math.nan

    def progress(self, epoch, step, n_steps, loss):
        self.local_loss = loss  # this rank's running mean: at the last step, its epoch mean

    def _extra(self) -> dict[str, Any]:
        return {LOCAL_LOSS: self.local_loss}

    def _send(self, result: dict[str, Any]) -> None:
        import ray.train

        ray.train.report(result)


def _worker_loop(loop: dict[str, Any]) -> None:
    """One Ray Train worker: the trial config -> train.fit, resumed from the
    trial folder's last.pt whenever the worker group (re)starts."""
    from masksep.parallel import Dist
    from masksep.train import fit

    spec: SweepSpec = loop["spec"]
    folder: TrialFolder = loop["folder"]
    cfg = spec.trial_config(loop["config"])
    dist = Dist.from_process_group()
    # fit's own folder on this worker's node; what must last goes to storage.
    work = Path(tempfile.mkdtemp(prefix=f"masksep-ddp{dist.rank}-"))
    try:
        resume_from = folder.fetch(LAST, work / "restore" / PurePosixPath(LAST).name)
        reporter = trial_reporters(folder, loop["trial_id"], WorkerReporter(loop["trial_id"]))
        fit(cfg, work / "run", reporter, resume_from=resume_from, dist=dist)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def worker_resources(spec: SweepSpec) -> dict[str, float]:
    r = spec.resources
    per_worker = {"CPU": r.cpus, **r.custom}
    if r.gpus:
        per_worker["GPU"] = r.gpus
    return per_worker


def run_ddp_trial(config: dict[str, Any], spec: SweepSpec) -> None:
    """The Ray Tune trainable for workers_per_trial > 1: drives one Ray Train run."""
    from ray import train, tune
    from ray.train.torch import TorchConfig, TorchTrainer

    trial_id = tune.get_context().get_trial_id()
    folder = TrialFolder.of_this_trial()
    summary = folder.read_json(SUMMARY)
    if summary is not None:  # finished before the driver restarted
        TuneReporter({"trial_id": trial_id}).end(summary)
        return
    if folder.read_bytes(LAST) is None:
        describe(folder, spec, config)
    storage = tune.get_context().get_storage()
    r = spec.resources
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"spec": spec, "config": config, "trial_id": trial_id, "folder": folder},
        torch_config=TorchConfig(backend="nccl" if r.gpus else "gloo"),
        scaling_config=train.ScalingConfig(
            num_workers=r.workers_per_trial, use_gpu=r.gpus > 0,
            resources_per_worker=worker_resources(spec)),
        run_config=train.RunConfig(
            name=TRAIN_RUN,
            storage_path=storage.trial_fs_path,
            storage_filesystem=storage.storage_filesystem,
            failure_config=train.FailureConfig(max_failures=spec.max_failures),
            callbacks=[ForwardToTune()],
        ),
    )
    trainer.fit()


# The Tune trial only waits on Ray Train: it takes no CPU (even 0.01 CPU would
# leave 2 one-CPU workers waiting forever on a 2-CPU machine), and Tune wants
# some resource in a trial's request, so it names the memory the process needs.
DRIVER_RESOURCES = {"cpu": 0, "memory": 256 * 1024**2}


def ddp_trainable(spec: SweepSpec):
    """run_ddp_trial with its resources: DRIVER_RESOURCES for the Tune trial,
    resources.* for each of the workers_per_trial Ray Train workers."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_ddp_trial, spec=spec), DRIVER_RESOURCES)
