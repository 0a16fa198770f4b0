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
           "n", "estimate", "ci_low", "ci_high", "ci_level", "p", "verdict", "non_inferior", "cost",
           "reference_si_snri", "comparison", "folder", "trials_key", "shares_trials", "also"]


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
    keys = [trials_key(at[s], c.split(" - "), entry, macs, s)
            for s, c in zip(table["steps"], table["comparison"], strict=True)]
    return table.assign(
        data=entry.data, backbone=entry.backbone, backbone_macs_per_s=macs, tuned=entry.tuned,
        train_macs=table["steps"] * audio_per_step * macs,
        reference_si_snri=table["steps"].map(reference_score), folder=shown,
        trials_key=keys, shares_trials=len(at) > 1, also="").reindex(
            columns=COLUMNS)


def trials_key(trials: pd.DataFrame, variants: list[str], entry: Entry, macs: float,
               steps: int) -> str:
    """What identifies a comparison's experiment: its design, not its outcome. The
    data source, tuned or not, the backbone (its MACs per second), the budget and, for
    each completed trial of the compared variants, its head and seed, hashed. Two
    folders whose rows share a key ran the same experiment (a re-run, or a milestone
    that is another study's budget): the same seeds, data and initial weights, so
    their results differ by numerics at most, and they count once."""
    import hashlib

    done = trials[(trials["status"] == "completed") & trials["variant"].isin(variants)]
    head = [c for c in ("head", "depth", "width", "oversep", "grouping", "layout") if c in done]
    cells = sorted("|".join(str(row[c]) for c in head) + f"|{row['seed']:g}"
                   for _, row in done.iterrows())
    text = "\n".join([entry.data, str(entry.tuned), f"{macs:.6g}", str(int(steps)), *cells])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def one_row_per_experiment(table: pd.DataFrame) -> pd.DataFrame:
    """Each (claim, experiment) once: a row whose trials another folder's row
    already holds is dropped, that folder named in the kept row's ``also``."""
    keep, also = [], {}
    seen: dict[tuple[str, str], int] = {}
    for i, row in table.iterrows():
        key = (row["claim"], row["trials_key"])
        if key in seen:
            also.setdefault(seen[key], []).append(row["folder"])
        else:
            seen[key] = i
            keep.append(i)
    out = table.loc[keep].copy()
    out["also"] = [", ".join(also.get(i, [])) for i in keep]
    return out.reset_index(drop=True)


def _linked_folders(table: pd.DataFrame) -> dict[str, str]:
    """Folders that share trials (a row's ``also``) in one group, named by its
    first folder: such folders are one experiment, not two."""
    parent = {f: f for f in table["folder"]}

    def root(f: str) -> str:
        while parent[f] != f:
            f = parent[f]
        return f

    for folder, also in zip(table["folder"], table["also"], strict=True):
        for other in filter(None, str(also or "").split(", ")):
            parent.setdefault(other, other)
            parent[root(other)] = root(folder)
    return {f: root(f) for f in table["folder"]}


def independent(table: pd.DataFrame, margin: float) -> pd.DataFrame:
    """Per claim, the independent experiments: one row per group of folders that
    share trials (at its final budget, whose trials are those of its earlier
    milestones and of any folder that repeats them), the p-values
    Holm-adjusted across them and the verdict read from the adjusted p (and,
    for claim 3, the cost part, which no n changes)."""
    picked = []
    for _, rows in table.groupby("claim", sort=False):  # folders linked by this claim's rows only
        group = _linked_folders(rows)
        rows = rows.assign(_group=rows["folder"].map(group))
        last = rows[rows["steps"] == rows.groupby("_group")["steps"].transform("max")]
        last = last.drop_duplicates("_group")
        members: dict[str, list[str]] = {}
        for folder, root in group.items():
            members.setdefault(root, []).append(folder)
        last = last.assign(also=[", ".join(f for f in members[g] if f != folder)
                                 for folder, g in zip(last["folder"], last["_group"], strict=True)])
        picked.append(last.drop(columns="_group"))
    last = pd.concat(picked, ignore_index=True) if picked else table.iloc[0:0]
    parts = []
    for _, rows in last.groupby("claim", sort=False):
        rows = rows.copy()
        rows["p_holm"] = stats.holm(rows["p"])
        bound = np.where(rows["claim"].str.startswith("3"), -margin, 0.0)
        side = np.where(rows["estimate"] > bound, stats.HOLDS, stats.DOES_NOT_HOLD)
        part = np.where(rows["p_holm"] < 1 - stats.CONFIDENCE, side, stats.NOT_RESOLVED)
        if rows["claim"].iloc[0].startswith("3"):
            part = [study._both(a, c) for a, c in zip(part, rows["cost"], strict=True)]
        rows["verdict_holm"] = part
        parts.append(rows)
    return pd.concat(parts, ignore_index=True) if parts else last.assign(p_holm=[], verdict_holm=[])


def overview(manifest: str | Path) -> dict[str, Any]:
    """Read the manifest's folders; write overview.csv, overview.md and the plots beside it."""
    manifest = Path(manifest)
    title, entries = read_manifest(manifest)
    studies = [_load_study(e) for e in entries]  # each folder read once
    table = pd.concat([rows_of(e, inputs, design, manifest.parent)
                       for e, (inputs, design) in zip(entries, studies, strict=True)],
                      ignore_index=True)
    table = one_row_per_experiment(table)
    order = {c: i for i, c in enumerate(dict.fromkeys(table["claim"]))}  # the claims' own order
    table = table.assign(_order=table["claim"].map(order)).sort_values(
        ["_order", "data", "tuned", "backbone_macs_per_s", "steps"], kind="stable"
    ).drop(columns="_order").reset_index(drop=True)
    margin = _margin([design for _, design in studies])
    out = manifest.parent
    files: dict[str, str | bytes] = {"overview.csv": csv_text(table)}
    files["overview.md"] = _markdown(title, table, margin)
    files["independent.csv"] = csv_text(independent(table, margin))
    # Against compute, a colour per (data, backbone, tuned) and a line per folder (its
    # points are its budgets); by size, a line per data source (its points are its backbones).
    tuned = table["tuned"].map(lambda t: ", tuned" if t else "")
    by_run = table.assign(series=table["data"] + ", " + table["backbone"] + tuned)
    files["overview.png"] = plots.plot_claims_by_x(
        by_run, "train_macs", "training compute: forward MACs (log)",
        margin, "Claims across scale: paired difference and its CI", series="series",
        line_by="folder")
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
             "Each row: one claim of Li, Hu & Luo (2022) in one experiment at one training "
             "budget; the paired difference in test SI-SNRi (dB) over seeds, its CI and the "
             "verdict computed from it (as in each folder's summary.md: comparators named in "
             "the spec or picked on validation; a family pick's CI Bonferroni-adjusted; claim "
             f"3 non-inferior at -{margin:g} dB *and* cheaper). *shallow* is the reference's own "
             "test SI-SNRi there: the regime. An experiment is shown once: a folder whose "
             "trials another already holds is named under *also*, and the budgets of one "
             "folder (marked †) are the same trials scored at several steps, not "
             "replications.", ""]
    lines += glance_section(table)
    lines += independent_section(independent(table, margin))
    for claim, rows in table.groupby("claim", sort=False):
        lines += [f"## {claim}", ""]
        lines += markdown(pd.DataFrame({
            "data": rows["data"], "backbone": rows["backbone"],
            "MACs/s": rows["backbone_macs_per_s"].map(lambda v: f"{v / 1e6:.1f} M" if np.isfinite(v) else "-"),
            "steps": _steps(rows),
            "tuned": rows["tuned"].map(lambda v: "yes" if v else "no"),
            "shallow (dB)": rows["reference_si_snri"].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "-"),
            "comparison": rows["comparison"], "n": rows["n"].astype(int),
            "difference (dB)": rows["estimate"].map(formats.signed),
            "CI": [formats.level(lvl) + " " + formats.ci(lo, hi, missing="no CI") for lvl, lo, hi in
                   zip(rows["ci_level"], rows["ci_low"], rows["ci_high"], strict=True)],
            "verdict": rows["verdict"].map(lambda v: f"**{v}**"),
            "folder": _folders(rows),
        }))
        lines.append("")
    return "\n".join(lines)


def _steps(rows: pd.DataFrame) -> list[str]:
    return [f"{int(v):,}" + (" †" if shared else "")
            for v, shared in zip(rows["steps"], rows["shares_trials"], strict=True)]


def _folders(rows: pd.DataFrame) -> list[str]:
    return [f + (f" (also {a})" if isinstance(a, str) and a else "")
            for f, a in zip(rows["folder"], rows["also"], strict=True)]


RUN_KEYS = ["data", "backbone", "backbone_macs_per_s", "steps", "tuned", "folder"]


def glance(table: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment and budget, a column per claim: difference [CI] verdict."""
    claims = list(dict.fromkeys(table["claim"]))
    cell = table.assign(text=[
        f"{formats.signed(e)} {formats.ci(lo, hi, missing='no CI')} **{v.removesuffix(' at this n')}**"
        for e, lo, hi, v in zip(table["estimate"], table["ci_low"], table["ci_high"], table["verdict"],
                                strict=True)])
    runs = cell.drop_duplicates(RUN_KEYS)[[*RUN_KEYS, "reference_si_snri", "shares_trials", "also"]]
    # dropna=False: a folder whose reference never completed (no MACs) keeps its row
    wide = cell.pivot_table(index=RUN_KEYS, columns="claim", values="text", aggfunc="first",
                            dropna=False)
    n = cell.groupby(RUN_KEYS, dropna=False)["n"].max()
    out = runs.set_index(RUN_KEYS).join(n).join(wide.reindex(columns=claims)).reset_index()
    return out.fillna({c: "-" for c in claims})


def glance_section(table: pd.DataFrame) -> list[str]:
    """The whole answer in one table."""
    wide = glance(table)
    claims = list(dict.fromkeys(table["claim"]))
    lines = ["## At a glance", "",
             f"A row per experiment and budget ({len(wide)}; † marks budgets of one folder, "
             "the same trials): each claim's paired difference (dB), its CI and verdict "
             "(*not resolved*: at that n, which is not a negative result). How often each claim "
             "holds is counted over independent experiments only, below.", ""]
    lines += markdown(pd.DataFrame({
        "data": wide["data"],
        "backbone": [f"{b} ({m / 1e6:.1f} M)" if np.isfinite(m) else b
                     for b, m in zip(wide["backbone"], wide["backbone_macs_per_s"], strict=True)],
        "steps": _steps(wide),
        "tuned": wide["tuned"].map(lambda v: "yes" if v else "no"),
        "shallow (dB)": wide["reference_si_snri"].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "-"),
        "n": wide["n"].astype(int),
        **{c: wide[c] for c in claims},
        "folder": _folders(wide),
    }))
    return [*lines, ""]


def independent_section(ind: pd.DataFrame) -> list[str]:
    """Per claim, the independent experiments and their verdicts after Holm's
    adjustment across them: the only place a count of verdicts is given."""
    lines = ["## Independent experiments, Holm-adjusted", "",
             "Per claim, one row per set of trials (a folder at its final budget; its earlier "
             "budgets are the same trials). The p-value is the paired t-test against the "
             "verdict's bound (0; claim 3: the margin), Holm-adjusted across the experiments "
             "of the claim, so a count below controls the chance of any false verdict at 5 %.",
             ""]
    counts = []
    for claim, rows in ind.groupby("claim", sort=False):
        v = rows["verdict_holm"]
        counts.append(f"**{claim}**: {len(rows)} experiment{'s' if len(rows) != 1 else ''}; holds in "
                      f"{int((v == stats.HOLDS).sum())}, does not hold in "
                      f"{int((v == stats.DOES_NOT_HOLD).sum())}, not resolved in "
                      f"{int((v == stats.NOT_RESOLVED).sum())}")
    lines += [f"- {c}" for c in counts]
    lines.append("")
    lines += markdown(pd.DataFrame({
        "claim": ind["claim"], "experiment": _folders(ind),
        "steps": ind["steps"].map(lambda v: f"{int(v):,}"),
        "n": ind["n"].astype(int), "difference (dB)": ind["estimate"].map(formats.signed),
        "p": ind["p"].map(formats.p_value), "Holm p": ind["p_holm"].map(formats.p_value),
        "verdict after Holm": ind["verdict_holm"].map(lambda v: f"**{v}**"),
    }))
    return [*lines, ""]
