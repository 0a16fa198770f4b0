"""The sweep's tables: labels of heads, the Pareto front, the depth x P cells,
and their markdown sections (the CSV files themselves: masksep/report/schema.py).

Which SI-SNRi where: the search optimises the best validation SI-SNRi, which
every trial that finished an epoch has, so the Pareto front and tradeoff.png
use it. Final numbers (best configurations, the depth x P tables, the heatmap)
use the test SI-SNRi of trials that trained to the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

import masksep.stats as stats
from masksep import formats
from masksep.report.schema import records


def markdown(df: pd.DataFrame) -> list[str]:
    """A markdown table (pandas' to_markdown needs tabulate, which masksep does not ship)."""
    return formats.table([str(c) for c in df.columns],
                         [[str(v).replace("|", "/") for v in values]
                          for values in df.itertuples(index=False)])


# --------------------------------------------------------------------------- cells and labels


ok, fmt, macs, p_value = formats.ok, formats.fmt, formats.macs, formats.p_value  # masksep/formats.py


def label(row: dict[str, Any] | pd.Series) -> str:
    """A head in the paper's words, grouping always named for og heads."""
    depth, width, p = (int(row[k]) if ok(row.get(k)) else "?" for k in ("depth", "width", "oversep"))
    head = row.get("head") or "?"
    deep = f"deep d={depth} w={width}" if depth != 1 else "deep d=1 (= shallow)"
    text = {"shallow": "shallow", "deep": deep}.get(
        head, f"og P={p} d={depth}" + (f" w={width}" if head == "og" and depth != 1 else ""))
    if row.get("layout") == "per_source" and depth != 1:
        text += " per-source"
    if row.get("grouping") == "oracle":
        text += " (oracle grouping)"
    elif head == "og":
        text += " (learned grouping)"
    if row.get("backbone"):
        text = f"{row['backbone']}: {text}"
    return text


def cell_text(cell: dict[str, Any] | pd.Series) -> str:
    """mean ± std [95% CI] (n); a one-value cell says it has no CI."""
    n = int(cell["n"])
    if n == 0:
        return "-"
    if n == 1:
        return f"{cell['mean']:.2f} (n=1, no CI)"
    return (f"{cell['mean']:.2f} ± {cell['std']:.2f} [{cell['ci_low']:.2f}, {cell['ci_high']:.2f}] "
            f"(n={n})")


def n_src_values(df: pd.DataFrame) -> set[int]:
    """C of the trials: their n_src, or (a trials.csv from before n_src was a
    column) the P of their shallow and deep heads, which estimate P = C masks."""
    values = df["n_src"].dropna()
    if values.empty:
        values = df.loc[df["head"].isin(["shallow", "deep"]), "oversep"].dropna()
    return {int(v) for v in values}


# --------------------------------------------------------------------------- analyses


def pareto_front(df: pd.DataFrame, gain: str = "best_val_si_snri",
                 cost: str = "head_macs_per_s") -> pd.DataFrame:
    """Rows not dominated in (higher ``gain``, lower ``cost``), by increasing cost."""
    points = df[np.isfinite(df[gain]) & np.isfinite(df[cost])]
    g, c = points[gain].to_numpy(), points[cost].to_numpy()
    no_worse = (g[None, :] >= g[:, None]) & (c[None, :] <= c[:, None])
    better = (g[None, :] > g[:, None]) | (c[None, :] < c[:, None])
    dominated = (no_worse & better).any(axis=1)
    front = points[~dominated]
    return front.assign(_neg=-front[gain]).sort_values([cost, "_neg"], kind="stable").drop(columns="_neg")


def wall_time_is_whole(state: dict[str, Any]) -> bool:
    """Whether sweep.json's driver_wall_s covers every driver run of the sweep: a
    driver stopped by a kill records no time, and a resumed sweep.json from before
    masksep listed its driver runs cannot say whether one was."""
    drivers = state.get("drivers")
    if drivers:
        return all(d.get("wall_s") is not None for d in drivers)
    return not state.get("resumed")


def sweep_efficiency(df: pd.DataFrame, state: dict[str, Any]) -> float | None:
    """(sum of trial wall times / concurrency) / sweep wall time: 1.0 means every
    slot trained all the time; Ray's start-up per trial and idle slots lower it.
    None where the sweep's wall time is not whole (a driver run was killed)."""
    walls = df["wall_s"].dropna()
    slots = min(state.get("max_concurrent_trials") or 0, len(df))
    total = state.get("driver_wall_s")
    if walls.empty or not slots or not total or not wall_time_is_whole(state):
        return None
    return float(walls.sum()) / slots / total


# What a depth x P cell can pool besides seeds: anything else that varied in the
# sweep, in the paper's words. A searched field that is one of these is shown once.
_POOLABLE = {"head": "head kind", "width": "width", "layout": "layout", "backbone": "backbone",
             "variant": "variant"}
_SEARCHED_AS = {"searched.head.kind": "head", "searched.head.width": "width",
                "searched.head.layout": "layout",
                "searched.backbone.kind": "backbone", "searched.head.depth": None,
                "searched.head.oversep": None, "searched.head.grouping": None}


def depth_oversep_cells(df: pd.DataFrame, metric: str = "test_si_snri",
                        completed_only: bool = True) -> pd.DataFrame:
    """One row per (grouping kind, depth, P): n, mean, std, 95% CI of ``metric``
    and ``pools``, {field: its values} for the fields that differ between the
    trials of that cell (seed included)."""
    rows = df[np.isfinite(df[metric]) & np.isfinite(df["depth"]) & np.isfinite(df["oversep"])]
    if completed_only:
        rows = rows[rows["status"] == "completed"]
    rows = rows.assign(kind=np.where(rows["grouping"] == "oracle", "oracle", "learned"))
    fields = {"seed": "seed", **{c: name for c, name in _POOLABLE.items() if c in rows.columns}}
    fields.update({c: c.removeprefix("searched.") for c in rows.columns
                   if c.startswith("searched.") and c not in _SEARCHED_AS})
    out = []
    for (kind, depth, p), cell in rows.groupby(["kind", "depth", "oversep"], sort=True):
        pools = {}
        for column, name in fields.items():
            values = cell[column].dropna()
            values = values[values != ""]
            if values.nunique() > 1:
                pools[name] = sorted(values.unique())
        out.append({"kind": kind, "depth": int(depth), "oversep": int(p),
                    **stats.describe(cell[metric]), "pools": pools})
    return pd.DataFrame(out, columns=["kind", "depth", "oversep", "n", "mean", "std", "ci_low",
                                      "ci_high", "pools"])


def _values_text(values: list[Any]) -> str:
    if len(values) > 4 or any(isinstance(v, float) and not float(v).is_integer() for v in values):
        return f"{len(values)} values"
    return ", ".join(str(int(v)) if isinstance(v, float) else str(v) for v in values)


def _pooling_note(cells: pd.DataFrame) -> str:
    pooled: dict[str, list[str]] = {}
    for cell in cells.itertuples():
        for name, values in cell.pools.items():
            pooled.setdefault(name, []).append(
                f"depth {cell.depth} × P {cell.oversep}: {_values_text(values)}")
    if not pooled:
        return "No cell pools trials that differ in anything but their noise."
    parts = [f"{name} ({'; '.join(where)})" for name, where in pooled.items()]
    return "Pooled: each cell averages trials that differ in " + "; and in ".join(parts) + "."


def cell_tables(cells: pd.DataFrame, n_src: set[int]) -> list[str]:
    """A depth x P markdown table per grouping kind, with what each pools."""
    lines: list[str] = []
    for kind in ("learned", "oracle"):
        part = cells[cells["kind"] == kind]
        if part.empty:
            continue
        grid = part.assign(text=part.apply(cell_text, axis=1)).pivot(
            index="depth", columns="oversep", values="text").fillna("-")
        grid.columns = [f"P = {p}" + (" (= C)" if p in n_src else "") for p in grid.columns]
        grid.insert(0, "depth", grid.index)
        title = "learned or no grouping" if kind == "learned" else "oracle grouping"
        lines += [f"*{title}*", "", *markdown(grid), "", _pooling_note(part), ""]
    return lines


# --------------------------------------------------------------------------- the sweep's sections


def sweep_sections(df: pd.DataFrame) -> list[str]:
    """summary.md's sections for any sweep: best configurations, depth x P,
    the Pareto front and the failures."""
    lines: list[str] = []
    done = df[(df["status"] == "completed") & np.isfinite(df["test_si_snri"])].sort_values(
        "test_si_snri", ascending=False, kind="stable")
    lines += ["## Best configurations (test SI-SNRi)", ""]
    if done.empty:
        lines.append("No trial has trained to the end yet.")
    else:
        table = pd.DataFrame({
            "#": range(1, min(len(done), 10) + 1),
            "head": [label(r) for r in records(done.head(10))],
            "test SI-SNRi": done["test_si_snri"].head(10).map(fmt),
            "test SDRi": done["test_sdri"].head(10).map(fmt),
            "val SI-SNRi": done["best_val_si_snri"].head(10).map(fmt),
            "head MACs/s": done["head_macs_per_s"].head(10).map(macs),
            "params": done["params"].head(10).map(macs),
            "epochs": done["epochs"].head(10).map(lambda v: fmt(v, 0)),
            "seed": done["seed"].head(10).map(lambda v: fmt(v, 0)),
            "trial": done["trial_id"].head(10),
        })
        lines += markdown(table)
        lines += ["", "One trial each: a single seed's number, not a mean; the tables below "
                  "give the spread where a cell has more than one trial."]

    n_src = n_src_values(df)
    lines += ["", "## Test SI-SNRi by mask-head depth x overseparation P", "",
              "Each cell: mean ± std [95% t confidence interval of the mean] (n) over the "
              "completed trials with that depth and P. A cell of one trial has no CI and is one "
              "run's number, not a result. P = C is a shallow (depth 1) or deep head; "
              "P > C is overseparation-grouping.", ""]
    cells = depth_oversep_cells(df)
    lines += cell_tables(cells, n_src) if not cells.empty else ["No completed trials yet.", ""]
    if ((df["status"] != "completed") & np.isfinite(df["best_val_si_snri"])).any():
        lines += ["## Best validation SI-SNRi by depth x P, every trial", "",
                  "Trials stopped early (by ASHA) included, after however many epochs they ran: "
                  "a head that starts slowly looks worse here than it may end.", ""]
        lines += cell_tables(depth_oversep_cells(df, "best_val_si_snri", completed_only=False), n_src)

    front = pareto_front(df)
    lines += ["## Pareto front: best validation SI-SNRi vs head MACs per second", ""]
    if front.empty:
        lines.append("No trial has reported a validation score yet.")
    else:
        lines += markdown(pd.DataFrame({
            "head": [label(r) for r in records(front)],
            "val SI-SNRi": front["best_val_si_snri"].map(fmt),
            "head MACs/s": front["head_macs_per_s"].map(macs),
            "head params": front["head_params"].map(macs),
            "trial": front["trial_id"],
        }))

    failed = df[df["status"] == "failed"]
    if not failed.empty:
        lines += ["", "## Failed trials", ""]
        lines += markdown(pd.DataFrame({"trial": failed["trial_id"],
                                        "head": [label(r) for r in records(failed)],
                                        "error": failed["error"]}))
    return lines
