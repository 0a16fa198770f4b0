"""The analysis section of a study report: per head variant, over seeds, the
share entropy, the ablation selectivity and the function-view gap, each with
its 95% CI and a paired test against the same heads at initialisation.

Pure pandas and scipy (no torch), so a report can import it cheaply. The
statistics are the report's own (masksep/stats.py): a t interval of the mean,
the paired t-test and the Wilcoxon signed-rank test; NaN where n is too small,
never a number that only looks like a result.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from masksep import formats, stats

CONFIDENCE = 0.95
LOWER, HIGHER, NOT_RESOLVED = "lower", "higher", "not resolved at this n"

# (column name, view, key in the view's trained/init dict, what it means)
METRICS = [
    ("share_entropy", "weight", "mean_entropy",
     "mean normalised entropy of the units' shares (0 = each unit serves one source)"),
    ("ablation_selectivity_db", "ablation", "selectivity_db",
     "SI-SNR loss of the silenced source's output minus the others' (dB; > 0 = selective)"),
    ("function_gap", "function", "og_rel_mse",
     "held-out mask MSE of the og fit over the head's mask variance (0 = the head is an og head)"),
]
COLUMNS = ["variant", "metric", "n", "mean", "ci_low", "ci_high", "init_mean", "init_ci_low",
           "init_ci_high", "diff_mean", "diff_ci_low", "diff_ci_high", "p_t", "p_wilcoxon", "vs_init"]


def variant_of(entry: dict[str, Any]) -> str:
    """The study's variant name, else the head in the study's coordinates."""
    if entry.get("variant"):
        return str(entry["variant"])
    h = entry["head"]
    layout = "-per_source" if h.get("layout") == "per_source" else ""  # older entries: joint
    if h["head"] == "og":
        return f"og-P{h['oversep']}-{h['grouping']}{layout}"
    return f"deep-d{h['depth']}-w{h['width']}{layout}"


def _mean_ci(x: np.ndarray) -> tuple[float, float, float]:
    d = stats.describe(x, CONFIDENCE)
    return d["mean"], d["ci_low"], d["ci_high"]


def _paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = stats.paired(a, b, CONFIDENCE)
    return {"diff_mean": d["mean"], "diff_ci_low": d["ci_low"], "diff_ci_high": d["ci_high"],
            "p_t": d["p_t"], "p_wilcoxon": d["p_wilcoxon"]}


def _vs_init(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return NOT_RESOLVED
    if high < 0:
        return LOWER
    if low > 0:
        return HIGHER
    return NOT_RESOLVED


def _value(entry: dict[str, Any], view: str, side: str, key: str) -> float:
    part = entry.get(view) or {}
    if not part.get("applicable"):
        return math.nan
    value = (part.get(side) or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def study_analysis_table(analysis: dict[str, Any]) -> pd.DataFrame:
    """One row per (variant, metric) that the variant's head kind has: trained
    mean and CI over seeds, the same at initialisation, and the paired
    difference trained - init (CI, t-test p, Wilcoxon p, and whether the CI
    says lower, higher or not resolved)."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for entry in analysis.get("entries", []):
        by_variant.setdefault(variant_of(entry), []).append(entry)
    rows = []
    for variant in sorted(by_variant):
        entries = sorted(by_variant[variant], key=lambda e: (e.get("seed") is None, e.get("seed")))
        for metric, view, key, _ in METRICS:
            pairs = np.array([(_value(e, view, "trained", key), _value(e, view, "init", key))
                              for e in entries], dtype=float).reshape(-1, 2)
            pairs = pairs[np.isfinite(pairs).all(axis=1)]
            if len(pairs) == 0:
                continue
            trained, init = pairs[:, 0], pairs[:, 1]
            mean, low, high = _mean_ci(trained)
            init_mean, init_low, init_high = _mean_ci(init)
            diff = _paired(trained, init)
            rows.append({"variant": variant, "metric": metric, "n": len(pairs), "mean": mean,
                         "ci_low": low, "ci_high": high, "init_mean": init_mean,
                         "init_ci_low": init_low, "init_ci_high": init_high, **diff,
                         "vs_init": _vs_init(diff["diff_ci_low"], diff["diff_ci_high"])})
    return pd.DataFrame(rows, columns=COLUMNS)


def _num(value: float, digits: int = 3) -> str:
    return formats.fmt(value, digits)


def _ci(low: float, high: float) -> str:
    return formats.ci(low, high, 3, sign=False, missing="-")


_pv = formats.p_value  # masksep/formats.py


def study_analysis_section(analysis: dict[str, Any],
                           heading: str = "## Analysis: do the heads group like OG?") -> str:
    """The table of :func:`study_analysis_table` as a markdown section."""
    table = study_analysis_table(analysis)
    lines = [heading, "",
             f"From masksep analyze over {len(analysis.get('entries', []))} trained heads; each "
             "against the same head at initialisation (same seed), paired over seeds. Mean and "
             f"{CONFIDENCE:.0%} t confidence interval; *vs init* says where the CI of "
             "(trained - init) lies. Metrics:", ""]
    lines += [f"- `{metric}`: {what}" for metric, _, _, what in METRICS]
    lines.append("")
    if table.empty:
        return "\n".join(lines + ["No entry has a view that these metrics read."])
    lines += ["| variant | metric | n | trained mean [CI] | init mean [CI] | trained - init [CI] "
              "| t-test p | Wilcoxon p | vs init |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        lines.append(f"| {r.variant} | {r.metric} | {r.n} | {_num(r.mean)} {_ci(r.ci_low, r.ci_high)} "
                     f"| {_num(r.init_mean)} {_ci(r.init_ci_low, r.init_ci_high)} "
                     f"| {_num(r.diff_mean)} {_ci(r.diff_ci_low, r.diff_ci_high)} "
                     f"| {_pv(r.p_t)} | {_pv(r.p_wilcoxon)} | {r.vs_init} |")
    return "\n".join(lines)
