"""The one training loop: ``fit(cfg, out_dir, reporter)``.

``masksep train``, the Ray Tune trainable and the Ray Train (DDP) worker all call
:func:`fit`; none of them owns a second loop. Order of operations per epoch:
train steps -> validation SI-SNRi -> LR halving on plateau -> checkpoints
(last, and best when it improved) -> metrics.jsonl line -> reporter.
After the last epoch the best weights are evaluated on the test split.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from masksep import config as config_mod
from masksep.complexity import count_complexity
from masksep.config import Config
from masksep.data import build_dataset
from masksep.errors import UserError
from masksep.files import atomic_write
from masksep.losses import separation_loss
from masksep.metrics import evaluate as evaluate_batch
from masksep.models.separator import Separator, build_model
from masksep.reporting import Reporter

CHECKPOINT_FORMAT = "masksep-checkpoint-1"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite. Not a user error: the trial failed."""


# --------------------------------------------------------------------------- environment


def cpus_given() -> int:
    """CPUs this process may use: Ray's OMP_NUM_THREADS when set, else the affinity mask."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def setup_threads(requested: int = 0) -> int:
    """Torch intra-op threads = the CPUs we were given. Oversubscribing two
    concurrent trials on two cores made a step 15x slower."""
    threads = requested or cpus_given()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass
    return threads


def pick_device(kind: str) -> torch.device:
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda was asked for but no CUDA device is available")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and _dist_on():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(kind)


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


def _dist_on() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def _rank() -> int:
    return torch_dist.get_rank() if _dist_on() else 0


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not _dist_on():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch_dist.all_reduce(t)
    return t.tolist()


# --------------------------------------------------------------------------- files


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a masksep checkpoint (weights_only); a bad file is one UserError line."""
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
    return ckpt


def model_from_checkpoint(ckpt: dict, source: str = "checkpoint") -> tuple[Config, Separator]:
    """Rebuild the separator a checkpoint was trained as, with its weights."""
    cfg = config_mod.from_dict(ckpt["config"], source)
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:160]
        raise UserError(f"{source}: weights do not fit the model its config builds ({first})") from None
    return cfg, model


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: Separator,
    dataset: Dataset,
    device: torch.device,
    batch_size: int = 1,
    with_sdr: bool = False,
    shard: bool = False,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Mean and per-item metrics of ``model`` on ``dataset``.

    Items of different lengths are evaluated one at a time; data sets that
    declare ``fixed_length = True`` are batched. With ``shard`` under DDP each
    rank takes every world_size-th item and the sums are all-reduced.
    Rows carry ``name`` too when the data set has ``item_name(i)`` (a file's
    mixture ID).
    """
    batch = batch_size if getattr(dataset, "fixed_length", False) else 1
    indices = list(range(len(dataset)))
    if shard and _dist_on():
        indices = indices[_rank() :: torch_dist.get_world_size()]
    loader = DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch, shuffle=False)
    keys = ("si_snr", "si_snri", "sdr", "sdri") if with_sdr else ("si_snr", "si_snri")
    item_name = getattr(dataset, "item_name", None)
    rows: list[dict[str, Any]] = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for mix, ref in loader:
            mix, ref = mix.to(device), ref.to(device)
            est = model(mix).float()
            scores = evaluate_batch(est, ref, mix, model.oracle_grouping, with_sdr=with_sdr)
            for b in range(mix.shape[0]):
                row: dict[str, Any] = {k: float(scores[k][b]) for k in keys}
                if item_name is not None:
                    row = {"name": item_name(indices[len(rows)]), **row}
                rows.append(row)
    model.train(was_training)
    totals = _all_reduce_sum([len(rows)] + [sum(r[k] for r in rows) for k in keys], device)
    count = max(totals[0], 1)
    means = {k: totals[i + 1] / count for i, k in enumerate(keys)}
    return means, rows


# --------------------------------------------------------------------------- the loop


def _autocast(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _loader(dataset: Dataset, cfg: Config, epoch: int) -> DataLoader:
    """A reshuffle per epoch, reproducible from (seed, epoch); data sets that
    draw crops or mixtures per epoch are told the epoch."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if _dist_on():
        sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch_size=cfg.train.batch_size, sampler=sampler,
                          num_workers=cfg.data.num_workers, drop_last=True)
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True, generator=gen,
                      num_workers=cfg.data.num_workers, drop_last=True)


def fit(
    cfg: Config,
    out_dir: str | Path,
    reporter: Reporter | None = None,
    *,
    resume: bool = False,
    resume_from: str | Path | None = None,
) -> dict[str, Any]:
    """Train one separator; write config.yaml, metrics.jsonl, checkpoints and summary.json.

    ``resume`` continues from ``out_dir/checkpoints/last.pt`` (or ``resume_from``,
    e.g. a checkpoint handed over by Ray Tune). Returns the summary dict.
    Under torch.distributed (Ray Train), every rank calls fit; rank 0 writes.
    """
    reporter = reporter or Reporter()
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    is_main = _rank() == 0
    t_start = time.monotonic()

    threads = setup_threads(cfg.train.threads)
    device = pick_device(cfg.train.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)

    model = build_model(cfg)
    complexity = count_complexity(model, cfg.sample_rate)
    model.to(device)
    train_set = build_dataset(cfg, "train")
    valid_set = build_dataset(cfg, "valid")

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr,
                                 weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=cfg.train.plateau_patience)
    use_amp = cfg.train.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())

    start_epoch, best_val, best_epoch, bad_epochs, history = 1, -math.inf, 0, 0, []
    wall_before = 0.0
    source = resume_from or (ckpt_dir / "last.pt" if resume else None)
    if source is not None:
        ckpt = load_checkpoint(source, map_location=device)
        _check_resumable(cfg, ckpt, str(source))
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch = ckpt["epoch"] + 1
        best_val, best_epoch = ckpt["best_val"], ckpt["best_epoch"]
        bad_epochs, history = ckpt["bad_epochs"], list(ckpt["history"])
        wall_before = ckpt.get("wall_s", 0.0)

    net = model
    if _dist_on():
        # find_unused_parameters: the TCN keeps the last block's residual conv
        # (for Asteroid's parameter count) but never uses it (models/tcn.py).
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    # Ray Train's report is a barrier that every rank must reach, so a reporter
    # may ask for its hooks on every rank (checkpoint_dir is None off rank 0).
    hooks_here = is_main or bool(getattr(reporter, "every_rank", False))

    if is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(out_dir / "config.yaml", config_mod.to_yaml(cfg))
        # The checkpoint's history is the truth; a line written after the last
        # checkpoint of a killed run would otherwise appear twice.
        atomic_write(out_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    head = config_mod.head_summary(cfg)
    reporter.start({
        "config": config_mod.to_dict(cfg), "complexity": complexity, "head": head,
        "backbone": cfg.backbone.kind, "device": str(device), "threads": threads,
        "start_epoch": start_epoch, "out_dir": str(out_dir),
    })

    def patience_spent() -> bool:
        return bool(cfg.train.early_stop) and bad_epochs >= cfg.train.early_stop

    for epoch in range(start_epoch, cfg.train.epochs + 1):
        if patience_spent():
            break
        t_epoch = time.monotonic()
        net.train()
        loader = _loader(train_set, cfg, epoch)
        n_steps = len(loader)
        if cfg.train.max_steps_per_epoch:
            n_steps = min(n_steps, cfg.train.max_steps_per_epoch)
        loss_sum, steps = 0.0, 0
        for step, (mix, ref) in enumerate(loader, start=1):
            if step > n_steps:
                break
            mix, ref = mix.to(device, non_blocking=True), ref.to(device, non_blocking=True)
            with _autocast(device, use_amp):
                est = net(mix)
            loss = separation_loss(est.float(), ref, model.oracle_grouping)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.item()
            steps += 1
            if hooks_here:
                reporter.progress(epoch, step, n_steps, loss_sum / steps)
        train_loss = _all_reduce_sum([loss_sum, steps], device)
        train_loss = train_loss[0] / max(train_loss[1], 1)

        val, _ = evaluate(model, valid_set, device, cfg.train.batch_size, shard=True)
        improved = val["si_snri"] > best_val
        if improved:
            best_val, best_epoch, bad_epochs = val["si_snri"], epoch, 0
        else:
            bad_epochs += 1
        scheduler.step(val["si_snri"])
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_si_snr": val["si_snr"],
            "val_si_snri": val["si_snri"],
            "best_val_si_snri": best_val,
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_s": time.monotonic() - t_epoch,
            "steps": steps,
        }
        history.append(metrics)
        if is_main:
            state = {
                "format": CHECKPOINT_FORMAT, "config": config_mod.to_dict(cfg),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch, "best_val": best_val, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "history": history,
                "wall_s": wall_before + time.monotonic() - t_start,
            }
            buf = io.BytesIO()
            torch.save(state, buf)  # serialised once, for last.pt and (if better) best.pt
            atomic_write(ckpt_dir / "last.pt", buf.getvalue())
            if improved:
                atomic_write(ckpt_dir / "best.pt", buf.getvalue())
            with open(out_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
        if hooks_here:
            reporter.epoch(metrics, ckpt_dir if is_main else None)

    # Test with the best weights (the last ones if validation never improved).
    if _dist_on():
        torch_dist.barrier()
    best_path = ckpt_dir / "best.pt"
    if is_main and best_path.is_file():
        model.load_state_dict(load_checkpoint(best_path, map_location=device)["model"])
    if _dist_on():
        # Only rank 0 wrote best.pt (ranks may not share a disk): it hands its
        # weights to the others before the sharded test evaluation.
        for tensor in model.state_dict().values():
            torch_dist.broadcast(tensor, src=0)
    test_set = build_dataset(cfg, "test")
    test, _ = evaluate(model, test_set, device, cfg.train.batch_size, with_sdr=True, shard=True)

    summary = {
        "name": cfg.name,
        **head,
        "backbone": cfg.backbone.kind,
        "encoder": cfg.encoder.kind,
        "n_src": cfg.n_src,
        "oracle_grouping": bool(model.oracle_grouping),
        **complexity,
        "best_val_si_snri": best_val,
        "best_epoch": best_epoch,
        "test_si_snr": test["si_snr"],
        "test_si_snri": test["si_snri"],
        "test_sdri": test["sdri"],
        "epochs": history[-1]["epoch"] if history else 0,
        "stopped_early": patience_spent(),
        "wall_s": wall_before + time.monotonic() - t_start,
        "seed": cfg.seed,
        "device": str(device),
        "threads": threads,
        "git_sha": git_sha(),
    }
    if is_main:
        atomic_write(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if hooks_here:
        reporter.end(summary)
    return summary


def _check_resumable(cfg: Config, ckpt: dict, source: str) -> None:
    """Resuming may change the training budget and how data is read, never the
    model or the data itself."""
    old = config_mod.flatten(ckpt["config"])
    new = config_mod.flatten(cfg)
    free = {"name", "data.skip_bad", "data.check", "data.num_workers"}
    for key in sorted(set(old) | set(new)):
        if key.startswith("train.") or key in free:
            continue
        if old.get(key) != new.get(key):
            raise UserError(
                f"{source}: cannot resume: {key} is {old.get(key)!r} in the checkpoint "
                f"but {new.get(key)!r} in the config"
            )
