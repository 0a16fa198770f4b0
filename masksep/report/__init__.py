"""The answer of a sweep or a study as files: trials.csv, epochs.csv,
pareto.csv, summary.md and plots, and for a study its statistics and claims.

Two stages. ``collect`` (collect.py) reads a sweep folder's Ray Tune
experiment into a row per trial and a row per epoch; ``render`` turns those
tables into everything else. ``masksep report DIR`` runs both when DIR has a
sweep.json, and only ``render`` when trials.csv (with epochs.csv and, for a
study, study.json) is all there is, as in a committed results folder.

Modules: collect.py (Ray's experiment and the trial folders), tables.py
(trials.csv's schema, labels, the sweep's tables), study.py (the study's cells,
paired comparisons, claims, claims by budget, resolution and the ASHA check),
render.py (summary.md and the files beside it), plots.py (matplotlib's Figure
API), overview.py (one table over several studies); numbers are formatted by
masksep/formats.py and computed by masksep/stats.py (scipy.stats).

Public: write_report(out) -> summary dict; read_trials(path) -> (rows,
columns); load_trials(path) -> DataFrame; asha_rank_check(dir_or_df, epochs)
-> DataFrame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from masksep.errors import UserError
from masksep.report.collect import collect, load_folder
from masksep.report.render import render, summary_markdown
from masksep.report.schema import (
    HEAD_COLUMNS,
    METRIC_COLUMNS,
    TRIALS_FILE,
    load_trials,
    read_trials,
)
from masksep.report.study import asha_rank_check
from masksep.report.tables import pareto_front, sweep_efficiency
from masksep.rundir import STATE as STATE_FILE

__all__ = ["HEAD_COLUMNS", "METRIC_COLUMNS", "STATE_FILE", "asha_rank_check", "collect",
           "load_trials", "pareto_front", "read_trials", "render", "summary_markdown",
           "sweep_efficiency", "write_report"]


def write_report(out: str | Path) -> dict[str, Any]:
    """Collect (when ``out`` holds a sweep) and render the report of ``out``."""
    out = Path(out)
    if not out.is_dir():
        raise UserError(f"{out}: no such folder")
    has_state = (out / STATE_FILE).is_file()
    if not has_state and not (out / TRIALS_FILE).is_file():
        raise UserError(f"{out}: neither a sweep ({STATE_FILE}) nor a report ({TRIALS_FILE}) is here")
    inputs = load_folder(out, fresh=True)
    if inputs.trials.empty:
        raise UserError(f"{out}: the sweep has no trials yet" if has_state
                        else f"{out / TRIALS_FILE}: holds no trials")
    return render(out, inputs)
