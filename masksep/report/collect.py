"""A sweep folder's trials as two tables: one row per trial, one row per epoch.

Where each thing comes from. Ray Tune's experiment (``experiment_path(state)``,
a local folder or an s3:// / gs:// URI) gives, from its newest snapshot read as
plain JSON (masksep.rundir.tune_trials; never unpickled, so a folder from
elsewhere runs no code here): which trials exist, their status, their retries
and, for a trial that never finished, its last reported result.
masksep's own files in each trial's folder give the rest: searched.json (the
searched values; a study adds the variant's name), config.yaml (the resolved
trial config), metrics.jsonl (one line per epoch) and summary.json (written
once the trial trained to the end), and Ray's error.txt when it failed.

Fallback, documented because it guesses: a trial folder copied without Ray's
experiment state (no experiment_state-*.json) has no Ray status. Then a
summary.json means completed, an error.txt failed; a trial with neither is
running while the driver lives, stopped (by the scheduler or the time budget)
when the sweep finished, else interrupted.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from masksep import rundir
from masksep.errors import UserError
from masksep.report.schema import (
    EPOCH_COLUMNS,
    EPOCHS_FILE,
    HEAD_COLUMNS,
    MILESTONE_COLUMNS,
    MILESTONES_FILE,
    STUDY_FILE,
    TRIALS_FILE,
    csv_text,
    load_epochs,
    load_milestones,
    load_trials,
    parse_epochs,
    parse_milestones,
    parse_trials,
    trials_frame,
)
from masksep.rundir import STATE as STATE_FILE
from masksep.rundir import experiment_path, read_state

log = logging.getLogger(__name__)


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _json_lines(text: str | None) -> list[dict]:
    items = (_json(line) for line in (text or "").splitlines())
    return [item for item in items if isinstance(item, dict)]


def _error_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _ray_trials(store: rundir.Store) -> dict[str, dict[str, Any]] | None:
    """Trial folder name -> {status, retries, last_result} from Ray's own
    experiment state, or None when the folder has none (a copy without it).
    Read as JSON (rundir.tune_trials): a report never unpickles anything."""
    if not any(n.startswith(rundir.TUNE_STATE_PREFIX) for n, is_dir in store.listdir() if not is_dir):
        return None
    trials = rundir.tune_trials(store)
    if trials is None:  # a snapshot being rewritten: the files still tell
        log.warning("masksep: Ray's experiment state is unreadable; reading trial folders alone")
    return trials


def _status(ray: dict[str, Any] | None, summary: dict, error: str, state: dict[str, Any],
            driver_alive: bool) -> str:
    ray_status = (ray or {}).get("status", "")
    if ray_status == "ERROR" or (error and not summary):
        return "failed"
    if summary:
        return "completed"
    if ray_status == "TERMINATED":
        return "stopped"  # ended by the scheduler (ASHA) before its last epoch
    if driver_alive:
        return "running"
    if ray is None and state.get("status") == "finished":
        return "stopped"
    return "interrupted" if ray_status in ("RUNNING", "PENDING", "PAUSED", "") else ray_status.lower()


def _trial_row(store: rundir.Store, name: str, ray: dict[str, Any] | None, state: dict[str, Any],
               driver_alive: bool) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    from masksep import config as config_mod

    searched = dict(_json(store.read_text(name, rundir.SEARCHED)) or {})
    variant = searched.pop("variant", None)  # a study's design, not a searched value
    summary = _json(store.read_text(name, rundir.SUMMARY)) or {}
    epochs = [e for e in _json_lines(store.read_text(name, rundir.METRICS)) if "epoch" in e]
    last = {**(ray or {}).get("last_result", {}), **(epochs[-1] if epochs else {})}
    row: dict[str, Any] = {"trial_id": name.removeprefix("trial_")}
    if variant is not None:
        row["variant"] = variant
    row.update({f"searched.{k}": v for k, v in searched.items()})

    cfg_text = store.read_text(name, rundir.CONFIG)
    if cfg_text:
        try:
            cfg = config_mod.from_dict(config_mod.load_yaml_text(cfg_text))
            row.update(config_mod.head_summary(cfg), backbone=cfg.backbone.kind, n_src=cfg.n_src,
                       seed=cfg.seed)
        except Exception:  # noqa: BLE001 - a half-written config is reported, not fatal
            pass
    for key in (*rundir.COMPLEXITY_KEYS, "best_val_si_snri"):
        row[key] = summary.get(key, last.get(key))
    for key in ("best_epoch", "test_si_snr", "test_si_snri", "test_sdri", "train_steps",
                "train_audio_s"):
        row[key] = summary.get(key)
    row.update({k: summary[k] for k in rundir.FIXED_KEYS if k in summary})
    row["epochs"] = summary.get("epochs", last.get("epoch", 0))
    row["wall_s"] = summary.get("wall_s", last.get("time_total_s"))
    row.update({k: summary[k] for k in [*HEAD_COLUMNS, "seed"] if k in summary})

    error = _error_line(store.read_text(name, rundir.ERROR))
    row["status"] = _status(ray, summary, error, state, driver_alive)
    row["retries"] = (ray or {}).get("retries", 0)
    row["error"] = error if row["status"] == "failed" else ""
    by_epoch = {int(e["epoch"]): e for e in epochs}  # a retried epoch counts once: its last run
    curve = [{"trial_id": row["trial_id"], **{k: e.get(k) for k in EPOCH_COLUMNS[1:]}}
             for _, e in sorted(by_epoch.items())]
    marks = [{"trial_id": row["trial_id"], **{k: m.get(k) for k in MILESTONE_COLUMNS[1:]}}
             for m in summary.get("milestones") or [] if isinstance(m, dict)]
    return row, curve, marks


def collect(out: Path, state: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The trials of the sweep whose sweep.json is ``state``: (one row per
    trial, one row per trial and epoch, one row per trial and milestone of a
    completed trial), the rows of trials.csv, epochs.csv and milestones.csv."""
    if not isinstance(state, dict) or "storage" not in state or "name" not in state:
        raise UserError(f"{out / STATE_FILE}: not a masksep sweep state (no name or storage)")
    store = rundir.Store.of_uri(experiment_path(state))
    ray_trials = _ray_trials(store)
    driver_alive = state.get("status") == "running" and _pid_alive(state.get("pid"))
    rows, curves, marks = [], [], []
    for name, is_dir in sorted(store.listdir()):
        if not (is_dir and name.startswith("trial_")):
            continue
        ray = ray_trials.get(name, {}) if ray_trials is not None else None
        row, curve, mark = _trial_row(store, name, ray, state, driver_alive)
        rows.append(row)
        curves.extend(curve)
        marks.extend(mark)
    return (trials_frame(rows), pd.DataFrame(curves, columns=EPOCH_COLUMNS),
            pd.DataFrame(marks, columns=MILESTONE_COLUMNS))


@dataclass
class Inputs:
    """What a report is built from: the trials, their learning curves (None
    for a results folder written before epochs.csv), sweep.json (None when
    only a trials.csv is there), the facts of the sweep the summary names
    (sweep.json's, or study.json's copy of them) and the study block (None for
    a plain sweep)."""

    trials: pd.DataFrame
    epochs: pd.DataFrame | None
    state: dict[str, Any] | None
    sweep: dict[str, Any] | None
    study: dict[str, Any] | None
    study_source: str = ""
    milestones: pd.DataFrame | None = None  # test scores at a study's budget milestones


# What study.json keeps of sweep.json for a results folder without it: the
# facts the summary names, not where the sweep's storage or driver were.
SWEEP_FACTS = ("name", "search", "scheduler", "status", "num_trials", "max_concurrent_trials",
               "driver_wall_s", "resumed", "drivers")


def study_file(state: dict[str, Any]) -> dict[str, Any]:
    """study.json: the study block and the sweep's facts, beside trials.csv."""
    return {"sweep": {k: state[k] for k in SWEEP_FACTS if k in state}, "study": state["study"]}


def load_folder(out: Path, *, fresh: bool = False) -> Inputs:
    """A sweep folder (collected from its Ray experiment when ``fresh`` or when
    it has no trials.csv yet) or a results folder (trials.csv, epochs.csv and
    study.json alone)."""
    state = read_state(out) if (out / STATE_FILE).is_file() else None
    if state is not None and (fresh or not (out / TRIALS_FILE).is_file()):
        trials, epochs, marks = collect(out, state)
        # Typed through the CSV text, so that a fresh report and one rebuilt
        # from its CSVs render the same values (to the last digit).
        trials = parse_trials(csv_text(trials), out / TRIALS_FILE)
        epochs = parse_epochs(csv_text(epochs), out / EPOCHS_FILE)
        marks = None if marks.empty else parse_milestones(csv_text(marks), out / MILESTONES_FILE)
    else:
        trials = load_trials(out / TRIALS_FILE)
        epochs = load_epochs(out / EPOCHS_FILE)
        marks = load_milestones(out / MILESTONES_FILE)
    if state is not None:
        return Inputs(trials, epochs, state, state, state.get("study"), str(out / STATE_FILE),
                      marks)
    path = out / STUDY_FILE
    if not path.is_file():
        return Inputs(trials, epochs, None, None, None, milestones=marks)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("study"), dict):
        raise UserError(f"{path}: not a masksep study.json (no study block)")
    sweep = data.get("sweep") if isinstance(data.get("sweep"), dict) else None
    return Inputs(trials, epochs, None, sweep, data["study"], str(path), marks)
