"""The report's tables on disk: trials.csv, epochs.csv and milestones.csv, their
columns and types, in and out.

trials.csv has a row per trial: trial_id, status, the study's variant (in a
study), the searched values (``searched.FIELD``), the head in the paper's
coordinates (head, depth, width, oversep = P, grouping, backbone, n_src = C)
and the metrics. epochs.csv has a row per trial and epoch (metrics.jsonl), so
that a results folder with no Ray state behind it still has the learning
curves the ASHA check and the convergence table read. milestones.csv has a row
per trial and budget milestone of a study. Every table is typed through its CSV
text, so a report made from a sweep and one rebuilt from its CSVs are the same.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from masksep import rundir
from masksep.errors import UserError

TRIALS_FILE = rundir.TRIALS
EPOCHS_FILE = rundir.EPOCHS
MILESTONES_FILE = rundir.MILESTONES
STUDY_FILE = rundir.STUDY
HEAD_COLUMNS = ["head", "depth", "width", "oversep", "grouping", "backbone", "n_src"]
METRIC_COLUMNS = [*rundir.COMPLEXITY_KEYS, *rundir.RESULT_KEYS]
EPOCH_COLUMNS = ["trial_id", "epoch", "train_loss", "val_si_snr", "val_si_snri",
                 "best_val_si_snri", "lr", "epoch_s", "steps"]
MILESTONE_COLUMNS = ["trial_id", "steps", "epoch", "best_epoch", "best_val_si_snri",
                     "test_si_snr", "test_si_snri", "test_sdri"]
NUMERIC = [*METRIC_COLUMNS, "depth", "width", "oversep", "n_src", "retries"]
TEXT = ["trial_id", "status", "variant", "head", "grouping", "backbone", "error"]
REQUIRED = ("trial_id", "status", "head", "best_val_si_snri")
FLOAT_FORMAT = "%.10g"  # MACs per second reach 10 digits; SI-SNRi needs 4


# --------------------------------------------------------------------------- frames and files


def trials_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows of trials.csv in its column order, typed (numbers float, NaN when missing)."""
    df = pd.DataFrame(rows)
    searched = [c for c in df.columns if c.startswith("searched.")]
    lead = ["trial_id", "status"] + (["variant"] if "variant" in df.columns else [])
    order = [*lead, *searched, *HEAD_COLUMNS, *METRIC_COLUMNS, "retries", "error"]
    order += [c for c in df.columns if c not in order]
    return _typed(df.reindex(columns=order))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in NUMERIC:
        if col not in df.columns:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in rundir.FIXED_KEYS:  # only in a sweep that has an og head with oracle grouping
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in TEXT:
        if col in df.columns:
            df[col] = df[col].where(df[col].notna(), "").astype(str)
    for col in ("head", "grouping", "backbone", "error"):
        if col not in df.columns:
            df[col] = ""
    return df


def csv_text(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def load_trials(path: str | Path) -> pd.DataFrame:
    """trials.csv as a typed DataFrame; a file that is not one is one UserError line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    return parse_trials(text, path)


def parse_trials(text: str, path: str | Path) -> pd.DataFrame:
    """The text of a trials.csv (``path`` names it in errors) as a typed DataFrame."""
    try:
        df = pd.read_csv(io.StringIO(text), dtype={c: str for c in TEXT}, keep_default_na=False,
                         na_values=[""])
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: empty (not a masksep trials.csv)") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise UserError(f"{path}: not a masksep trials.csv (no column {missing[0]!r})")
    return _typed(df)


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts, None where a value is missing."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def read_trials(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """trials.csv as (rows, columns): numbers as floats, None where missing."""
    df = load_trials(path)
    return records(df), list(df.columns)


def load_epochs(path: str | Path) -> pd.DataFrame | None:
    """epochs.csv, or None when the folder has none (a report written before it existed)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    return parse_epochs(text, path)


def parse_epochs(text: str, path: str | Path) -> pd.DataFrame:
    """epochs.csv's text as its table (the learning curves' columns first)."""
    try:
        df = pd.read_csv(io.StringIO(text), dtype={"trial_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    if "trial_id" not in df.columns or "epoch" not in df.columns:
        raise UserError(f"{path}: not a masksep epochs.csv (no trial_id or epoch column)")
    return df.reindex(columns=[*EPOCH_COLUMNS, *[c for c in df.columns if c not in EPOCH_COLUMNS]])


def load_milestones(path: str | Path) -> pd.DataFrame | None:
    """milestones.csv, or None when the folder has none (a study without milestones)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    return parse_milestones(text, path)


def parse_milestones(text: str, path: str | Path) -> pd.DataFrame:
    """milestones.csv's text as its table."""
    try:
        df = pd.read_csv(io.StringIO(text), dtype={"trial_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    missing = [c for c in MILESTONE_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: not a masksep milestones.csv (no {missing[0]} column)")
    return df[MILESTONE_COLUMNS]
