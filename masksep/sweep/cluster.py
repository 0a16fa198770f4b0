"""Ray beyond one process per trial: multi-worker (DDP) trials and ``masksep submit``.

DDP trials (``resources.workers_per_trial > 1``)
------------------------------------------------
Ray 2.60 runs Ray Train inside Ray Tune this way: the Tune trial is only the
driver of a Ray Train run. It asks Tune for no CPU of its own
(:data:`DRIVER_RESOURCES`), starts a ``TorchTrainer`` whose workers each get
``resources.cpus`` / ``gpus`` / ``custom``, and waits for it. Every worker calls :func:`masksep.train.fit`, the
one training loop, which wraps the model in DDP (nccl on GPUs, gloo on CPUs),
shards the training and validation data and all-reduces the metrics, so every
rank reports the same averaged numbers. Rank 0 writes checkpoints.

Where a DDP trial's files are (``TRIAL`` = Tune's trial folder in storage)::

    TRIAL/searched.json config.yaml metrics.jsonl summary.json   copied there by rank 0
    TRIAL/checkpoints/best.pt           the best weights, copied at the end by rank 0
    TRIAL/result.json ...               Ray Tune's own files, fed by the workers' reports
    TRIAL/train/checkpoint_*/last.pt    Ray Train's run: rank 0's checkpoint of each epoch

Fault tolerance: a worker that dies (say its node is lost) makes Ray Train
restart the worker group from the run's last checkpoint (its FailureConfig); a
driver that dies makes Ray Tune retry the trial, and the new TorchTrainer (same
run name, same storage) restores the run from that checkpoint. Either way fit
resumes from ``last.pt``: the epoch in flight is computed again, and so is an
epoch whose report Ray Train had not collected yet (its controller polls the
workers every 2 s, RAY_TRAIN_HEALTH_CHECK_INTERVAL_S): with epochs longer than
that, at most one epoch.

Trial files (both kinds of trial)
---------------------------------
fit writes into a folder on the trial's own node; :class:`TrialFiles` copies
what report.collect reads into the Tune trial's folder in storage (a shared
path, s3:// or gs://), because ``tune.get_context().get_trial_dir()`` is a
folder on the driver's node, which a trial on another node cannot write to.

``masksep submit``
------------------
The sweep's driver runs on the cluster as a Ray job, through the job API that
``ray job submit`` uses: the project folder is the job's working_dir, its pip
dependencies the job's runtime_env, and ``python -m masksep sweep`` the
entrypoint. The logs are followed until the job ends.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masksep.errors import UserError
from masksep.reporting import MultiReporter, Reporter
from masksep.sweep import spec as spec_mod
from masksep.sweep.runner import TuneReporter
from masksep.sweep.spec import SweepSpec

# Each rank's own mean training loss of the epoch, before the all-reduce; the
# Tune result gets them as one list, worker_train_loss, in rank order.
LOCAL_LOSS = "rank_train_loss"
TRAIN_RUN = "train"  # Ray Train's run folder inside the Tune trial folder


# --------------------------------------------------------------------------- trial files, DDP trials


class TrialFolder:
    """The Tune trial's folder in storage (a local path or s3:// / gs://, through
    pyarrow's filesystem), where report.collect reads a trial's files."""

    def __init__(self, filesystem, path: str):
        self.fs = filesystem
        self.path = path.rstrip("/")

    def put_bytes(self, name: str, data: bytes) -> None:
        self._write(name, lambda f: f.write(data))

    def put_file(self, local: Path, name: str | None = None) -> None:
        def copy(f):
            with open(local, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        self._write(name or local.name, copy)

    def _write(self, name: str, write) -> None:
        # Write beside, then move: report.collect may read while a trial runs.
        target = f"{self.path}/{name}"
        parent, _, base = target.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{base}.tmp{os.getpid()}"
        with self.fs.open_output_stream(tmp) as f:
            write(f)
        self.fs.move(tmp, target)


class TrialFiles(Reporter):
    """Copies fit's files from its folder on the trial's node into the Tune trial
    folder in storage as they change: config.yaml and metrics.jsonl from the
    start, metrics.jsonl each epoch, best.pt and summary.json at the end.
    (Tune's get_trial_dir() is a folder on the driver's node, which a trial on
    another node cannot write to.) Under DDP only rank 0's is ``active``."""

    def __init__(self, folder: TrialFolder, active: bool = True):
        self.folder = folder
        self.active = active
        self.run_dir: Path | None = None

    def start(self, info):
        self.run_dir = Path(info["out_dir"])
        if self.active:
            self.folder.put_file(self.run_dir / "config.yaml")
            self.folder.put_file(self.run_dir / "metrics.jsonl")

    def epoch(self, metrics, checkpoint_dir):
        if self.active:
            self.folder.put_file(self.run_dir / "metrics.jsonl")

    def end(self, summary):
        if not self.active:
            return
        best = self.run_dir / "checkpoints" / "best.pt"
        if best.is_file():
            self.folder.put_file(best, "checkpoints/best.pt")
        self.folder.put_file(self.run_dir / "summary.json")


class WorkerReporter(TuneReporter):
    """A Ray Train worker's reports: TuneReporter's, through Ray Train. Every
    rank reports each epoch (Ray Train's report is a barrier), with its own
    training loss beside the all-reduced one; rank 0 adds the checkpoint."""

    def __init__(self, trial_id: str):
        super().__init__({"trial_id": trial_id})
        self.local_loss = math.nan

    def progress(self, epoch, step, n_steps, loss):
        self.local_loss = loss  # this rank's running mean: at the last step, its epoch mean

    def _extra(self) -> dict[str, Any]:
        return {LOCAL_LOSS: self.local_loss}

    def _send(self, result: dict[str, Any], checkpoint_dir: Path | None = None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(result, checkpoint=checkpoint)


def _worker_loop(loop: dict[str, Any]) -> None:
    """One Ray Train worker: the trial config -> train.fit, resumed from the
    run's last checkpoint when Ray Train restarts it."""
    import ray.train

    from masksep.train import fit

    spec: SweepSpec = loop["spec"]
    cfg = spec.trial_config(loop["config"])
    rank = ray.train.get_context().get_world_rank()
    # fit's own folder on this worker's node; what must last goes to storage.
    work = Path(tempfile.mkdtemp(prefix=f"masksep-ddp{rank}-"))
    try:
        resume_from = None
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(str(work / "restore"))
            resume_from = work / "restore" / "last.pt"
        # Files first: summary.json is in storage before Tune hears "final".
        reporter = MultiReporter(TrialFiles(loop["folder"], active=rank == 0),
                                 WorkerReporter(loop["trial_id"]))
        reporter.every_rank = True  # read by train.fit
        fit(cfg, work / "run", reporter, resume_from=resume_from)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tune_forwarder():
    """Ray's TuneReportCallback (it forwards rank 0's result to the Tune trial),
    plus every rank's own training loss as one list."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class ForwardToTune(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            result = {k: v for k, v in metrics[0].items() if k != LOCAL_LOSS}
            local = [m.get(LOCAL_LOSS) for m in metrics]
            if not result.get("final") and all(isinstance(v, (int, float)) for v in local):
                result["worker_train_loss"] = local
            super().after_report(run_context, [result], checkpoint)

    return ForwardToTune()


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

    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    storage = ctx.get_storage()  # DeveloperAPI: the trial folder in storage, and its filesystem
    folder = TrialFolder(storage.storage_filesystem, storage.trial_fs_path)
    searched = spec_mod.searched_params(config)
    folder.put_bytes("searched.json", (json.dumps(searched, indent=2) + "\n").encode())

    r = spec.resources
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"spec": spec, "config": config, "trial_id": trial_id, "folder": folder},
        torch_config=TorchConfig(backend="nccl" if r.gpus else "gloo"),
        scaling_config=train.ScalingConfig(
            num_workers=r.workers_per_trial, use_gpu=r.gpus > 0,
            resources_per_worker=worker_resources(spec)),
        run_config=train.RunConfig(
            # A fixed name in the trial's own folder: a retried trial finds the
            # run and its last checkpoint there (Ray Train restores by name).
            name=TRAIN_RUN,
            storage_path=storage.trial_fs_path,
            storage_filesystem=storage.storage_filesystem,
            failure_config=train.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=train.CheckpointConfig(num_to_keep=1),
            callbacks=[_tune_forwarder()],
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


# --------------------------------------------------------------------------- masksep submit

# Never uploaded with the project: environments, VCS data, local results and
# checkpoints. The project's .gitignore applies too (Ray reads it).
UPLOAD_EXCLUDES = [
    ".venv", "venv", ".git", "runs", "wandb", "__pycache__", "*.pyc", "*.egg-info",
    ".pytest_cache", ".ruff_cache", "results/*/ray", "results/*/wandb", "*.pt",
]
JOB_SPEC_DIR = ".masksep-jobs"  # in the job's working_dir, on the head
CONNECT_TIMEOUT_S = 10.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def project_root() -> Path:
    """The source checkout masksep runs from: what a job uploads as working_dir."""
    root = Path(__file__).resolve().parents[2]
    if not ((root / "pyproject.toml").is_file() and (root / "masksep").is_dir()):
        raise UserError(f"masksep submit uploads the project folder, but masksep runs from "
                        f"{root}, not a source checkout; run it from a clone (pip install -e .)")
    return root


def pip_requirements(root: Path) -> list[str]:
    """The project's dependencies from pyproject.toml, less Ray: a job must use
    the cluster's own Ray (a second one in the job's virtualenv breaks it)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from importlib import metadata

        deps = [r for r in metadata.requires("masksep") or [] if "extra ==" not in r]
    else:
        with open(root / "pyproject.toml", "rb") as f:
            deps = list(tomllib.load(f)["project"]["dependencies"])
    return [d for d in deps if _requirement_name(d) != "ray"]


def _requirement_name(requirement: str) -> str:
    name = requirement.strip()
    for stop in "[<>=!~; ":
        name = name.split(stop, 1)[0]
    return name.lower().replace("_", "-")


def job_spec_yaml(spec: SweepSpec) -> str:
    """The spec as one self-contained YAML: its base trial configs inlined, so
    nothing it names by path has to exist on the head."""
    import yaml

    from masksep import config as config_mod

    raw = config_mod.read_yaml(spec.path)
    raw["name"] = spec.name
    if "bases" in raw:
        raw["bases"] = {key: config_mod.to_dict(cfg) for key, cfg in spec.bases.items()}
    else:
        raw["base"] = config_mod.to_dict(next(iter(spec.bases.values())))
    return yaml.safe_dump(raw, sort_keys=False)


def job_entrypoint(spec: SweepSpec, out: str, submission_id: str, *, resume: bool = False,
                   use_wandb: bool = True, storage_path: str | None = None) -> tuple[str, str]:
    """(entrypoint, what to show): the shell command writes the self-contained
    spec into the job's working_dir, then runs ``python -m masksep sweep`` on it
    (``-m`` imports the uploaded masksep, whatever the cluster has installed)."""
    spec_file = f"{JOB_SPEC_DIR}/{submission_id}.yaml"
    command = ["python", "-m", "masksep", "sweep", spec_file, "--out", out]
    if resume:
        command.append("--resume")
    if not use_wandb:
        command.append("--no-wandb")
    if storage_path:
        command += ["--storage-path", storage_path]
    text = job_spec_yaml(spec)
    tag = "MASKSEP_SPEC_" + uuid.uuid4().hex[:8].upper()
    shown = shlex.join(command)
    entrypoint = (f"mkdir -p {JOB_SPEC_DIR} && cat > {shlex.quote(spec_file)} << '{tag}'\n"
                  f"{text.rstrip()}\n{tag}\n{shown}")
    return entrypoint, shown


def dashboard_url(address: str) -> str:
    """``HOST:PORT`` means the dashboard here (Ray would read it as a GCS address
    and look the dashboard up, which can hang on a wrong port)."""
    return address if "://" in address else f"http://{address}"


def _check_reachable(url: str) -> None:
    """Fail fast and clearly (the job client has no timeouts): resolve the host,
    connect, and ask for /api/version, which a Ray dashboard answers (or
    refuses with 401/403 when it wants a token the job client then sends)."""
    from urllib.parse import urlsplit

    import requests

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return  # ray://, anyscale:// ...: left to Ray
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UserError(f"--address {url}: not a valid port") from None
    where = f"{parts.hostname}:{port}"
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except socket.gaierror:
        raise UserError(f"--address {url}: cannot resolve the host name {parts.hostname!r}") from None
    except ConnectionRefusedError:
        raise UserError(f"--address {url}: connection refused at {where} (is the Ray "
                        f"dashboard running there? ray start --head serves it on port 8265)") from None
    except TimeoutError:
        raise UserError(f"--address {url}: no answer from {where} within "
                        f"{CONNECT_TIMEOUT_S:g} s (head down, or a firewall?)") from None
    except OSError as exc:
        raise UserError(f"--address {url}: cannot reach {where} ({exc.strerror or exc})") from None
    not_dashboard = (f"--address {url}: {where} answers, but not as a Ray dashboard "
                     f"(the dashboard's port is 8265 unless --dashboard-port says otherwise)")
    try:
        reply = requests.get(f"{url.rstrip('/')}/api/version", timeout=CONNECT_TIMEOUT_S)
    except requests.RequestException:
        raise UserError(not_dashboard) from None
    if reply.status_code in (401, 403):
        return
    try:
        ok = reply.status_code == 200 and "ray_version" in reply.json()
    except ValueError:
        ok = False
    if not ok:
        raise UserError(not_dashboard)


def _token_hint() -> str:
    return ("set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, "
            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (cluster/README.md)")


def _explain(exc: BaseException) -> str:
    """One line for a job-API failure: token problems first, then the root cause."""
    from ray.exceptions import AuthenticationError

    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, AuthenticationError):
            text = str(e)
            if "Authentication required" in text or "401" in text:
                return f"the cluster needs a Ray auth token and got none (401): {_token_hint()}"
            return f"the cluster refused the Ray auth token (403): {_token_hint()}"
        if isinstance(e, socket.gaierror):
            return "cannot resolve the host name"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused (is the Ray dashboard running there?)"
        todo += [c for c in (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
                 if isinstance(c, BaseException)]
    lines = str(exc).strip().splitlines()
    return (lines[0][:200] if lines else type(exc).__name__).rstrip(".")


def _job_client(url: str):
    from ray.job_submission import JobSubmissionClient

    _check_reachable(url)
    try:
        return JobSubmissionClient(url)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types; one line for the user
        raise UserError(f"--address {url}: {_explain(exc)}") from None


def _status(client, submission_id: str):
    info = client.get_job_info(submission_id)
    return str(info.status), info.message


async def _follow_logs(client, submission_id: str) -> None:
    async for chunk in client.tail_job_logs(submission_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()


@dataclass
class Job:
    submission_id: str
    entrypoint: str
    shown: str  # the sweep command, without the spec it carries
    runtime_env: dict[str, Any]
    metadata: dict[str, str]


def prepare_job(
    spec_path: str | Path,
    out: str,
    *,
    storage_path: str | None = None,
    resume: bool = False,
    use_wandb: bool = True,
    pip: bool = True,
    forward_wandb_key: bool = False,
    env: list[str] | tuple = (),
) -> Job:
    """Everything ``masksep submit`` sends, checked before anything is sent."""
    spec = spec_mod.load_spec(spec_path)  # a bad spec fails here, not on the cluster
    if not os.path.isabs(out):
        raise UserError(f"--out {out}: give an absolute path on the head node (a relative one "
                        f"would land in the job's temporary working directory)")
    if storage_path and "://" not in storage_path and not os.path.isabs(storage_path):
        raise UserError(f"--storage-path {storage_path}: give a URI (s3://, gs://) or an "
                        f"absolute path that every node sees")
    env_vars = {"PYTHONUNBUFFERED": "1"}
    for item in env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--env {item}: expected KEY=VALUE")
        if key == "WANDB_API_KEY":
            raise UserError("--env WANDB_API_KEY: use --forward-wandb-key (and read its help first)")
        env_vars[key] = value
    if forward_wandb_key:
        key = os.environ.get("WANDB_API_KEY", "")
        if not key:
            raise UserError("--forward-wandb-key: WANDB_API_KEY is not set in this shell")
        env_vars["WANDB_API_KEY"] = key

    root = project_root()
    runtime_env: dict[str, Any] = {"working_dir": str(root), "excludes": list(UPLOAD_EXCLUDES),
                                   "env_vars": env_vars}
    if pip:
        runtime_env["pip"] = pip_requirements(root)
    submission_id = f"masksep-{spec.name}-{uuid.uuid4().hex[:8]}"
    entrypoint, shown = job_entrypoint(spec, out, submission_id, resume=resume,
                                       use_wandb=use_wandb, storage_path=storage_path)
    return Job(submission_id, entrypoint, shown, runtime_env,
               metadata={"masksep_sweep": spec.name, "out": out})


def submit(spec_path: str | Path, address: str | None, out: str, *, wait: bool = True,
           **job_options: Any) -> int:
    """Submit ``masksep sweep`` as a Ray job and follow its logs (unless ``wait``
    is False). Returns the exit code: 0 SUCCEEDED (or submitted, with no wait),
    1 FAILED or STOPPED. ``job_options`` go to :func:`prepare_job`."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS", "")
    if not address:
        raise UserError("--address: give the Ray dashboard's address, e.g. http://HEAD:8265 "
                        "(or set RAY_API_SERVER_ADDRESS)")
    job = prepare_job(spec_path, out, **job_options)
    address = dashboard_url(address)
    client = _job_client(address)
    try:
        client.submit_job(entrypoint=job.entrypoint, runtime_env=job.runtime_env,
                          submission_id=job.submission_id, metadata=job.metadata)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"--address {address}: the job was not submitted ({_explain(exc)})") from None
    sid, err = job.submission_id, sys.stderr
    print(f"masksep: submitted job {sid} to {address}: {job.shown}", file=err, flush=True)
    stop = f"ray job stop --address {address} {sid}"
    if not wait:
        print(f"masksep: follow it with: ray job logs --address {address} --follow {sid}", file=err)
        print(f"masksep: stop it with: {stop}", file=err)
        print(sid)
        return 0

    try:
        asyncio.run(_follow_logs(client, sid))
        status, message = _status(client, sid)
        deadline = time.monotonic() + 60  # the log stream may close just before the status flips
        while status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(1.0)
            status, message = _status(client, sid)
    except KeyboardInterrupt:
        print(f"\nmasksep: stopped following; the job goes on. Stop it with: {stop}", file=err)
        return 130
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"--address {address}: lost the job {sid} ({_explain(exc)}); "
                        f"it may still run: ray job status --address {address} {sid}") from None
    if status == "SUCCEEDED":
        print(f"masksep: job {sid} SUCCEEDED", file=err)
        return 0
    why = f": {' '.join(str(message).split())[:300]}" if message else ""
    print(f"masksep: job {sid} {status}{why}", file=err)
    return 1
