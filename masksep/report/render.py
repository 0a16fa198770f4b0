"""summary.md and every other file of a report, from the collected tables (the
second of the report's two stages; masksep/report/__init__.py runs both)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import masksep.report.plots as plots
import masksep.report.study as study
from masksep import rundir
from masksep.design import StudyDesign, read_design
from masksep.errors import UserError
from masksep.files import atomic_write
from masksep.report.collect import Inputs, study_file
from masksep.report.schema import EPOCHS_FILE, MILESTONES_FILE, STUDY_FILE, TRIALS_FILE, csv_text
from masksep.report.tables import (
    markdown,
    pareto_front,
    sweep_efficiency,
    sweep_sections,
    wall_time_is_whole,
)

ANALYSIS_FILE = Path(rundir.ANALYSIS)


def _analysis_lines(out: Path) -> list[str]:
    """The section masksep.analyze writes for a study, when its analysis.json is
    there and the module that formats it is importable."""
    path = out / ANALYSIS_FILE
    if not path.is_file():
        return []
    try:
        from masksep.analyze import study_analysis_section
    except ImportError:
        return []
    try:
        analysis = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    section = study_analysis_section(analysis)
    lines = section.splitlines() if isinstance(section, str) else list(section)
    return [*lines, ""]


def _tuning_lines(out: Path, design: StudyDesign) -> list[str]:
    """A tuned study: what each variant's search saw (its tuning folder's
    trials.csv), mean validation SI-SNRi per searched point, the chosen one marked."""
    from masksep.report.schema import load_trials

    folder = out / rundir.TUNING
    if not design.tuned or not folder.is_dir():
        return []
    lines = ["### What each search saw", "",
             "Per variant, every point its search tried: the mean best validation SI-SNRi over "
             "the tuning trials that trained to the end (n of them) and how many were tried. "
             "The chosen point is in bold.", ""]
    for variant, chosen in design.tuned.items():
        path = folder / variant / TRIALS_FILE
        if not path.is_file():
            continue
        trials = load_trials(path)
        dims = [f"searched.{k}" for k in chosen if f"searched.{k}" in trials.columns]
        if not dims:
            continue
        done = trials[trials["status"] == "completed"]
        seen = trials.groupby(dims, dropna=False).size().rename("tried")
        val = done.groupby(dims, dropna=False)["best_val_si_snri"].agg(["mean", "count"])
        table = val.join(seen, how="outer").reset_index()
        pick = np.logical_and.reduce([np.isclose(table[d].astype(float), float(chosen[d[9:]]))
                                      for d in dims])
        table["mean"] = [f"**{v:.2f}**" if hit else f"{v:.2f}" if math.isfinite(v) else "-"
                         for v, hit in zip(table["mean"], pick, strict=True)]
        lines += [f"`{variant}`:", "", *markdown(pd.DataFrame({
            **{d[9:]: table[d].map(lambda v: f"{v:.3g}") for d in dims},
            "val SI-SNRi (dB)": table["mean"], "n": table["count"].fillna(0).astype(int),
            "tried": table["tried"].fillna(0).astype(int)})), ""]
    return lines


def summary_markdown(trials: pd.DataFrame, state: dict[str, Any] | None,
                     study_lines: list[str] | None = None, has_epochs: bool = False) -> str:
    counts = trials["status"].value_counts()
    name = (state or {}).get("name", "sweep")
    title = "Study report" if study_lines is not None else "Sweep report"
    lines = [f"# {title}: {name}", ""]
    if state:
        lines.append(f"Search `{state.get('search', '?')}`, scheduler `{state.get('scheduler', '?')}`, "
                     f"status `{state.get('status', '?')}`.")
        if state.get("startup_trials"):
            lines.append(f"TPE's first {state['startup_trials']} of {state['configurations']} "
                         "configurations were random (its start-up); it modelled the rest.")
        if state.get("driver_wall_s"):
            runs = len(state.get("drivers") or [None])
            if wall_time_is_whole(state):
                lines.append(f"Sweep wall time {state['driver_wall_s']:.0f} s"
                             + (f" over {runs} driver runs (resumed)." if runs > 1 else "."))
            else:
                lines.append(f"Sweep wall time not known in full: at least {state['driver_wall_s']:.0f} s. "
                             "A driver run of this resumed sweep recorded no time (one stopped by "
                             "a kill, or still running), so no sweep efficiency is given.")
            efficiency = sweep_efficiency(trials, state)
            if efficiency is not None:
                lines.append(f"Sweep efficiency {efficiency:.2f} (trial wall times summed, over "
                             f"{state['max_concurrent_trials']} concurrent slots × the sweep's wall time).")
    lines.append("Trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                 + f" ({len(trials)} in all).")
    lines += ["", "SI-SNRi and SDRi are improvements in dB over the mixture. *val* is the best "
              "validation SI-SNRi (what the search optimises; trials stopped early by ASHA have it "
              "too); *test* is measured once, after the last epoch, with the best weights. "
              "Rows marked *(oracle grouping)* group the P outputs with the references "
              "(best assignment, MixIT-style) in training and evaluation, which a separator "
              "without references cannot do; a study also scores them with a grouping fixed on "
              "validation, which needs none (its claims section).", ""]
    if study_lines is not None:
        lines += study_lines
        lines += ["# Every trial", "", "The tables of any sweep, over the study's trials: cells "
                  "of the same depth and P pool the variants that share them.", ""]
    lines += sweep_sections(trials)
    plot_names = ["tradeoff.png", "depth_vs_oversep.png"]
    if study_lines is not None:
        plot_names = ["paired_differences.png", "si_snri_vs_oversep.png", "si_snri_vs_head_macs.png",
                      *plot_names]
    curves = f", every epoch: [{EPOCHS_FILE}]({EPOCHS_FILE})" if has_epochs else ""
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in plot_names) + ". Every trial: "
              f"[{TRIALS_FILE}]({TRIALS_FILE}){curves}; the front: [pareto.csv](pareto.csv).", ""]
    return "\n".join(lines)


def _design(inputs: Inputs) -> StudyDesign | None:
    if inputs.study is None:
        return None
    design = read_design(inputs.study, inputs.study_source)
    if "variant" not in inputs.trials.columns:
        raise UserError(f"{inputs.study_source}: a study, but its trials carry no variant column")
    return design


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN to None."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def render(out: Path, inputs: Inputs) -> dict[str, Any]:
    """Every file of the report, built before any is written; returns the summary."""
    trials = inputs.trials
    design = _design(inputs)
    files: dict[str, str | bytes] = {}
    if inputs.state is not None:  # a fresh collection: the tables behind everything else
        files[TRIALS_FILE] = csv_text(trials)
        if inputs.epochs is not None:
            files[EPOCHS_FILE] = csv_text(inputs.epochs)
        if inputs.milestones is not None:
            files[MILESTONES_FILE] = csv_text(inputs.milestones)
        if inputs.study is not None:
            files[STUDY_FILE] = json.dumps(study_file(inputs.state), indent=2) + "\n"
    summary: dict[str, Any] = {}
    study_lines = None
    if design is not None:
        study_lines, tables = study.sections(trials, inputs.epochs, design, inputs.milestones)
        searches = _tuning_lines(out, design)  # beside the tuned settings, before the budget
        at = study_lines.index("## Budget") if "## Budget" in study_lines else len(study_lines)
        study_lines[at:at] = searches
        study_lines += _analysis_lines(out)
        files.update({name: csv_text(table) for name, table in tables.items()})
        cells = tables["study_cells.csv"]
        files["si_snri_vs_oversep.png"] = plots.plot_vs_oversep(cells)
        files["si_snri_vs_head_macs.png"] = plots.plot_vs_head_macs(cells)
        claims = tables["study_claims.csv"]
        files["paired_differences.png"] = plots.plot_paired(
            tables["study_comparisons.csv"], claims, design.reference, design.margin_db)
        summary["claims"] = dict(zip(claims["claim"], claims["verdict"], strict=True))
        if "claims_by_budget.csv" in tables:
            by_budget = tables["claims_by_budget.csv"]
            files["claims_by_budget.png"] = plots.plot_claims_by_x(
                by_budget, "steps", "optimizer steps (log)", design.margin_db,
                "Claims by training budget: paired difference and CI at each milestone")
            summary["claims_by_budget"] = {
                int(steps): dict(zip(rows["claim"], rows["verdict"], strict=True))
                for steps, rows in by_budget.groupby("steps")}
    front = pareto_front(trials)
    files["pareto.csv"] = csv_text(front)
    files[rundir.REPORT] = summary_markdown(trials, inputs.sweep, study_lines,
                                          has_epochs=inputs.epochs is not None)
    files["tradeoff.png"] = plots.plot_tradeoff(trials)
    files["depth_vs_oversep.png"] = plots.plot_depth_vs_oversep(trials)
    for name, data in files.items():
        atomic_write(out / name, data)

    done = trials[np.isfinite(trials["test_si_snri"])]
    best = done.loc[done["test_si_snri"].idxmax()] if not done.empty else None
    counts = {str(k): int(v) for k, v in trials["status"].value_counts().items()}
    return {"trials": len(trials), **counts, "pareto": len(front),
            "best_test_si_snri": _plain(best["test_si_snri"]) if best is not None else None,
            "best_trial": str(best["trial_id"]) if best is not None else None, **summary}
