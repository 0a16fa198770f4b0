"""The one training loop: ``fit(cfg, out_dir, reporter)``.

``masksep train``, the Ray Tune trainable and the Ray Train (DDP) worker all call
:func:`fit`; none of them owns a second loop. It reads as its steps::

    run = setup(...)                  model, optimizer, data, device, threads
    progress = restore(...)           from a checkpoint, or a fresh start
    while epochs are left:
        train_epoch -> evaluate (validation) -> progress.record -> save -> reporter.epoch
    test(...)                         the best weights on the test split -> summary.json

A checkpoint (``checkpoints/last.pt``) carries everything a resume needs: the
weights, the optimizer, scheduler and scaler, the epoch, the history, and the
best weights with their epoch, so a run resumed anywhere (another node, after a
driver restart) is tested on its best weights. ``best.pt`` holds the best
weights alone with their config, for ``masksep eval``, ``separate`` and ``analyze``.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from masksep import config as config_mod
from masksep import cpu, rundir
from masksep.complexity import count_complexity
from masksep.config import Config
from masksep.data import build_dataset
from masksep.data.cache import CachedMixtures
from masksep.errors import UserError
from masksep.files import append_line, atomic_write, make_folder
from masksep.losses import most_common_grouping, og_assign, separation_loss
from masksep.metrics import evaluate as evaluate_batch
from masksep.models.separator import Separator, build_model
from masksep.parallel import SINGLE, Dist
from masksep.progress import Reporter

CHECKPOINT_FORMAT = "masksep-checkpoint-1"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. Not a user error: the trial failed."""


# --------------------------------------------------------------------------- environment


def setup_threads(requested: int = 0, flag: str = "--threads") -> int:
    """Torch threads for evaluation and inference: ``requested``, else MASKSEP_THREADS,
    else the CPUs this process was given (training adapts them: masksep/cpu.py).
    Also keeps freed memory for reuse (:func:`masksep.cpu.keep_freed_memory`).
    ``requested`` past the machine's CPUs is refused (``flag`` names it): more
    threads than cores only wait at torch's barriers, and torch crashes on huge counts."""
    most = os.cpu_count() or 1
    if not 0 <= requested <= most:
        raise UserError(f"{flag}: must be between 0 (the CPUs given) and {most} (this "
                        f"machine's CPUs), got {requested}")
    cpu.keep_freed_memory()
    return cpu.ThreadGovernor(requested).threads


def pick_device(kind: str, dist: Dist = SINGLE) -> torch.device:
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda was asked for but no CUDA device is available")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    return dist.device(kind)


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- files


# What a checkpoint holds: every one (best.pt too), and what a resume also needs (last.pt).
CHECKPOINT_KEYS = ("format", "config", "model")
RESUME_KEYS = ("optimizer", "scheduler", "scaler", "epoch", "best_val", "best_epoch",
               "bad_epochs", "history")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    resume: bool = False) -> dict:
    """Load a masksep checkpoint (weights_only); a bad file is one UserError line.
    ``resume``: it must also hold what a resume needs (a last.pt, not a best.pt)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        reason = str(exc).splitlines()[0][:120] if str(exc) else exc.__class__.__name__
        raise UserError(f"{path}: not a readable checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a masksep checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    missing = [k for k in CHECKPOINT_KEYS + (RESUME_KEYS if resume else ()) if k not in ckpt]
    if missing:
        hint = ""
        if resume and all(k in ckpt for k in CHECKPOINT_KEYS):
            hint = ("; it holds weights only, as best.pt does: a resume needs the last.pt "
                    "its run wrote")
        raise UserError(f"{path}: not a complete checkpoint{' to resume from' if resume else ''}: "
                        f"no {', '.join(missing)}{hint}")
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model"], dict):
        raise UserError(f"{path}: not a masksep checkpoint (its config or model is not a mapping)")
    return ckpt


def check_weights(model: torch.nn.Module, weights: dict, source: str, what: str = "model") -> None:
    """``weights`` fit ``model`` name for name and shape for shape; else one line
    naming the first weight that is missing, extra or of another shape."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    if missing or extra:
        keys, kind = (missing, "no") if missing else (extra, "an unknown")
        more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
        raise UserError(f"{source}: weights do not fit the model its config builds: {kind} {what} "
                        f"weight {keys[0]}{more}")
    for key, mine in own.items():
        theirs = weights[key]
        shape = tuple(theirs.shape) if isinstance(theirs, torch.Tensor) else None
        if shape != tuple(mine.shape):
            got = "not a tensor" if shape is None else f"shape {shape}"
            raise UserError(f"{source}: weights do not fit the model its config builds: {what} "
                            f"weight {key} is {got} in the checkpoint, shape {tuple(mine.shape)} "
                            "in the model")


def _check_optimizer_state(model: torch.nn.Module, state: Any, source: str) -> None:
    """Adam's per-parameter state has its parameter's shape (torch checks only the counts)."""
    named = list(model.named_parameters())
    try:
        ids = [i for group in state["param_groups"] for i in group["params"]]
        per_param = state["state"]
        if not isinstance(per_param, dict):
            raise TypeError
    except (KeyError, TypeError):
        raise UserError(f"{source}: its optimizer state is not an optimizer's (no param_groups "
                        "or state)") from None
    if len(ids) != len(named):
        raise UserError(f"{source}: its optimizer state holds {len(ids)} parameters, the model "
                        f"its config builds {len(named)}")
    for index, (name, param) in zip(ids, named, strict=True):
        for key, value in (per_param.get(index) or {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise UserError(f"{source}: optimizer state {key} of {name} has shape "
                                f"{tuple(value.shape)} in the checkpoint, shape "
                                f"{tuple(param.shape)} in the model")


def initial_model(cfg: Config) -> Separator:
    """The separator ``cfg`` describes, with the initial weights its seed gives.

    Common random numbers: the front end and the backbone are built first, so
    every head variant trained with one seed starts from the same backbone
    weights (the head's own draws come after them)."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    return build_model(cfg)


def model_from_checkpoint(ckpt: dict, source: str = "checkpoint") -> tuple[Config, Separator]:
    """Rebuild the separator a checkpoint was trained as, with its weights."""
    cfg = config_mod.from_dict(ckpt["config"], source)
    model = build_model(cfg)
    check_weights(model, ckpt["model"], source)
    model.load_state_dict(ckpt["model"])
    return cfg, model


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: Separator,
    dataset: Dataset,
    device: torch.device,
    batch_size: int = 1,
    with_sdr: bool = False,
    dist: Dist = SINGLE,
    extra: tuple[str, ...] = (),
    sample_rate: int | None = None,
    grouping: torch.Tensor | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Mean and per-item metrics of ``model`` on ``dataset``.

    An og head with oracle grouping is scored with the best assignment of its
    outputs against the references, or, given ``grouping``, with that fixed
    grouping (no references; :func:`validation_grouping`).

    Items of different lengths are evaluated one at a time; data sets that
    declare ``fixed_length = True`` are batched. Under DDP each rank takes its
    shard of the items and the sums are all-reduced. Rows carry ``name`` too
    when the data set has ``item_name(i)`` (a file's mixture ID). ``extra`` adds
    metrics of :data:`masksep.metrics.EXTRA_METRICS` (SIR, SAR, PESQ, STOI).
    """
    batch = batch_size if getattr(dataset, "fixed_length", False) else 1
    indices = dist.shard(list(range(len(dataset))))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch, shuffle=False)
    keys = ("si_snr", "si_snri", "sdr", "sdri") if with_sdr else ("si_snr", "si_snri")
    keys += tuple(extra)
    item_name = getattr(dataset, "item_name", None)
    rows: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for mix, ref in loader:
            mix, ref = mix.to(device), ref.to(device)
            est = model(mix).float()
            scores = evaluate_batch(est, ref, mix, model.oracle_grouping, with_sdr=with_sdr,
                                    extra=extra, sample_rate=sample_rate, grouping=grouping)
            for b in range(mix.shape[0]):
                row: dict[str, Any] = {k: float(scores[k][b]) for k in keys}
                if item_name is not None:
                    row = {"name": item_name(indices[len(rows)]), **row}
                rows.append(row)
    model.train(was_training)
    totals = dist.all_reduce_sum([len(rows)] + [sum(r[k] for r in rows) for k in keys], device)
    count = max(totals[0], 1)
    means = {k: totals[i + 1] / count for i, k in enumerate(keys)}
    return means, rows


def validation_grouping(model: Separator, dataset: Dataset, device: torch.device,
                        batch_size: int = 1, dist: Dist = SINGLE) -> torch.LongTensor | None:
    """The reference-free grouping of an og head trained with oracle grouping:
    the assignment of its P outputs to the C sources that og_assign found best
    most often over ``dataset`` (validation), fixed for test. None for any
    other head. Under DDP every rank counts the whole set (the same answer)."""
    if not model.oracle_grouping:
        return None
    batch = batch_size if getattr(dataset, "fixed_length", False) else 1
    assigns = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for mix, ref in DataLoader(dataset, batch_size=batch, shuffle=False):
            est = model(mix.to(device)).float()
            assigns.extend(og_assign(est, ref.to(device)).cpu())
    model.train(was_training)
    return most_common_grouping(assigns)


# --------------------------------------------------------------------------- the run's parts


@dataclass
class Run:
    """What one training run is made of, built once by :func:`setup`."""

    cfg: Config
    out_dir: Path
    dist: Dist
    device: torch.device
    threads: int  # torch threads at the start (the governor may lower them under load)
    workers: int  # DataLoader worker processes for the training data
    governor: cpu.ThreadGovernor
    model: Separator
    net: torch.nn.Module  # the model, wrapped for DDP when there are several ranks
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    use_amp: bool
    complexity: dict[str, int]
    train_set: Dataset
    valid_set: Dataset
    data_cache: Path | None = None  # where data made on the fly is shared (masksep/data/cache.py)
    test_set: Dataset | None = None  # built on first use (a milestone, or the end)

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / rundir.CHECKPOINTS


@dataclass
class Progress:
    """Where training stands: everything a checkpoint carries besides the
    model, optimizer, scheduler and scaler states."""

    epoch: int = 0  # the last finished epoch
    best_val: float = -math.inf
    best_epoch: int = 0
    best_model: dict | None = None  # the weights of best_epoch
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0  # training time of the earlier sessions of this run
    train_steps: int = 0
    train_audio_s: float = 0.0  # seconds of training audio processed (all ranks)
    milestones: list[dict[str, Any]] = field(default_factory=list)  # test scores at train.milestones

    def patience_spent(self, cfg: Config) -> bool:
        return bool(cfg.train.early_stop) and self.bad_epochs >= cfg.train.early_stop

    def record(self, run: Run, metrics: dict[str, Any], val_si_snri: float) -> bool:
        """An epoch's metrics: best weights, plateau count and LR schedule. True if it improved."""
        improved = val_si_snri > self.best_val
        if improved:
            self.best_val, self.best_epoch, self.bad_epochs = val_si_snri, metrics["epoch"], 0
            self.best_model = copy.deepcopy(run.model.state_dict())
        else:
            self.bad_epochs += 1
        run.scheduler.step(val_si_snri)
        metrics.update(best_val_si_snri=self.best_val, lr=run.optimizer.param_groups[0]["lr"])
        self.epoch = metrics["epoch"]
        self.history.append(metrics)
        return improved


def _autocast(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def setup(cfg: Config, out_dir: Path, dist: Dist, data_cache: Path | None = None) -> Run:
    cpu.keep_freed_memory()  # no page faults for each step's fresh memory (masksep/cpu.py)
    fixed = cpu.fixed_threads(cfg.train.threads)  # the CPUs the run may use, if fixed
    train_set = build_dataset(cfg, "train", data_cache)
    # A cached item is a copy out of a mapped file: a worker process would only cost a CPU.
    cached = isinstance(train_set, CachedMixtures) and cfg.data.num_workers < 0
    threads, workers = cpu.plan(fixed or cpu.cpus_given(), 0 if cached else cfg.data.num_workers)
    governor = cpu.ThreadGovernor(limit=threads, adapt=not fixed)
    config_mod.check_milestones(cfg, config_mod.steps_per_epoch(cfg, len(train_set) // dist.world_size))
    device = pick_device(cfg.train.device, dist)
    model = initial_model(cfg)
    complexity = count_complexity(model, cfg.sample_rate)
    model.to(device)
    # fused: one kernel for all parameters (0.7 ms against 6.8 ms a step for
    # tcn-deep on one CPU thread), the same update within float rounding.
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr,
                                 weight_decay=cfg.train.weight_decay, fused=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=cfg.train.plateau_patience)
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    return Run(cfg, out_dir, dist, device, threads, workers, governor, model,
               dist.wrap(model, device), optimizer,
               scheduler, scaler, use_amp, complexity,
               train_set, build_dataset(cfg, "valid", data_cache), data_cache)


def restore(run: Run, source: str | Path) -> Progress:
    """Load ``source`` (a last.pt) into the run's parts; its progress."""
    ckpt = load_checkpoint(source, map_location=run.device, resume=True)
    _check_resumable(run.cfg, ckpt, str(source))
    check_weights(run.model, ckpt["model"], str(source))
    if ckpt.get("best_model") is not None:
        check_weights(run.model, ckpt["best_model"], str(source), "best")
    _check_optimizer_state(run.model, ckpt["optimizer"], str(source))
    run.model.load_state_dict(ckpt["model"])
    for part in ("optimizer", "scheduler", "scaler"):
        try:
            getattr(run, part).load_state_dict(ckpt[part])
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as exc:
            first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:160]
            raise UserError(f"{source}: its {part} state does not load ({first})") from None
    return Progress(
        epoch=ckpt["epoch"], best_val=ckpt["best_val"], best_epoch=ckpt["best_epoch"],
        # checkpoints from before best weights travelled in last.pt: the last weights
        best_model=ckpt.get("best_model", ckpt["model"]), bad_epochs=ckpt["bad_epochs"],
        history=list(ckpt["history"]), wall_s=ckpt.get("wall_s", 0.0),
        train_steps=ckpt.get("train_steps", 0), train_audio_s=ckpt.get("train_audio_s", 0.0),
        milestones=list(ckpt.get("milestones", [])))


def start_files(run: Run, progress: Progress) -> None:
    """config.yaml; metrics.jsonl and best.pt as the checkpoint says (on another
    node the folder is empty; a line written after the last checkpoint of a
    killed run would otherwise appear twice)."""
    if not run.dist.is_main:
        return
    make_folder(run.ckpt_dir)
    atomic_write(run.out_dir / rundir.CONFIG, config_mod.to_yaml(run.cfg))
    atomic_write(run.out_dir / rundir.METRICS,
                 "".join(json.dumps(h) + "\n" for h in progress.history))
    if progress.best_model is not None:
        _write_best(run, progress)


def train_epoch(run: Run, epoch: int, progress: Progress, reporter: Reporter) -> dict[str, Any]:
    """One pass over the training data: the epoch's training loss (all ranks) and steps."""
    cfg, device = run.cfg, run.device
    train_set = run.train_set
    if hasattr(train_set, "set_epoch"):  # data sets that draw crops or mixtures per epoch
        train_set.set_epoch(epoch)
    loader = run.dist.train_loader(train_set, cfg.train.batch_size, cfg.seed, epoch, run.workers)
    n_steps = len(loader)
    if cfg.train.max_steps_per_epoch:
        n_steps = min(n_steps, cfg.train.max_steps_per_epoch)
    run.net.train()
    loss_sum, steps, samples = 0.0, 0, 0
    for step, (mix, ref) in enumerate(loader, start=1):
        if step > n_steps:
            break
        mix, ref = mix.to(device, non_blocking=True), ref.to(device, non_blocking=True)
        with _autocast(device, run.use_amp):
            est = run.net(mix)
        loss = separation_loss(est.float(), ref, run.model.oracle_grouping)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch}, step {step}")
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.train.clip_grad:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.clip_grad)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        loss_sum += loss.item()
        steps += 1
        samples += mix.numel()
        run.governor.tick()
        reporter.progress(epoch, step, n_steps, loss_sum / steps)
    loss_sum, all_steps, samples = run.dist.all_reduce_sum([loss_sum, steps, samples], device)
    progress.train_steps += steps
    progress.train_audio_s += samples / cfg.sample_rate
    return {"epoch": epoch, "train_loss": loss_sum / max(all_steps, 1), "steps": steps}


def _serialise(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _write_best(run: Run, progress: Progress) -> None:
    """best.pt: the best epoch's weights with their config, for eval and separate."""
    atomic_write(run.out_dir / rundir.BEST, _serialise({
        "format": CHECKPOINT_FORMAT, "config": config_mod.to_dict(run.cfg),
        "model": progress.best_model, "epoch": progress.best_epoch,
        "best_val": progress.best_val, "best_epoch": progress.best_epoch,
        "history": [h for h in progress.history if h["epoch"] <= progress.best_epoch],
    }))


def save(run: Run, progress: Progress, improved: bool) -> None:
    """last.pt every epoch and best.pt when it improved, each written whole or not at all,
    then the epoch's line of metrics.jsonl (whole or not at all: a resume rewrites
    the file from last.pt's history, so a line lost here comes back)."""
    if not run.dist.is_main:
        return
    atomic_write(run.out_dir / rundir.LAST, _serialise({
        "format": CHECKPOINT_FORMAT, "config": config_mod.to_dict(run.cfg),
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
        "epoch": progress.epoch, "best_val": progress.best_val, "best_epoch": progress.best_epoch,
        "best_model": progress.best_model, "bad_epochs": progress.bad_epochs,
        "history": progress.history, "wall_s": progress.wall_s,
        "train_steps": progress.train_steps, "train_audio_s": progress.train_audio_s,
        "milestones": progress.milestones,
    }))
    if improved:
        _write_best(run, progress)
    append_line(run.out_dir / rundir.METRICS, json.dumps(progress.history[-1]))


def _test_set(run: Run) -> Dataset:
    if run.test_set is None:
        run.test_set = build_dataset(run.cfg, "test", run.data_cache)
    return run.test_set


def score_milestone(run: Run, progress: Progress) -> dict[str, Any] | None:
    """At a step of ``train.milestones``: the best-on-validation weights so far
    (the rule the end of the run uses) on the test split, kept in the progress
    (and so in last.pt: a resumed run never scores a milestone twice). The
    training weights are put back after."""
    steps = progress.train_steps
    if steps not in run.cfg.train.milestones or any(m["steps"] == steps for m in progress.milestones):
        return None
    current = copy.deepcopy(run.model.state_dict())
    if progress.best_model is not None:
        run.model.load_state_dict(progress.best_model)
    scores, _ = evaluate(run.model, _test_set(run), run.device, run.cfg.train.batch_size,
                         with_sdr=True, dist=run.dist)
    run.model.load_state_dict(current)
    mark = {"steps": steps, "epoch": progress.epoch, "best_epoch": progress.best_epoch,
            "best_val_si_snri": progress.best_val, "test_si_snr": scores["si_snr"],
            "test_si_snri": scores["si_snri"], "test_sdri": scores["sdri"]}
    progress.milestones.append(mark)
    return mark


def test(run: Run, progress: Progress) -> dict[str, Any]:
    """The best weights (the last ones if validation never improved) on the test
    split; the run's summary, written to summary.json by rank 0. Every rank holds
    the same best weights: they all saw the same all-reduced validation scores."""
    cfg, model = run.cfg, run.model
    if progress.best_model is not None:
        model.load_state_dict(progress.best_model)
    test_set = _test_set(run)
    scores, _ = evaluate(model, test_set, run.device, cfg.train.batch_size, with_sdr=True,
                         dist=run.dist)
    fixed = {}
    grouping = validation_grouping(model, run.valid_set, run.device, cfg.train.batch_size, run.dist)
    if grouping is not None:  # the same separator without references at test (issue 31)
        scores_fixed, _ = evaluate(model, test_set, run.device, cfg.train.batch_size,
                                   with_sdr=True, dist=run.dist, grouping=grouping)
        fixed = {"test_si_snri_fixed": scores_fixed["si_snri"],
                 "test_sdri_fixed": scores_fixed["sdri"], "fixed_grouping": grouping.tolist()}
    summary = {
        "name": cfg.name, **config_mod.head_summary(cfg), "backbone": cfg.backbone.kind,
        "encoder": cfg.encoder.kind, "n_src": cfg.n_src,
        "oracle_grouping": bool(model.oracle_grouping), **run.complexity,
        "best_val_si_snri": progress.best_val, "best_epoch": progress.best_epoch,
        "test_si_snr": scores["si_snr"], "test_si_snri": scores["si_snri"],
        "test_sdri": scores["sdri"], **fixed, "epochs": progress.epoch,
        "stopped_early": progress.patience_spent(cfg), "wall_s": progress.wall_s,
        "train_steps": progress.train_steps, "train_audio_s": progress.train_audio_s,
        "seed": cfg.seed, "device": str(run.device), "threads": run.threads,
        "data_workers": run.workers, "thread_changes": run.governor.changes,
        "data_cache": _cache_files(run.train_set, run.valid_set, test_set), "git_sha": git_sha(),
    }
    if cfg.train.milestones:
        summary["milestones"] = progress.milestones
    if run.dist.is_main:
        atomic_write(run.out_dir / rundir.SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


# --------------------------------------------------------------------------- the loop


def fit(cfg: Config, out_dir: str | Path, reporter: Reporter | None = None, *,
        resume: bool = False, resume_from: str | Path | None = None,
        dist: Dist = SINGLE, data_cache: str | Path | None = None) -> dict[str, Any]:
    """Train one separator; write config.yaml, metrics.jsonl, checkpoints and summary.json.

    ``resume`` continues from ``out_dir/checkpoints/last.pt`` (``resume_from``:
    another last.pt, e.g. one fetched from a sweep's storage). Under DDP every
    rank calls fit with its ``dist``; rank 0 writes the files. ``data_cache``: a
    folder where data made on the fly is made once and shared with the other
    runs on the same data (a study's variants); the same batches either way.
    Returns the summary.
    """
    reporter = reporter or Reporter()
    out_dir = Path(out_dir)
    t0 = time.monotonic()
    run = setup(cfg, out_dir, dist, Path(data_cache) if data_cache else None)
    source = resume_from or (out_dir / rundir.LAST if resume else None)
    progress = restore(run, source) if source is not None else Progress()
    wall_before = progress.wall_s
    start_files(run, progress)
    reporter.start({
        "config": config_mod.to_dict(cfg), "complexity": run.complexity,
        "head": config_mod.head_summary(cfg), "backbone": cfg.backbone.kind,
        "device": str(run.device), "threads": run.threads, "start_epoch": progress.epoch + 1,
        "out_dir": str(out_dir), "rank": dist.rank, "world_size": dist.world_size,
    })
    while progress.epoch < cfg.train.epochs and not progress.patience_spent(cfg):
        t_epoch = time.monotonic()
        metrics = train_epoch(run, progress.epoch + 1, progress, reporter)
        val, _ = evaluate(run.model, run.valid_set, run.device, cfg.train.batch_size, dist=dist)
        metrics.update(val_si_snr=val["si_snr"], val_si_snri=val["si_snri"],
                       epoch_s=time.monotonic() - t_epoch)
        improved = progress.record(run, metrics, val["si_snri"])
        mark = score_milestone(run, progress)
        if mark is not None:
            metrics["milestone_test_si_snri"] = mark["test_si_snri"]
        progress.wall_s = wall_before + time.monotonic() - t0
        save(run, progress, improved)
        reporter.epoch(metrics, run.ckpt_dir if dist.is_main else None)
    progress.wall_s = wall_before + time.monotonic() - t0
    summary = test(run, progress)
    reporter.end(summary)
    return summary


def _cache_files(*datasets: Dataset) -> dict[str, int] | None:
    """How many data cache files this run made, read, and deleted for room, and how
    many epochs it kept in memory for want of room (None: no cache)."""
    cached = [d for d in datasets if isinstance(d, CachedMixtures)]
    if not cached:
        return None
    return {k: sum(d.files[k] for d in cached) for k in cached[0].files}


def _check_resumable(cfg: Config, ckpt: dict, source: str) -> None:
    """Resuming may change the training budget and how data is read, never the
    model or the data itself."""
    free = ("train", "name", "data.skip_bad", "data.check", "data.num_workers")
    changed = config_mod.first_difference(ckpt["config"], cfg, ignore=free)
    if changed is not None:
        key, old, new = changed
        raise UserError(f"{source}: cannot resume: {key} is {old!r} in the checkpoint "
                        f"but {new!r} in the config")
