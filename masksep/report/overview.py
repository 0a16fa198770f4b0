"""One table over several study folders: claim x (data, backbone, budget, tuned) ->
n, difference, CI, verdict (issue 26, results/scale).

A manifest (YAML) names the folders and what each one is: the data source, the
backbone and whether its variants were tuned are facts of how the run was set
up, declared there; everything else is computed from the folders' own files.
A folder with budget milestones (milestones.csv) gives a row per claim and
milestone; one without gives its end-of-run claims at its budget (the median
optimizer steps of its completed trials)::

    title: The answer across scale
    runs:
      - folder: ../study          # relative to the manifest
        data: synthetic
        backbone: study-tcn
        tuned: false

``masksep overview MANIFEST`` writes overview.csv, overview.md and the plots
(claims against backbone MACs and against training compute) beside it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import masksep.report.plots as plots
import masksep.report.study as study
import masksep.stats as stats
from masksep import formats, rundir
from masksep.design import StudyDesign, read_design
from masksep.errors import UserError
from masksep.files import atomic_write
from masksep.report.collect import Inputs, load_folder
from masksep.report.schema import csv_text
from masksep.report.tables import markdown

COLUMNS = ["claim", "data", "backbone", "backbone_macs_per_s", "steps", "tuned", "train_macs",
           "n", "estimate", "ci_low", "ci_high", "ci_level", "verdict", "reference_si_snri",
           "comparison", "folder"]


@dataclass
class Entry:
    folder: Path
    data: str
    backbone: str
    tuned: bool


def read_manifest(path: Path) -> tuple[str, list[Entry]]:
    """The manifest's title and runs; a bad field is one UserError naming it."""
    from masksep.config import read_yaml

    raw = read_yaml(path)
    runs = raw.get("runs")
    if not isinstance(runs, list) or not runs:
        raise UserError(f"{path}: runs: expected a list of {{folder, data, backbone, tuned}}")
    entries = []
    for i, run in enumerate(runs):
        where = f"{path}: runs[{i}]"
        if not isinstance(run, dict):
            raise UserError(f"{where}: expected a mapping")
        unknown = sorted(set(run) - {"folder", "data", "backbone", "tuned"})
        if unknown:
            raise UserError(f"{where}.{unknown[0]}: unknown field (known: backbone, data, folder, tuned)")
        for key in ("folder", "data", "backbone"):
            if not isinstance(run.get(key), str) or not run[key]:
                raise UserError(f"{where}.{key}: expected a string")
        if not isinstance(run.get("tuned", False), bool):
            raise UserError(f"{where}.tuned: expected true or false")
        folder = (path.parent / run["folder"]).resolve()
        if not (folder / rundir.TRIALS).is_file():
            raise UserError(f"{where}.folder: {run['folder']} holds no trials.csv")
        entries.append(Entry(folder, run["data"], run["backbone"], bool(run.get("tuned", False))))
    title = raw.get("title", "Claims across scale")
    return str(title), entries


def rows_of(entry: Entry, inputs: Inputs, design: StudyDesign, relative_to: Path) -> pd.DataFrame:
    """The claims of one folder, at each of its milestones or at its end."""
    trials = inputs.trials
    done = trials[trials["status"] == "completed"]
    if inputs.milestones is not None and not inputs.milestones.empty:
        table = study.claims_by_budget(trials, inputs.milestones, design)
        at = {int(s): study.at_milestone(trials, inputs.milestones, int(s)) for s in table["steps"]}
    else:
        steps = int(done["train_steps"].median()) if len(done) else 0
        table = study.claims(trials, design).assign(steps=steps)
        at = {steps: trials}
    ref = done[done["variant"] == design.reference]
    macs = float(ref["macs_per_s"].median()) if len(ref) else math.nan
    # forward MACs over the training audio at a budget: MACs/s x seconds of audio a step x steps
    audio_per_step = float((done["train_audio_s"] / done["train_steps"]).median()) if len(done) else math.nan
    reference_score = {s: frame.loc[(frame["variant"] == design.reference)
                                    & (frame["status"] == "completed"), "test_si_snri"].mean()
                       for s, frame in at.items()}
    shown = os.path.relpath(entry.folder, relative_to.resolve())
    return table.assign(
        data=entry.data, backbone=entry.backbone, backbone_macs_per_s=macs, tuned=entry.tuned,
        train_macs=table["steps"] * audio_per_step * macs,
        reference_si_snri=table["steps"].map(reference_score), folder=shown)[COLUMNS]


def overview(manifest: str | Path) -> dict[str, Any]:
    """Read the manifest's folders; write overview.csv, overview.md and the plots beside it."""
    manifest = Path(manifest)
    title, entries = read_manifest(manifest)
    studies = [_load_study(e) for e in entries]  # each folder read once
    table = pd.concat([rows_of(e, inputs, design, manifest.parent)
                       for e, (inputs, design) in zip(entries, studies, strict=True)],
                      ignore_index=True)
    order = {c: i for i, c in enumerate(dict.fromkeys(table["claim"]))}  # the claims' own order
    table = table.assign(_order=table["claim"].map(order)).sort_values(
        ["_order", "data", "tuned", "backbone_macs_per_s", "steps"], kind="stable"
    ).drop(columns="_order").reset_index(drop=True)
    margin = _margin([design for _, design in studies])
    out = manifest.parent
    files: dict[str, str | bytes] = {"overview.csv": csv_text(table)}
    files["overview.md"] = _markdown(title, table, margin)
    # Against compute, a line per backbone (its points are its budgets); by size, a line
    # per data source (its points are its backbones).
    tuned = table["tuned"].map(lambda t: ", tuned" if t else "")
    by_run = table.assign(series=table["data"] + ", " + table["backbone"] + tuned)
    files["overview.png"] = plots.plot_claims_by_x(
        by_run, "train_macs", "training compute: forward MACs (log)",
        margin, "Claims across scale: paired difference and its CI", series="series")
    common = _common_budget(table)
    if common is not None:
        by_size = table.assign(series=table["data"] + tuned)
        by_size = by_size[by_size["steps"] == common]
        files["claims_by_size.png"] = plots.plot_claims_by_x(
            by_size, "backbone_macs_per_s", "backbone: MACs per second of audio (log)", margin,
            f"Claims by backbone size at {common:,} steps", series="series")
    for name, data in files.items():
        atomic_write(out / name, data)
    return {"runs": len(entries), "rows": len(table),
            "verdicts": table["verdict"].value_counts().to_dict(), "files": sorted(files)}


def _load_study(entry: Entry) -> tuple[Inputs, StudyDesign]:
    inputs = load_folder(entry.folder)
    if inputs.study is None:
        raise UserError(f"{entry.folder}: not a study (no study.json)")
    return inputs, read_design(inputs.study, inputs.study_source)


def _margin(designs: list[StudyDesign]) -> float:
    margins = {d.margin_db for d in designs}
    if len(margins) != 1:
        raise UserError("overview: the runs use different claim-3 margins "
                        f"({', '.join(f'{m:g}' for m in sorted(margins))} dB); compare like with like")
    return margins.pop()


def _common_budget(table: pd.DataFrame) -> int | None:
    """The budget shared by the most backbones (the size ladder's), if two or more share one."""
    counts = table.groupby("steps")["backbone"].nunique()
    counts = counts[counts >= 2]
    return int(counts.idxmax()) if len(counts) else None


def _markdown(title: str, table: pd.DataFrame, margin: float) -> str:
    lines = [f"# {title}", "",
             "Each row: one claim of Li, Hu & Luo (2022) in one study folder at one training "
             "budget; the paired difference in test SI-SNRi (dB) over seeds, its CI and the "
             "verdict computed from it (as in each folder's summary.md; claim 2's CI is "
             "Bonferroni-adjusted for the og variants it picks from; claim 3's margin is "
             f"-{margin:g} dB). *shallow* is the reference's own test SI-SNRi there: the regime.",
             ""]
    lines += glance_section(table)
    for claim, rows in table.groupby("claim", sort=False):
        lines += [f"## {claim}", ""]
        lines += markdown(pd.DataFrame({
            "data": rows["data"], "backbone": rows["backbone"],
            "MACs/s": rows["backbone_macs_per_s"].map(lambda v: f"{v / 1e6:.1f} M" if np.isfinite(v) else "-"),
            "steps": rows["steps"].map(lambda v: f"{int(v):,}"),
            "tuned": rows["tuned"].map(lambda v: "yes" if v else "no"),
            "shallow (dB)": rows["reference_si_snri"].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "-"),
            "comparison": rows["comparison"], "n": rows["n"].astype(int),
            "difference (dB)": rows["estimate"].map(formats.signed),
            "CI": [formats.level(lvl) + " " + formats.ci(lo, hi, missing="no CI") for lvl, lo, hi in
                   zip(rows["ci_level"], rows["ci_low"], rows["ci_high"], strict=True)],
            "verdict": rows["verdict"].map(lambda v: f"**{v}**"),
            "folder": rows["folder"],
        }))
        lines.append("")
    return "\n".join(lines)


RUN_KEYS = ["data", "backbone", "backbone_macs_per_s", "steps", "tuned", "folder"]


def glance(table: pd.DataFrame) -> pd.DataFrame:
    """One row per folder and budget, a column per claim: difference [CI] verdict."""
    claims = list(dict.fromkeys(table["claim"]))
    cell = table.assign(text=[
        f"{formats.signed(e)} {formats.ci(lo, hi, missing='no CI')} **{v.removesuffix(' at this n')}**"
        for e, lo, hi, v in zip(table["estimate"], table["ci_low"], table["ci_high"], table["verdict"],
                                strict=True)])
    runs = cell.drop_duplicates(RUN_KEYS)[[*RUN_KEYS, "reference_si_snri"]]
    # dropna=False: a folder whose reference never completed (no MACs) keeps its row
    wide = cell.pivot_table(index=RUN_KEYS, columns="claim", values="text", aggfunc="first",
                            dropna=False)
    n = cell.groupby(RUN_KEYS, dropna=False)["n"].max()
    out = runs.set_index(RUN_KEYS).join(n).join(wide.reindex(columns=claims)).reset_index()
    return out.fillna({c: "-" for c in claims})


def glance_section(table: pd.DataFrame) -> list[str]:
    """The whole answer in one table, and where each claim holds, counted."""
    wide = glance(table)
    claims = list(dict.fromkeys(table["claim"]))
    counts = "; ".join(
        f"claim {c.split('.')[0]} holds in {int((rows['verdict'] == stats.HOLDS).sum())} of {len(rows)}"
        f" and does not hold in {int((rows['verdict'] == stats.DOES_NOT_HOLD).sum())}"
        for c, rows in table.groupby("claim", sort=False))
    lines = ["## At a glance", "",
             f"A row per study folder and budget ({len(wide)}): each claim's paired difference "
             f"(dB), its CI and verdict (*not resolved*: at that n). {counts[0].upper()}{counts[1:]}.",
             ""]
    lines += markdown(pd.DataFrame({
        "data": wide["data"],
        "backbone": [f"{b} ({m / 1e6:.1f} M)" if np.isfinite(m) else b
                     for b, m in zip(wide["backbone"], wide["backbone_macs_per_s"], strict=True)],
        "steps": wide["steps"].map(lambda v: f"{int(v):,}"),
        "tuned": wide["tuned"].map(lambda v: "yes" if v else "no"),
        "shallow (dB)": wide["reference_si_snri"].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "-"),
        "n": wide["n"].astype(int),
        **{c: wide[c] for c in claims},
        "folder": wide["folder"],
    }))
    return [*lines, ""]
