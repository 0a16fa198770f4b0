"""Multi-worker trials: Ray Train (DDP, gloo on CPU) inside a Ray Tune trial.

One tiny trial config runs as a sweep twice, with 2 DDP workers and with the
plain 1-process trial, each a real `masksep sweep` with its own local Ray.
The 2-worker run loses a worker after its first epoch; Ray Train restarts the
worker group from rank 0's last checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
BASE = {
    **tiny.MODEL,
    "data": {"segment_s": 0.25, "train_items": 256, "valid_items": 4, "test_items": 4,
             "eval_seconds": 0.5},
    "train": {"epochs": EPOCHS, "batch_size": 4},
}
# Keys only one kind of trial has: Ray Train's checkpoint path and the ranks'
# own losses (DDP), Tune's checkpoint flag (1 process).
DDP_ONLY = {"checkpoint_path", "worker_train_loss"}
SINGLE_ONLY = {"should_checkpoint"}


def write_spec(path: Path, workers: int) -> Path:
    path.write_text(yaml.safe_dump({
        "name": f"w{workers}", "search": "grid", "scheduler": "none", "max_failures": 1,
        "resources": {"cpus": 1, "workers_per_trial": workers},
        "base": BASE, "search_space": {"head.kind": {"grid": ["deep"]}},
    }, sort_keys=False))
    return path


def sweep_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               RAY_USAGE_STATS_ENABLED="0", WANDB_MODE="disabled",
               # Ray Train collects the workers' reports every 2 s; with epochs of
               # about a second, that lag alone would hide whole epochs from the test.
               RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2")
    return env


def start_sweep(spec: Path, out: Path) -> subprocess.Popen:
    log = open(out.parent / f"{out.name}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "masksep", "sweep", str(spec), "--out", str(out), "--num-cpus", "2",
         "--no-wandb"], env=sweep_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def kill_tree(proc: subprocess.Popen) -> None:
    """The sweep and the local Ray it started (for a test that fails half-way)."""
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def finish(proc: subprocess.Popen, out: Path, timeout: float = 300) -> None:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    log = (out.parent / f"{out.name}.log").read_text()
    assert proc.returncode == 0, log[-4000:]


def trial_dir(out: Path) -> Path:
    (trial,) = (out / "ray").glob("*/trial_*")
    return trial


def results(trial: Path) -> list[dict]:
    rows = []
    for line in (trial / "result.json").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # being written
            pass
    return rows


def stored_epoch(out: Path) -> int:
    """The last epoch whose last.pt is in the trial folder (0 before the first):
    the trial's attempts.json lists it once the checkpoint is there."""
    for attempts in (out / "ray").glob("*/trial_*/attempts.json"):
        try:
            return max((e for a in json.loads(attempts.read_text()) for e in a["epochs"]), default=0)
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for kid in children.get(todo.pop(), []):
            found.append(kid)
            todo.append(kid)
    return found


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_two_gloo_workers_report_like_one_process_and_survive_a_lost_worker(tmp_path):
    ddp_out, one_out = tmp_path / "ddp", tmp_path / "one"
    proc = start_sweep(write_spec(tmp_path / "ddp.yaml", 2), ddp_out)
    try:
        # Once rank 0 has put epoch 1's last.pt in the trial folder, kill one of the two workers.
        deadline = time.monotonic() + 240
        while (registered := stored_epoch(ddp_out)) < 1:
            assert proc.poll() is None, (tmp_path / "ddp.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the DDP trial never reported an epoch"
            time.sleep(0.05)
        workers = [p for p in descendants(proc.pid) if title(p).startswith("ray::RayTrainWorker")]
        assert len(workers) == 2, [title(p)[:40] for p in descendants(proc.pid)]
        os.kill(workers[-1], signal.SIGKILL)
    except BaseException:
        kill_tree(proc)
        raise
    finish(proc, ddp_out)
    finish(start_sweep(write_spec(tmp_path / "one.yaml", 1), one_out), one_out)

    ddp, one = trial_dir(ddp_out), trial_dir(one_out)
    ddp_rows, one_rows = results(ddp), results(one)
    assert registered < EPOCHS
    # One report per epoch (not one per worker) and a final one, as a 1-process trial.
    ddp_epochs = [r["epoch"] for r in ddp_rows if not r.get("final")]
    one_epochs = [r["epoch"] for r in one_rows if not r.get("final")]
    assert one_epochs == list(range(1, EPOCHS + 1))
    # Resumed from the trial folder's last.pt after the lost worker: every epoch is
    # trained once over the two attempts, none twice. (The report of the epoch whose
    # last.pt was stored just before the kill may be lost with the worker, never repeated.)
    attempts = json.loads((ddp / "attempts.json").read_text())
    trained = [e for a in attempts for e in a["epochs"]]
    assert len(attempts) == 2 and trained == one_epochs, attempts
    assert attempts[1]["start_epoch"] == attempts[0]["epochs"][-1] + 1
    assert ddp_epochs == sorted(set(ddp_epochs)) and set(ddp_epochs) <= set(one_epochs)
    assert ddp_epochs[-1] == EPOCHS
    assert ddp_rows[-1]["final"] is True and one_rows[-1]["final"] is True

    for d in ddp_rows[:-1]:
        assert set(d) - DDP_ONLY == set(one_rows[0]) - SINGLE_ONLY
    assert set(ddp_rows[-1]) - DDP_ONLY == set(one_rows[-1]) - SINGLE_ONLY
    for row in ddp_rows + one_rows:
        for key in ("train_loss", "val_si_snri", "best_val_si_snri", "params", "head_macs_per_s"):
            assert math.isfinite(row[key]), (key, row)
    for key in ("params", "head_params", "macs_per_s", "head_macs_per_s"):
        assert ddp_rows[0][key] == one_rows[0][key]
    assert ddp_rows[0]["trial_id"] == ddp.name[len("trial_"):]

    # train_loss is the mean of the two ranks' own losses (each saw half the data).
    for row in ddp_rows[:-1]:
        local = row["worker_train_loss"]
        assert len(local) == 2 and local[0] != local[1]
        assert row["train_loss"] == pytest.approx(sum(local) / 2, rel=1e-9)
        assert row["steps"] == 256 // 2 // 4
    assert one_rows[0]["steps"] == 256 // 4

    # Rank 0 alone wrote the trial's files, where report.collect reads them.
    for trial in (ddp, one):
        assert [json.loads(line)["epoch"] for line in (trial / "metrics.jsonl").open()] == one_epochs
        summary = json.loads((trial / "summary.json").read_text())
        assert summary["epochs"] == EPOCHS and math.isfinite(summary["test_si_snri"])
        assert json.loads((trial / "searched.json").read_text()) == {"head.kind": "deep"}
        assert (trial / "config.yaml").is_file() and (trial / "checkpoints" / "best.pt").is_file()
    # Ray Train holds no checkpoint of ours: the trial folder does.
    assert not list((ddp / "train").glob("checkpoint_*"))
    assert (ddp / "checkpoints" / "last.pt").is_file()
    for out in (ddp_out, one_out):
        with open(out / "trials.csv") as f:
            (row,) = csv.DictReader(f)
        assert row["status"] == "completed" and int(row["epochs"]) == EPOCHS
