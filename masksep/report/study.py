"""The study's report: budget, cells, paired comparisons, the paper's claims
checked from confidence intervals, what the design resolves, and the ASHA check.

A study trains every head variant at the same seeds with common random
numbers (same backbone init, data stream and evaluation set for a seed), so a
variant's difference from the reference at one seed is a pair. Every number
here is test SI-SNRi of completed trials unless it says otherwise.

The claims of Li, Hu & Luo (Interspeech 2022), each one of holds / does not
hold / not resolved at this n, computed from the CI and never written by hand:

1. deep > shallow: d = deep - reference; holds if the CI lies above 0, does
   not hold if it lies below 0.
2. OG with P > C > shallow: the best learned-grouping og variant with P > C
   minus the reference, its CI Bonferroni-adjusted for the number of learned og
   variants it was picked from. Oracle grouping is an upper bound, in its own
   row, not the claim.
3. deep is an efficient OG (non-inferiority): d = deep - that best learned og;
   holds when the CI lies above -margin_db and the deep head's MACs are lower;
   does not hold when the CI lies below -margin_db or its MACs are not lower.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import masksep.stats as stats
from masksep import formats, rundir
from masksep.design import StudyDesign, default_deep, og_members
from masksep.errors import UserError
from masksep.report.tables import fmt, macs, markdown, n_src_values, p_value

METRIC = "test_si_snri"
FIXED_METRIC = "test_si_snri_fixed"  # an oracle-grouping og head scored without references
FIXED_SUFFIX = " (fixed grouping)"  # its rows in the cells and paired differences
TARGET_DB = 0.2  # the difference the seeds-needed line is sized for (issue 9)


# --------------------------------------------------------------------------- per variant


def _variant_order(trials: pd.DataFrame, design: StudyDesign) -> list[str]:
    seen = [v for v in dict.fromkeys(trials["variant"]) if v]
    return [*design.variants, *[v for v in seen if v not in design.variants]]


def variants(trials: pd.DataFrame, design: StudyDesign) -> pd.DataFrame:
    """One row per variant: its head (taken from its trials: one head per
    variant), C, head and model MACs per second, trials planned and completed."""
    out = []
    for name in _variant_order(trials, design):
        rows = trials[trials["variant"] == name]
        first = rows.iloc[0] if len(rows) else pd.Series(dtype=object)
        c = n_src_values(rows) or n_src_values(trials)
        out.append({
            "variant": name, "head": first.get("head", ""), "depth": first.get("depth", math.nan),
            "width": first.get("width", math.nan), "oversep": first.get("oversep", math.nan),
            "grouping": first.get("grouping", ""), "n_src": min(c) if c else math.nan,
            "head_macs_per_s": rows["head_macs_per_s"].median(),
            "head_params": rows["head_params"].median(),
            "macs_per_s": rows["macs_per_s"].median(), "trials": len(rows),
            "completed": int((rows["status"] == "completed").sum()),
        })
    return pd.DataFrame(out).set_index("variant") if out else pd.DataFrame(
        columns=["head", "depth", "width", "oversep", "grouping", "n_src", "head_macs_per_s",
                 "head_params", "macs_per_s", "trials", "completed"])


def by_seed(trials: pd.DataFrame, design: StudyDesign, metric: str = METRIC) -> pd.DataFrame:
    """seed x variant table of ``metric`` over completed trials, with a column
    for each pooled row (the mean of its variants at a seed where all have one)."""
    done = trials[(trials["status"] == "completed") & np.isfinite(trials[metric])
                  & np.isfinite(trials["seed"])]
    table = done.pivot_table(index="seed", columns="variant", values=metric, aggfunc="mean")
    table = table.reindex(columns=_variant_order(trials, design))
    for name, members in design.pooled_members.items():
        table[name] = table.reindex(columns=members).mean(axis=1, skipna=False)
    fixed = {"test_si_snri": FIXED_METRIC, "test_sdri": "test_sdri_fixed"}.get(metric)
    if fixed in trials.columns:  # oracle og heads scored again, without references
        scored = done[np.isfinite(done[fixed])]
        extra = scored.pivot_table(index="seed", columns="variant", values=fixed, aggfunc="mean")
        for name in extra.columns:
            table[name + FIXED_SUFFIX] = extra[name].reindex(table.index)
    return table


def budget(trials: pd.DataFrame, design: StudyDesign) -> pd.DataFrame:
    """What each variant's trials were given: epochs, optimizer steps, wall time
    and forward MACs over the training audio (model MACs/s x seconds of audio)."""
    out = []
    for name in _variant_order(trials, design):
        rows = trials[trials["variant"] == name]
        done = rows[rows["status"] == "completed"]
        out.append({
            "variant": name, "completed": f"{len(done)} of {len(rows)}",
            "epochs": done["epochs"].mean(), "train_steps": done["train_steps"].mean(),
            "wall_s": done["wall_s"].mean(),
            "train_macs": (done["macs_per_s"] * done["train_audio_s"]).mean(),
            "train_audio_s": done["train_audio_s"].mean(),
        })
    return pd.DataFrame(out)


def cells(trials: pd.DataFrame, design: StudyDesign) -> pd.DataFrame:
    """One row per variant and pooled row: test SI-SNRi n, mean, std, 95% CI
    over seeds, and test SDRi mean with its CI."""
    info = variants(trials, design)
    si = by_seed(trials, design)
    sd = by_seed(trials, design, "test_sdri")
    out = []
    for name in si.columns:
        members = design.pooled_members.get(name)
        row = {"variant": name, "pooled": " + ".join(members) if members else ""}
        base = name.removesuffix(FIXED_SUFFIX)
        if members is None and base in info.index:
            row.update(info.loc[base].to_dict())
            if base != name:
                row["grouping"] = "fixed"
        else:
            row.update(head="pooled", head_macs_per_s=math.nan)
        row.update(stats.describe(si[name]))
        sdri = stats.describe(sd[name]) if name in sd.columns else stats.describe([])
        row.update(sdri_mean=sdri["mean"], sdri_ci_low=sdri["ci_low"], sdri_ci_high=sdri["ci_high"])
        out.append(row)
    return pd.DataFrame(out)


def comparisons(trials: pd.DataFrame, design: StudyDesign) -> pd.DataFrame:
    """Every variant (and pooled row) minus the reference at the same seeds."""
    table = by_seed(trials, design)
    ref = table[design.reference] if design.reference in table.columns else pd.Series(
        math.nan, index=table.index)
    out = []
    for name in table.columns:
        if name == design.reference:
            continue
        out.append({"variant": name, "pooled": name in design.pooled_members,
                    **stats.paired(table[name], ref)})
    return pd.DataFrame(out, columns=["variant", "pooled", "n", "mean", "std", "ci_low", "ci_high",
                                      "p_t", "p_wilcoxon"])


# --------------------------------------------------------------------------- claims


def _heads(info: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Each variant's head as design.py's rules read it."""
    return {v: {"head": r["head"], "depth": r["depth"], "oversep": r["oversep"],
                "grouping": r["grouping"], "n_src": r["n_src"]} for v, r in info.iterrows()}


def _deep_variant(info: pd.DataFrame, design: StudyDesign) -> tuple[str | None, str]:
    if design.deep:
        return design.deep, "named in the spec (study.claims.deep)"
    deep = default_deep(_heads(info))
    if deep is None:
        return None, "no deep variant of depth >= 2 (name one with study.claims.deep)"
    return deep, "the first deep variant of depth 3 (the default rule; not named in the spec)"


# How each reading of OG is scored: the og variants of one grouping, and the metric.
READINGS = {
    "learned": ("learned", "learned", METRIC,
                "og heads with a learned soft grouping, used at test"),
    "oracle": ("best assignment", "oracle", METRIC,
               "og heads trained and scored with the best-assignment grouping (MixIT's): it uses "
               "the test references to group"),
    "fixed": ("fixed grouping", "oracle", FIXED_METRIC,
              "the same best-assignment heads, scored with the grouping found best most often on "
              "validation, fixed for test: no references at test"),
}


def _pick_on_validation(trials: pd.DataFrame, design: StudyDesign, names: list[str]) -> str | None:
    """The member of ``names`` with the largest mean paired difference from the
    reference in best validation SI-SNRi (the rule for 'the best of a family':
    never the test score)."""
    table = by_seed(trials, design, "best_val_si_snri")
    ref = design.reference
    if ref not in table.columns:
        return None
    means = {n: (table[n] - table[ref]).mean() for n in names if n in table.columns}
    means = {n: m for n, m in means.items() if math.isfinite(m)}
    return max(means, key=means.get) if means else None


def comparators(trials: pd.DataFrame, design: StudyDesign, info: pd.DataFrame, grouping: str
                ) -> dict[str, Any]:
    """Claim 2's family and claim 3's single og comparator for one grouping, and
    how each was chosen: named in the spec, or picked on validation from the
    declared (else the default) family. Never on test."""
    members = og_members(_heads(info), grouping)
    declared_family = design.claims.family(grouping)
    family = list(declared_family) if declared_family is not None else members
    listed = ", ".join(family) or "none"
    family_how = (f"family declared in the spec: {listed}" if declared_family is not None
                  else f"default family, every og with {grouping} grouping and P > C: {listed}")
    single = design.claims.single(grouping)
    if single:
        one, one_how = single, "named in the spec"
    else:
        one = _pick_on_validation(trials, design, family)
        one_how = f"best on validation of the {family_how}"
    if declared_family is None and single:
        two, k, two_how = single, 1, "named in the spec"
    else:
        two = _pick_on_validation(trials, design, family)
        k = max(len(family), 1)
        two_how = (f"best on validation of the {family_how}; CI Bonferroni-adjusted for "
                   f"{len(family)}" if len(family) > 1 else family_how)
    return {"family": family, "claim2": two, "k": k, "claim2_how": two_how,
            "claim3": one, "claim3_how": one_how}


def _scored(trials: pd.DataFrame, reading: str) -> pd.DataFrame | None:
    """``trials`` with the og heads of ``reading`` scored as it scores them (the
    fixed-grouping score in place of the best-assignment one); None when the
    run did not measure that reading."""
    metric = READINGS[reading][2]
    if metric == METRIC:
        return trials
    if metric not in trials.columns:
        return None
    out = trials.copy()
    rows = (out["head"] == "og") & (out["grouping"] == READINGS[reading][1])
    out.loc[rows, METRIC] = out.loc[rows, metric]
    return out


def _cost(info: pd.DataFrame, deep: str | None, og: str | None) -> dict[str, Any]:
    def get(col: str, name: str | None) -> float:
        return float(info[col].get(name, math.nan)) if name else math.nan

    out = {"deep_head_macs": get("head_macs_per_s", deep), "og_head_macs": get("head_macs_per_s", og),
           "deep_head_params": get("head_params", deep), "og_head_params": get("head_params", og)}
    macs_known = math.isfinite(out["deep_head_macs"]) and math.isfinite(out["og_head_macs"])
    if not macs_known:
        out["cost"] = stats.NOT_RESOLVED
    else:
        out["cost"] = stats.HOLDS if out["deep_head_macs"] < out["og_head_macs"] else stats.DOES_NOT_HOLD
    return out


def _both(non_inferior: str, cost: str) -> str:
    """Claim 3 holds when both parts hold and does not when either does not."""
    if stats.DOES_NOT_HOLD in (non_inferior, cost):
        return stats.DOES_NOT_HOLD
    return stats.HOLDS if non_inferior == cost == stats.HOLDS else stats.NOT_RESOLVED


# p: two-sided paired t p-value against the verdict's bound (0; claim 3: -margin), times
# the Bonferroni factor of a family pick: what the overview adjusts across experiments.
CLAIM_COLUMNS = ["claim", "reading", "comparison", "picked", "n", "estimate", "ci_low", "ci_high",
                 "ci_level", "p", "verdict", "non_inferior", "cost", "deep_head_macs", "og_head_macs",
                 "deep_head_params", "og_head_params", "sensitivity", "note"]


def claims(trials: pd.DataFrame, design: StudyDesign) -> pd.DataFrame:
    """The claims table: claim 1, then claims 2 and 3 under each reading of OG the
    design has (learned grouping; best-assignment grouping, scored with the best
    assignment and with a grouping fixed on validation)."""
    info = variants(trials, design)
    ref = design.reference
    deep, deep_how = _deep_variant(info, design)
    rows: list[dict[str, Any]] = []

    def pair(table: pd.DataFrame, a: str | None, b: str | None,
             confidence: float = stats.CONFIDENCE) -> dict[str, Any]:
        if a is None or b is None or a not in table.columns or b not in table.columns:
            return stats.paired([], [], confidence)
        return stats.paired(table[a], table[b], confidence)

    def p_of(table: pd.DataFrame, a: str | None, b: str | None, bound: float, k: int = 1) -> float:
        if a is None or b is None or a not in table.columns or b not in table.columns:
            return math.nan
        return min(1.0, k * stats.p_against(table[a], table[b], bound))

    def row(claim: str, reading: str, a: str | None, b: str | None, result: dict[str, Any],
            level: float, verdict: str, picked: str, note: str, **extra: Any) -> None:
        rows.append({"claim": claim, "reading": reading,
                     "comparison": f"{a or '(none)'} - {b or '(none)'}", "picked": picked,
                     "n": result["n"], "estimate": result["mean"], "ci_low": result["ci_low"],
                     "ci_high": result["ci_high"], "ci_level": level, "verdict": verdict,
                     "note": note, **extra})

    table = by_seed(trials, design)
    one = pair(table, deep, ref)
    row("1. deep > shallow", "", deep, ref, one, stats.CONFIDENCE,
        stats.verdict(one["ci_low"], one["ci_high"]), f"deep: {deep_how}", "",
        p=p_of(table, deep, ref, 0.0))

    margin = design.margin_db
    for reading, (label, grouping, _, what) in READINGS.items():
        picks = comparators(trials, design, info, grouping)
        if not picks["family"] and not picks["claim3"]:
            continue  # the design has no og of this grouping
        scored = _scored(trials, reading)
        if scored is None:
            continue  # not measured in this run (claims_section says so)
        table = by_seed(scored, design)
        level = 1 - (1 - stats.CONFIDENCE) / picks["k"]
        two = pair(table, picks["claim2"], ref, level)
        row(f"2. OG (P > C) > shallow [{label}]", reading, picks["claim2"], ref, two, level,
            stats.verdict(two["ci_low"], two["ci_high"]), f"og: {picks['claim2_how']}", what,
            p=p_of(table, picks["claim2"], ref, 0.0, picks["k"]))

        og = picks["claim3"]
        three = pair(table, deep, og)
        cost = _cost(info, deep, og)
        non_inferior = stats.verdict(three["ci_low"], three["ci_high"], -margin)
        if deep is None or og is None:
            non_inferior = cost["cost"] = stats.NOT_RESOLVED
        verdict = _both(non_inferior, cost["cost"])
        failed = [part for part, v in (("non-inferiority", non_inferior), ("cost", cost["cost"]))
                  if v == stats.DOES_NOT_HOLD]
        sensitivity = "; ".join(
            f"{m:g} dB: {_both(stats.verdict(three['ci_low'], three['ci_high'], -m), cost['cost'])}"
            for m in design.sensitivity_db)
        row(f"3. deep is an efficient OG [{label}]", reading, deep, og, three, stats.CONFIDENCE,
            verdict, f"og: {picks['claim3_how']}",
            (f"fails on {' and '.join(failed)}; " if failed else "")
            + f"margin -{margin:g} dB; head MACs/s {macs(cost['deep_head_macs'])} (deep) vs "
            f"{macs(cost['og_head_macs'])} (og)",
            non_inferior=non_inferior, sensitivity=sensitivity, p=p_of(table, deep, og, -margin),
            **cost)
    return pd.DataFrame(rows).reindex(columns=CLAIM_COLUMNS)


def unmeasured_readings(trials: pd.DataFrame, design: StudyDesign) -> list[str]:
    """Readings the design has og heads for but the run did not score (a run
    made before the fixed-grouping score existed)."""
    info = variants(trials, design)
    return [READINGS[r][0] for r in READINGS
            if og_members(_heads(info), READINGS[r][1]) and _scored(trials, r) is None]


def resolution(comparisons_df: pd.DataFrame, design: StudyDesign, target: float = TARGET_DB
               ) -> dict[str, Any]:
    """The smallest difference this design resolves: the 95% CI half-width of
    a paired difference at the design's seeds, from the pooled SD of the paired
    differences; and the seeds needed for a half-width of ``target`` dB."""
    rows = comparisons_df[~comparisons_df["pooled"].astype(bool)] if len(comparisons_df) else comparisons_df
    sd, dof = stats.pooled_sd(zip(rows["n"].astype(int), rows["std"], strict=True))
    n = design.repeats or (int(rows["n"].max()) if len(rows) else 0)
    return {"sd": sd, "dof": dof, "n": n, "half_width": stats.half_width(sd, n),
            "target": target, "seeds_needed": stats.seeds_needed(sd, target),
            "power": stats.power(sd, n, target), "seeds_for_power": stats.seeds_for_power(sd, target)}


# --------------------------------------------------------------------------- budget milestones


def at_milestone(trials: pd.DataFrame, milestones: pd.DataFrame, steps: int) -> pd.DataFrame:
    """The trials as they stood at ``steps``: their test scores (and the best
    validation and epoch behind them) replaced by the milestone's. A completed
    trial without that milestone has no test score there (NaN), so it drops out
    of the pairs instead of lending its end-of-run score."""
    marks = milestones[milestones["steps"] == steps].drop_duplicates("trial_id", keep="last")
    marks = marks.set_index("trial_id")
    cols = ["best_epoch", "best_val_si_snri", "test_si_snr", "test_si_snri", "test_sdri",
            *[c for c in rundir.FIXED_KEYS if c in trials.columns]]
    out = trials.copy()
    for col in cols:  # a score the milestone did not take is missing there, not the end's
        out[col] = (out["trial_id"].map(marks[col]).astype(float) if col in marks.columns
                    else math.nan)
    out["train_steps"] = float(steps)
    return out


def claims_by_budget(trials: pd.DataFrame, milestones: pd.DataFrame, design: StudyDesign
                     ) -> pd.DataFrame:
    """Every claim at every budget milestone: the claims table, computed exactly
    as at the end, on the test scores each trial had at that step."""
    steps = design.milestones or sorted(int(s) for s in milestones["steps"].unique())
    frames = [claims(at_milestone(trials, milestones, s), design).assign(steps=s) for s in steps]
    columns = ["steps", *CLAIM_COLUMNS]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def convergence(trials: pd.DataFrame, epochs: pd.DataFrame, design: StudyDesign,
                steps: list[int]) -> pd.DataFrame:
    """Was validation still improving at each budget? Per trial, the least-squares
    slope of validation SI-SNRi against optimizer steps over the last quarter of
    the epochs up to the budget (at least three); per variant, the mean slope
    over seeds (dB per 1,000 steps) with its t CI: *still improving* when the CI
    lies above 0, *declining* below it, else *no trend resolved*."""
    done = trials[trials["status"] == "completed"]
    per_epoch = (done.set_index("trial_id")["train_steps"] / done.set_index("trial_id")["epochs"])
    curves = epochs[epochs["trial_id"].isin(done["trial_id"])]
    rows = []
    for budget_steps in steps:
        for name in _variant_order(trials, design):
            slopes = []
            for trial_id in done.loc[done["variant"] == name, "trial_id"]:
                spe = per_epoch.get(trial_id, math.nan)
                if not (math.isfinite(spe) and spe > 0):
                    continue
                last = int(round(budget_steps / spe))
                window = max(3, math.ceil(last / 4))
                curve = curves[(curves["trial_id"] == trial_id) & (curves["epoch"] <= last)
                               & (curves["epoch"] > last - window)]
                curve = curve[np.isfinite(curve["val_si_snri"].astype(float))]
                if len(curve) >= 3:
                    x = curve["epoch"].to_numpy(float) * spe / 1000
                    slopes.append(float(np.polyfit(x, curve["val_si_snri"].to_numpy(float), 1)[0]))
            d = stats.describe(slopes)
            trend = {stats.HOLDS: "still improving", stats.DOES_NOT_HOLD: "declining"}.get(
                stats.verdict(d["ci_low"], d["ci_high"]), "no trend resolved")
            rows.append({"steps": budget_steps, "variant": name, "n": d["n"],
                         "slope_db_per_kstep": d["mean"], "ci_low": d["ci_low"],
                         "ci_high": d["ci_high"], "trend": trend})
    return pd.DataFrame(rows, columns=["steps", "variant", "n", "slope_db_per_kstep", "ci_low",
                                       "ci_high", "trend"])


# --------------------------------------------------------------------------- the ASHA check


def asha_rank_check(source: str | Path | pd.DataFrame, epochs: pd.DataFrame | None = None,
                    grace_periods: list[int] | None = None, reduction_factor: float = 2.0
                    ) -> pd.DataFrame:
    """Does the rung metric at epoch g rank trials as their final test SI-SNRi does?

    ``source`` is a study folder (its trials.csv and epochs.csv, or its sweep)
    or a trials DataFrame with ``epochs`` beside it. The rung metric is
    best_val_si_snri at epoch g, what ASHA compares (the sweeps' METRIC). For
    each g and each head kind (and "all"): Spearman's rho and p between the rung
    metric and the final test SI-SNRi (n >= 3), the kind's mean at g and at the
    end, the kind's rank among head kinds at g and at the end, the share of its
    trials an ASHA rung at g with ``reduction_factor`` would stop, and
    ``catches_up``: behind at g (a worse rank) but ahead at the end.
    """
    from scipy import stats as scipy_stats

    if isinstance(source, (str, Path)):
        from masksep.report.collect import load_folder

        inputs = load_folder(Path(source))
        trials, epochs = inputs.trials, inputs.epochs
        if epochs is None:
            raise UserError(f"{source}: no epochs.csv (learning curves) to check ASHA against")
    else:
        trials = source
        if epochs is None:
            raise UserError("asha_rank_check: a trials DataFrame needs its epochs DataFrame too")
    done = trials[(trials["status"] == "completed") & np.isfinite(trials[METRIC])]
    curves = epochs[epochs["trial_id"].isin(done["trial_id"])].sort_values(["trial_id", "epoch"])
    rung = curves["best_val_si_snri"].where(
        np.isfinite(curves["best_val_si_snri"].astype(float)),
        curves.groupby("trial_id")["val_si_snri"].cummax())
    curves = curves.assign(rung=rung.astype(float))
    if grace_periods is None:
        last = int(curves["epoch"].max()) if len(curves) else 0
        grace_periods = list(range(1, last))
    out = []
    for g in grace_periods:
        at = curves[curves["epoch"] == g][["trial_id", "rung"]].merge(
            done[["trial_id", "head", METRIC]], on="trial_id")
        at = at[np.isfinite(at["rung"])]
        if at.empty:
            continue
        cutoff = np.nanpercentile(at["rung"], (1 - 1 / reduction_factor) * 100)  # as Ray's ASHA
        part = []
        for head, rows in [("all", at), *at.groupby("head", sort=True)]:
            rho, p = math.nan, math.nan
            if len(rows) >= 3 and rows["rung"].nunique() > 1 and rows[METRIC].nunique() > 1:
                result = scipy_stats.spearmanr(rows["rung"], rows[METRIC])
                rho, p = float(result.statistic), float(result.pvalue)
            part.append({"grace_period": g, "head": head, "n": len(rows), "spearman_rho": rho,
                         "spearman_p": p, "rung_mean": rows["rung"].mean(),
                         "final_mean": rows[METRIC].mean(),
                         "stopped_share": float((rows["rung"] < cutoff).mean())})
        frame = pd.DataFrame(part)
        kinds = frame["head"] != "all"
        frame.loc[kinds, "rank_at_g"] = frame.loc[kinds, "rung_mean"].rank(ascending=False, method="min")
        frame.loc[kinds, "rank_final"] = frame.loc[kinds, "final_mean"].rank(ascending=False, method="min")
        frame["catches_up"] = kinds & (frame["rank_final"] < frame["rank_at_g"])
        out.append(frame)
    columns = ["grace_period", "head", "n", "spearman_rho", "spearman_p", "rung_mean", "final_mean",
               "rank_at_g", "rank_final", "stopped_share", "catches_up"]
    return pd.concat(out, ignore_index=True)[columns] if out else pd.DataFrame(columns=columns)


# --------------------------------------------------------------------------- markdown


_ci = formats.ci  # masksep/formats.py: [+0.12, +0.30], or "no CI (n < 2)"


def _variant_label(row: pd.Series | dict) -> str:
    name = row["variant"]
    if row.get("pooled"):
        return f"{name} (pooled: {row['pooled']}; per-seed mean)"
    if row.get("grouping") == "fixed":
        return f"{name.removesuffix(FIXED_SUFFIX)} (oracle-trained, grouping fixed on validation)"
    return f"{name} (oracle grouping)" if row.get("grouping") == "oracle" else name


def sections(trials: pd.DataFrame, epochs: pd.DataFrame | None, design: StudyDesign,
             milestones: pd.DataFrame | None = None) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """summary.md's study sections and the tables written beside it as CSV."""
    cell = cells(trials, design)
    comp = comparisons(trials, design)
    claim = claims(trials, design)
    spend = budget(trials, design)
    lines = design_section(cell, design)
    if design.tuned:
        lines += tuned_section(design)
    lines += spend_section(spend)
    lines += cells_section(cell)
    lines += comparisons_section(comp, design.reference)
    lines += claims_section(claim, design, unmeasured_readings(trials, design))
    lines += resolution_section(resolution(comp, design))
    tables = {"study_cells.csv": cell, "study_comparisons.csv": comp, "study_claims.csv": claim,
              "study_budget.csv": spend}
    if milestones is not None and not milestones.empty:
        by_budget = claims_by_budget(trials, milestones, design)
        tables["claims_by_budget.csv"] = by_budget
        steps = sorted(int(s) for s in by_budget["steps"].unique())
        trend = (convergence(trials, epochs, design, steps) if epochs is not None
                 and not epochs.empty else None)
        if trend is not None:
            tables["convergence.csv"] = trend
        lines += budget_section(by_budget, trend, design)
    if epochs is not None and not epochs.empty:
        check = asha_rank_check(trials, epochs)
        tables["asha_check.csv"] = check
        lines += asha_section(check)
    return lines, tables


def design_section(cell: pd.DataFrame, design: StudyDesign) -> list[str]:
    """The study's design in words."""
    lines: list[str] = []
    ref = design.reference
    n_text = f"{design.repeats} seeds per variant" if design.repeats else "seeds as run"
    lines += ["## Study design", "",
             f"{len(design.variants) or cell['head'].ne('pooled').sum()} head variants × {n_text}, "
             f"reference `{ref}`. Common random numbers: at one seed every variant has the same "
             "backbone initialisation, training-data stream and evaluation set, so its difference "
             "from the reference at that seed is a pair. No early stopping between trials: each "
             "variant gets the budget below. Metric: test SI-SNRi (dB over the mixture) of the "
             "completed trials; test SDRi beside it.", ""]
    return lines


def spend_section(spend: pd.DataFrame) -> list[str]:
    """What each variant's trials were given."""
    lines: list[str] = []
    lines += ["## Budget", "", *markdown(pd.DataFrame({
        "variant": spend["variant"], "completed": spend["completed"],
        "epochs": spend["epochs"].map(lambda v: fmt(v, 1)),
        "optimizer steps": spend["train_steps"].map(lambda v: fmt(v, 0)),
        "wall time / trial (s)": spend["wall_s"].map(lambda v: fmt(v, 0)),
        "training audio (s)": spend["train_audio_s"].map(lambda v: fmt(v, 0)),
        "forward MACs over it": spend["train_macs"].map(
            lambda v: f"{v:.3g}" if math.isfinite(v) else "-"),
    })), "", "Means per completed trial. Forward MACs over the training audio: the model's "
        "MACs per second of audio × seconds of training audio processed (backward passes not "
        "counted).", ""]
    return lines


def cells_section(cell: pd.DataFrame) -> list[str]:
    """Each variant's test SI-SNRi: n, mean, std, CI."""
    lines: list[str] = []
    lines += ["## Cells: test SI-SNRi per variant", "", *markdown(pd.DataFrame({
        "variant": [_variant_label(r) for _, r in cell.iterrows()],
        "n": cell["n"].astype(int),
        "mean": cell["mean"].map(fmt), "std": cell["std"].map(fmt),
        "95% CI": [_ci(lo, hi).replace("+", "") for lo, hi in zip(cell["ci_low"], cell["ci_high"],
                                                                   strict=True)],
        "test SDRi [95% CI]": [f"{fmt(m)} {_ci(lo, hi).replace('+', '')}" if math.isfinite(m) else "-"
                               for m, lo, hi in zip(cell["sdri_mean"], cell["sdri_ci_low"],
                                                    cell["sdri_ci_high"], strict=True)],
        "head MACs/s": cell["head_macs_per_s"].map(macs),
        "head params": cell["head_params"].map(formats.count),
        "head share of model MACs": (cell["head_macs_per_s"] / cell["macs_per_s"]).map(
            lambda v: f"{v:.0%}" if math.isfinite(v) else "-"),
    })), "", "95% CI: Student t over seeds. n = 1 has no CI: one run, not a result."]
    heavy = cell[(cell["head_macs_per_s"] > cell["macs_per_s"] - cell["head_macs_per_s"])
                 & (cell["grouping"] != "fixed")]  # a fixed-grouping row is its oracle head again
    if not heavy.empty:
        lines.append("The head costs more MACs than the rest of the model (encoder, backbone, "
                     f"decoder) in {', '.join(f'`{v}`' for v in heavy['variant'])}: those "
                     "comparisons are between models of unequal cost (the last column says how "
                     "unequal).")
    return [*lines, ""]


def comparisons_section(comp: pd.DataFrame, ref: str) -> list[str]:
    """Every variant minus the reference, paired by seed."""
    lines: list[str] = []
    n_most = int(comp["n"].max()) if len(comp) else 0
    lines += [f"## Paired differences from `{ref}` (same seeds)", ""]
    if comp.empty:
        lines.append("No variant to compare.")
    else:
        lines += markdown(pd.DataFrame({
            "variant": [f"{v} (pooled)" if p else v for v, p in zip(comp["variant"], comp["pooled"],
                                                                     strict=True)],
            "n": comp["n"].astype(int),
            "mean diff (dB)": comp["mean"].map(lambda v: f"{v:+.2f}" if math.isfinite(v) else "-"),
            "95% CI": [_ci(lo, hi) for lo, hi in zip(comp["ci_low"], comp["ci_high"], strict=True)],
            "paired t p": comp["p_t"].map(p_value),
            "Wilcoxon p": comp["p_wilcoxon"].map(p_value),
        }))
        floor = (f" With n pairs the exact Wilcoxon p cannot fall below 2/2^n "
                 f"({stats.wilcoxon_floor(n_most):.3g} at n = {n_most})." if n_most >= 2 else "")
        lines += ["", "Paired t-test (scipy.stats.ttest_rel) and Wilcoxon signed-rank test "
                  f"(scipy.stats.wilcoxon), two-sided, where n >= 2.{floor} No correction "
                  "for the number of comparisons in this table; the claims below correct where "
                  "they pick."]
    lines.append("")
    return lines


def claims_section(claim: pd.DataFrame, design: StudyDesign, unmeasured: list[str]) -> list[str]:
    """The claims table, claim 3's two parts and its margins, and how the verdicts
    are computed."""
    margin = design.margin_db
    lines: list[str] = ["## Claims", "", *markdown(pd.DataFrame({
        "claim": claim["claim"], "comparison": claim["comparison"], "n": claim["n"].astype(int),
        "estimate (dB)": claim["estimate"].map(lambda v: f"{v:+.2f}" if math.isfinite(v) else "-"),
        "CI": [formats.level(lvl) + " " + _ci(lo, hi) for lvl, lo, hi in
               zip(claim["ci_level"], claim["ci_low"], claim["ci_high"], strict=True)],
        "verdict": claim["verdict"].map(lambda v: f"**{v}**"),
        "comparator": claim["picked"],
    })), "", "Each verdict is computed from the CI: *holds* when the whole CI lies above 0 "
        "(claim 3: see below), *does not hold* when it lies below, else *not resolved at this "
        "n*, which says the design cannot tell, not that the claim fails. Every comparator "
        "is named in the spec or picked on validation, never on test.", ""]
    readings = claim[claim["reading"].astype(str) != ""]
    if not readings.empty:
        lines += ["Two readings of OG. *learned*: the og head groups its P outputs with a trained "
                  "soft assignment. *best assignment*: trained and scored with the grouping that "
                  "best reconstructs the references, as in MixIT, which the paper builds on (the "
                  "paper's public description sums or groups the outputs into the mixtures that "
                  "best reconstruct the inputs); at test it uses the references, so it is not a "
                  "separator a user can run. *fixed grouping*: the same heads, with the grouping "
                  "found best most often on validation fixed for test: no references at test.", ""]
    if unmeasured:
        lines += [f"Not measured in this run: the {', '.join(unmeasured)} reading (its trials "
                  "predate that score; re-run the study to measure it).", ""]
    three = claim[claim["claim"].str.startswith("3.")]
    if not three.empty:
        lines += ["### Claim 3 in two parts", "",
                  "Deep is an efficient OG when it is *non-inferior* (the CI of deep - og lies "
                  f"above -{margin:g} dB) *and cheaper* (fewer head MACs per second of audio). "
                  "It does not hold when either part does not; the columns say which.", ""]
        labels = three["claim"].str.extract(r"\[(.*)\]")[0].fillna("") + ": " + three["comparison"]
        lines += markdown(pd.DataFrame({
            "comparison": labels,
            "difference [CI]": [f"{formats.signed(e)} {_ci(lo, hi)}" for e, lo, hi in
                                zip(three["estimate"], three["ci_low"], three["ci_high"], strict=True)],
            f"non-inferior at -{margin:g} dB": three["non_inferior"],
            "head MACs/s deep vs og": [f"{macs(a)} vs {macs(b)}" for a, b in
                                       zip(three["deep_head_macs"], three["og_head_macs"], strict=True)],
            "head params deep vs og": [f"{formats.count(a)} vs {formats.count(b)}" for a, b in
                                       zip(three["deep_head_params"], three["og_head_params"],
                                           strict=True)],
            "cheaper": three["cost"],
            "verdict": three["verdict"].map(lambda v: f"**{v}**"),
        }))
        lines += ["", f"The margin is a choice. The verdict at margins of "
                  f"{', '.join(f'{m:g}' for m in design.sensitivity_db)} dB:", ""]
        lines += markdown(pd.DataFrame({"comparison": labels,
                                        "verdict by margin": three["sensitivity"]}))
        lines.append("")
    return lines


def resolution_section(res: dict[str, Any]) -> list[str]:
    """The smallest difference the design resolves, and the seeds 0.2 dB needs."""
    lines: list[str] = []
    lines += ["## What this design resolves", ""]
    if math.isfinite(res["half_width"]):
        need = res["seeds_needed"]
        lines.append(
            f"Pooled SD of the paired differences: {res['sd']:.2f} dB ({res['dof']} degrees of "
            f"freedom). At n = {res['n']} seeds a paired difference has a 95% CI half-width of "
            f"{res['half_width']:.2f} dB: the smallest difference this design resolves. "
            + (f"A CI half-width of {res['target']:g} dB needs n = {need} seeds (smallest n with "
               f"t(0.975, n-1) × SD / sqrt(n) <= {res['target']:g})." if need else
               f"No practical n gives a CI half-width of {res['target']:g} dB at this SD."))
        powered = res["seeds_for_power"]
        lines += ["", f"**Power.** A real difference of {res['target']:g} dB would be found "
                  f"(paired t, two-sided, 5 %) with probability {res['power']:.0%} at n = "
                  f"{res['n']}; 80 % power needs n = "
                  + (f"{powered} seeds" if powered else "more seeds than is practical")
                  + ". A claim *not resolved* at this n is not evidence that it fails: "
                  "choose the seeds of a study from a pilot's SD with this line."]
    else:
        lines.append("Not measurable: no comparison has two or more paired seeds, so the noise "
                     "of a paired difference is unknown.")
    lines.append("")
    return lines


def tuned_section(design: StudyDesign) -> list[str]:
    """The tuned study's settings: what each variant's own search chose."""
    keys = list(dict.fromkeys(k for values in design.tuned.values() for k in values))
    rows = {"variant": list(design.tuned)}
    for key in keys:
        rows[key] = [_setting(design.tuned[v].get(key)) for v in design.tuned]
    return ["## Tuned settings", "",
            "Each variant ran at its own setting, chosen by its own search before the study "
            "(on validation, the same points or trials per variant, on tuning seeds the study "
            "does not test on; each search's spec is in `tuning/`): the best mean validation "
            "SI-SNRi over the tuning trials that trained to the end. Test scores played no "
            "part.", "", *markdown(pd.DataFrame(rows)), ""]


def _setting(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def budget_section(by_budget: pd.DataFrame, trend: pd.DataFrame | None, design: StudyDesign
                   ) -> list[str]:
    """The claims at every budget milestone, and whether validation still rose there."""
    lines = ["## Claims by training budget", "",
             "Every trial was also scored on the test set at each milestone (optimizer steps), "
             "with the weights that were best on validation up to that step: the rule the end "
             "of the run uses, the same for every variant, so a milestone is the run that "
             "stopped there (the learning-rate schedule is on validation plateaus and does not "
             "know the budget). Each claim is computed at each milestone as in *Claims*. "
             "Plot: [claims_by_budget.png](claims_by_budget.png).", ""]
    lines += markdown(pd.DataFrame({
        "steps": by_budget["steps"].map(lambda v: f"{int(v):,}"),
        "claim": by_budget["claim"], "comparison": by_budget["comparison"],
        "n": by_budget["n"].astype(int),
        "estimate (dB)": by_budget["estimate"].map(lambda v: f"{v:+.2f}" if math.isfinite(v) else "-"),
        "CI": [formats.level(lvl) + " " + _ci(lo, hi) for lvl, lo, hi in
               zip(by_budget["ci_level"], by_budget["ci_low"], by_budget["ci_high"], strict=True)],
        "verdict": by_budget["verdict"].map(lambda v: f"**{v}**"),
    }))
    lines.append("")
    if trend is not None and not trend.empty:
        lines += ["### Was validation still improving?", "",
                  "Per trial, the least-squares slope of validation SI-SNRi against optimizer "
                  "steps over the last quarter of the epochs up to the budget (at least three "
                  "epochs); per variant, the mean over seeds with its 95% t CI. *still improving*: "
                  "the CI lies above 0; *declining*: below; else *no trend resolved*.", ""]
        lines += markdown(pd.DataFrame({
            "steps": trend["steps"].map(lambda v: f"{int(v):,}"), "variant": trend["variant"],
            "n": trend["n"].astype(int),
            "slope (dB / 1k steps)": trend["slope_db_per_kstep"].map(
                lambda v: f"{v:+.3f}" if math.isfinite(v) else "-"),
            "95% CI": [f"[{lo:+.3f}, {hi:+.3f}]" if math.isfinite(lo) else "no CI"
                       for lo, hi in zip(trend["ci_low"], trend["ci_high"], strict=True)],
            "trend": trend["trend"],
        }))
        lines.append("")
    return lines


def asha_section(check: pd.DataFrame) -> list[str]:
    lines = ["## ASHA check: does an early rung rank heads as the end does?", ""]
    if check.empty:
        return [*lines, "No completed trial has a learning curve.", ""]
    kinds = check[check["head"] != "all"]
    lines += markdown(pd.DataFrame({
        "grace period g": check["grace_period"].astype(int), "head": check["head"],
        "n": check["n"].astype(int),
        "Spearman rho (val@g vs test)": check["spearman_rho"].map(fmt),
        "p": check["spearman_p"].map(p_value),
        "mean val@g": check["rung_mean"].map(fmt), "mean test": check["final_mean"].map(fmt),
        "rank at g → end": [f"{int(a)} → {int(b)}" if math.isfinite(a) else "-"
                            for a, b in zip(check["rank_at_g"], check["rank_final"], strict=True)],
        "stopped at rung": check["stopped_share"].map(lambda v: f"{v:.0%}"),
        "catches up": check["catches_up"].map(lambda v: "**yes**" if v else ""),
    }))
    late = kinds[kinds["catches_up"]]
    lines += ["", "val@g is the best validation SI-SNRi up to epoch g, the metric an ASHA rung "
              "compares; *stopped at rung*: the share of that head kind's trials below the "
              "rung's cut-off (reduction factor 2, as Ray's ASHA). Spearman rho needs n >= 3."]
    if not late.empty:
        flagged = "; ".join(
            f"{head} (g = {', '.join(str(int(g)) for g in rows['grace_period'])})"
            for head, rows in late.groupby("head", sort=True))
        lines.append(f"Behind at the rung but ahead at the end: {flagged}. A grace period at "
                     "or below these epochs stops heads that would have caught up.")
    else:
        lines.append("No head kind is behind at a rung and ahead at the end.")
    return [*lines, ""]
