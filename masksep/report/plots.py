"""The report's plots (matplotlib, PNG bytes): the sweep's trade-off scatter
and depth x P heatmap, and the study's SI-SNRi against P and against head MACs.

Figures are built with matplotlib's object API (``Figure``), not pyplot, so a
report leaves no global figure state behind in the process that made it.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from masksep.report.tables import depth_oversep_cells, n_src_values, pareto_front

HEAD_COLOURS = {"shallow": "#4c72b0", "deep": "#dd8452", "og": "#55a868"}
FIXED_SPAN_DB = 3.0  # the heatmap's colour span when no cell has a CI to size it by
MIN_SPAN_DB = 1.0  # and its least span: one seed's noise alone is a few tenths of a dB


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def _log_x(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 2, 3, 4, 6, 10 rather than 2x10^0
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)


def _p_label(p: int, n_src: set[int]) -> str:
    return f"{p}\n(P = C)" if p in n_src else str(p)


# --------------------------------------------------------------------------- the sweep


def plot_tradeoff(df: pd.DataFrame) -> bytes:
    """Best validation SI-SNRi of every trial against its head MACs, with the Pareto front."""
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    points = df[np.isfinite(df["best_val_si_snri"]) & np.isfinite(df["head_macs_per_s"])]
    for head, colour in HEAD_COLOURS.items():
        for oracle in (False, True):
            group = points[(points["head"] == head) & ((points["grouping"] == "oracle") == oracle)]
            if group.empty:
                continue
            full = group[group["status"] == "completed"]
            part = group[group["status"] != "completed"]
            marker = "^" if oracle else "o"
            label = head + (" (oracle grouping)" if oracle else "")
            if not full.empty:
                ax.scatter(full["head_macs_per_s"] / 1e6, full["best_val_si_snri"], c=colour,
                           marker=marker, label=label, s=40, zorder=3)
            if not part.empty:
                ax.scatter(part["head_macs_per_s"] / 1e6, part["best_val_si_snri"], facecolors="none",
                           edgecolors=colour, marker=marker, s=40, zorder=3,
                           label=None if not full.empty else label)
    front = pareto_front(df)
    if not front.empty:
        ax.plot(front["head_macs_per_s"] / 1e6, front["best_val_si_snri"], color="black", lw=1,
                ls="--", label="Pareto front", zorder=2, drawstyle="steps-post")
    if not points.empty:
        _log_x(ax)
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no trial has reported yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("mask head MACs per second of audio (millions)")
    ax.set_ylabel("best validation SI-SNRi (dB)")
    ax.set_title("Separation quality vs mask-head cost, one point per trial "
                 "(hollow: stopped early or unfinished)", fontsize=9)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def colour_scale(cells: pd.DataFrame) -> tuple[float, float, str]:
    """(vmin, vmax, what set the span) for a heatmap of cell means. The span is
    at least the median 95% CI width of the cells and at least MIN_SPAN_DB, so
    that the colours run end to end only across differences larger than the
    noise; a fixed FIXED_SPAN_DB when no cell has a CI (every n = 1)."""
    means = cells["mean"].dropna()
    if means.empty:
        return 0.0, 1.0, "no cells"
    lo, hi = float(means.min()), float(means.max())
    widths = (cells["ci_high"] - cells["ci_low"]).dropna()
    if widths.empty:
        floor, why = FIXED_SPAN_DB, f"fixed {FIXED_SPAN_DB:g} dB (no cell has a CI)"
    elif widths.median() >= MIN_SPAN_DB:
        floor, why = float(widths.median()), f"median 95% CI width, {widths.median():.2f} dB"
    else:
        floor = MIN_SPAN_DB
        why = f"{MIN_SPAN_DB:g} dB minimum (median 95% CI width {widths.median():.2f} dB)"
    if hi - lo >= floor:
        return lo, hi, f"range of the means, {hi - lo:.2f} dB"
    centre = (lo + hi) / 2
    return centre - floor / 2, centre + floor / 2, why


def plot_depth_vs_oversep(df: pd.DataFrame) -> bytes:
    """Heatmaps of SI-SNRi over depth x P: test SI-SNRi of the completed trials
    and, when some trials stopped early, best validation SI-SNRi of every trial
    (as the tables of summary.md); a column per grouping kind, one colour
    scale per row (see colour_scale)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n_src = n_src_values(df)
    panels = [("test SI-SNRi (dB), completed trials", depth_oversep_cells(df))]
    if ((df["status"] != "completed") & np.isfinite(df["best_val_si_snri"])).any():
        panels.append(("best val SI-SNRi (dB), every trial",
                       depth_oversep_cells(df, "best_val_si_snri", completed_only=False)))
    kinds = [k for k in ("learned", "oracle") if any((c["kind"] == k).any() for _, c in panels)]
    kinds = kinds or ["learned"]
    fig = _figure(figsize=(4.8 * len(kinds) + 1.2, 3.8 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), len(kinds), squeeze=False)
    for row_axes, (label, cells) in zip(axes, panels, strict=True):
        vmin, vmax, why = colour_scale(cells)
        norm = Normalize(vmin, vmax)
        for ax, kind in zip(row_axes, kinds, strict=True):
            part = cells[cells["kind"] == kind]
            title = "learned / no grouping" if kind == "learned" else "oracle grouping"
            if part.empty:
                ax.text(0.5, 0.5, f"{title}:\nno trials here yet", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_axis_off()
                continue
            depths = sorted(part["depth"].unique())
            ps = sorted(part["oversep"].unique())
            grid = np.full((len(depths), len(ps)), np.nan)
            for cell in part.itertuples():
                grid[depths.index(cell.depth), ps.index(cell.oversep)] = cell.mean
            ax.imshow(grid, cmap="viridis", norm=norm, origin="lower", aspect="auto")
            for cell in part.itertuples():
                spread = (f"±{(cell.ci_high - cell.ci_low) / 2:.2f}" if math.isfinite(cell.ci_high)
                          else "no CI")
                light = norm(cell.mean) > 0.6  # viridis turns yellow: dark text there
                ax.text(ps.index(cell.oversep), depths.index(cell.depth),
                        f"{cell.mean:.2f}\n{spread}\nn={cell.n}", ha="center", va="center",
                        fontsize=7, color="black" if light else "white")
            ax.set_xticks(range(len(ps)), [_p_label(p, n_src) for p in ps])
            ax.set_yticks(range(len(depths)), [str(d) for d in depths])
            c_text = ", ".join(str(c) for c in sorted(n_src)) or "?"
            ax.set_xlabel(f"outputs P (C = {c_text} sources; P > C: overseparation)")
            ax.set_ylabel("mask head depth")
            ax.set_title(title, fontsize=9)
        fig.colorbar(ScalarMappable(norm, "viridis"), ax=list(row_axes), shrink=0.9,
                     label=f"{label}\ncolour span: {why}")
    fig.suptitle("SI-SNRi by mask-head depth and overseparation (mean, 95% CI half-width, n)",
                 fontsize=10)
    return _png(fig)


# --------------------------------------------------------------------------- the study


def _yerr(rows: pd.DataFrame) -> np.ndarray:
    low = (rows["mean"] - rows["ci_low"]).fillna(0).to_numpy()
    high = (rows["ci_high"] - rows["mean"]).fillna(0).to_numpy()
    return np.vstack([low, high])


def plot_vs_oversep(cells: pd.DataFrame) -> bytes:
    """Test SI-SNRi against P for the og variants (a line each for learned and
    oracle grouping, 95% CI bars), deep and shallow variants as horizontal
    bands (mean ± CI) labelled with their head MACs."""
    from masksep.report.tables import macs

    fig = _figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    rows = cells[cells["head"] != "pooled"]
    og = rows[rows["head"] == "og"]
    n_src = {int(c) for c in rows["n_src"].dropna()}
    for grouping, style in (("learned", "-o"), ("oracle", "--^")):
        line = og[og["grouping"] == grouping].sort_values("oversep")
        if line.empty:
            continue
        # A line per og trunk: taking the best trunk at each P would pick on noise.
        for (depth, width), part in line.groupby(["depth", "width"], dropna=False):
            trunk = f", depth {int(depth)} width {int(width)}" if depth > 1 else ""
            name = f"og, {grouping} grouping{trunk}"
            ax.errorbar(part["oversep"], part["mean"], yerr=_yerr(part), fmt=style, capsize=3,
                        color=HEAD_COLOURS["og"] if grouping == "learned" else "#8172b3",
                        label=name, zorder=3)
    bands = rows[rows["head"].isin(["deep", "shallow"])]
    palette = ["#dd8452", "#c44e52", "#937860", "#da8bc3", "#8c8c8c", "#ccb974"]
    for i, cell in enumerate(bands.itertuples()):
        colour = HEAD_COLOURS["shallow"] if cell.head == "shallow" else palette[i % len(palette)]
        text = f"{cell.variant} ({macs(cell.head_macs_per_s)} MACs/s)"
        if math.isfinite(cell.ci_low):
            ax.axhspan(cell.ci_low, cell.ci_high, color=colour, alpha=0.15, lw=0)
        ax.axhline(cell.mean, color=colour, lw=1.2, ls=":" if cell.head == "shallow" else "-",
                   label=text)
    ps = sorted({int(p) for p in og["oversep"].dropna()})
    if ps:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ps, [_p_label(p, n_src) for p in ps])
        ax.minorticks_off()
    if rows.empty:
        ax.text(0.5, 0.5, "no completed trials yet", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, loc="best")
    c_text = ", ".join(str(c) for c in sorted(n_src)) or "?"
    ax.set_xlabel(f"og outputs P (C = {c_text} sources)")
    ax.set_ylabel("test SI-SNRi (dB), mean and 95% CI over seeds")
    ax.set_title("Overseparation-grouping against P; deep and shallow heads as bands (mean ± 95% CI)\n"
                 "CIs over seeds, unpaired: the paired differences in summary.md are tighter",
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def plot_vs_head_macs(cells: pd.DataFrame) -> bytes:
    """Test SI-SNRi of each variant against its head MACs, 95% CI bars, and the
    Pareto front of the deployable (not oracle-grouping) variants."""
    fig = _figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    rows = cells[(cells["head"] != "pooled") & np.isfinite(cells["mean"])
                 & np.isfinite(cells["head_macs_per_s"])]
    for head, colour in HEAD_COLOURS.items():
        for oracle in (False, True):
            part = rows[(rows["head"] == head) & ((rows["grouping"] == "oracle") == oracle)]
            if part.empty:
                continue
            ax.errorbar(part["head_macs_per_s"] / 1e6, part["mean"], yerr=_yerr(part),
                        fmt="^" if oracle else "o", color=colour, capsize=3, zorder=3,
                        label=head + (" (oracle grouping)" if oracle else ""))
    for cell in rows.itertuples():
        ax.annotate(cell.variant, (cell.head_macs_per_s / 1e6, cell.mean), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    front = pareto_front(rows[rows["grouping"] != "oracle"], gain="mean")
    if not front.empty:
        ax.plot(front["head_macs_per_s"] / 1e6, front["mean"], color="black", lw=1, ls="--",
                label="Pareto front (no oracle grouping)", zorder=2, drawstyle="steps-post")
    if not rows.empty:
        _log_x(ax)
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no completed trials yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("mask head MACs per second of audio (millions)")
    ax.set_ylabel("test SI-SNRi (dB), mean and 95% CI over seeds")
    ax.set_title("Study: separation quality vs mask-head cost, one point per variant\n"
                 "CIs over seeds, unpaired: the paired differences in summary.md are tighter",
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    return _png(fig)


def plot_paired(comparisons: pd.DataFrame, claims: pd.DataFrame, reference: str,
                margin_db: float) -> bytes:
    """The study's answer in one picture: each variant's paired difference from the
    reference (same seeds), mean and 95% CI, with 0 and the non-inferiority margin
    marked, and each claim's comparison with the CI its verdict was computed from."""
    rows = comparisons[~comparisons["pooled"].astype(bool)] if "pooled" in comparisons else comparisons
    claim_rows = claims[np.isfinite(claims["estimate"])] if not claims.empty else claims
    def claim_label(claim: str, comparison: str) -> str:
        reading = claim[claim.index("[") + 1:claim.index("]")] if "[" in claim else ""
        return f"claim {claim.split('.')[0]}{f' ({reading})' if reading else ''}: {comparison}"

    labels = [f"{v} - {reference}" for v in rows["variant"]] + [
        claim_label(c, comp) for c, comp in zip(claim_rows["claim"], claim_rows["comparison"],
                                                strict=True)]
    means = list(rows["mean"]) + list(claim_rows["estimate"])
    lows = list(rows["ci_low"]) + list(claim_rows["ci_low"])
    highs = list(rows["ci_high"]) + list(claim_rows["ci_high"])
    colours = [HEAD_COLOURS.get(v.split("-")[0], "grey") for v in rows["variant"]]
    colours += ["black"] * len(claim_rows)
    fig = _figure(figsize=(7.5, 0.45 * max(len(labels), 3) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(labels))[::-1]
    for yi, m, lo, hi, colour in zip(y, means, lows, highs, colours, strict=True):
        if math.isfinite(lo) and math.isfinite(hi):
            ax.plot([lo, hi], [yi, yi], color=colour, lw=2)
        ax.plot([m], [yi], "o", color=colour)
    ax.axvline(0.0, color="black", lw=1)
    ax.axvline(-margin_db, color="grey", lw=1, ls="--", label=f"-{margin_db:g} dB (claim 3's margin)")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("difference in test SI-SNRi (dB), mean and 95% CI over paired seeds")
    ax.set_title("Study: paired differences (a CI clear of 0 resolves the difference)", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def _fixed_log_x(ax, ticks: list[float]) -> None:
    """A log axis labelled at the values there are (milestones, model sizes): 1,200
    and 4,800 steps, or 3M and 30M MACs, rather than powers of ten."""
    from matplotlib.ticker import EngFormatter, FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log")
    if not ticks:
        return
    shown = [ticks[0]]
    for value in ticks[1:]:  # labels of values within 20 % of each other would overlap
        if value >= 1.2 * shown[-1]:
            shown.append(value)
    ax.xaxis.set_major_locator(FixedLocator(shown))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(EngFormatter(sep="", places=1) if ticks[-1] >= 1e5
                                 else FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.set_xlim(ticks[0] / 1.4, ticks[-1] * 1.4)


def _claim_grid(names: list[str]) -> dict[str, tuple[int, int]]:
    """Where each claim's panel goes: claim 1 top left, then a row per reading of OG
    ("[learned]", "[best assignment]" ...) with its claims 2 and 3 in columns 2 and 3."""
    readings = list(dict.fromkeys(n[n.index("["):] for n in names if "[" in n))
    place = {}
    for i, name in enumerate(names):
        if "[" in name and name[0] in "23":
            place[name] = (readings.index(name[name.index("["):]), 1 if name[0] == "2" else 2)
        elif name.startswith("1"):
            place[name] = (0, 0)
        else:  # a table from before the readings: one row, in order
            place[name] = (0, i)
    return place


def plot_claims_by_x(table: pd.DataFrame, x: str, xlabel: str, margin_db: float,
                     title: str, series: str | None = None, line_by: str | None = None) -> bytes:
    """Each claim's paired difference with its CI (the CI its verdict used) against
    ``x`` (log axis), one panel per claim, 0 marked and claim 3's margin shaded;
    ``series``: a column whose values are drawn as separate lines (e.g. data source);
    ``line_by``: a column within a series whose rows alone are joined by a line (e.g.
    the folder: one experiment's budgets, never two experiments' points)."""
    names = list(dict.fromkeys(table["claim"]))
    place = _claim_grid(names)
    rows_n = max(r for r, _ in place.values()) + 1
    cols = max(c for _, c in place.values()) + 1
    fig = _figure(figsize=(4.4 * cols, 3.6 * rows_n), layout="constrained")
    grid = fig.subplots(rows_n, cols, squeeze=False)
    used = set(place.values())
    for (r, c), ax in np.ndenumerate(grid):
        if (r, c) not in used:
            ax.set_visible(False)
    axes = [grid[place[name]] for name in names]
    groups = list(table.groupby(series, sort=False)) if series else [("", table)]
    for ax, name in zip(axes, names, strict=False):
        for i, (label, rows) in enumerate(groups):
            rows = rows[(rows["claim"] == name) & np.isfinite(rows["estimate"].astype(float))]
            rows = rows.sort_values(x)
            if rows.empty:
                continue
            xs = rows[x].to_numpy(float) * (1 + 0.03 * i)  # side by side, not on top
            est = rows["estimate"].to_numpy(float)
            lo, hi = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
            err = np.vstack([np.where(np.isfinite(lo), est - lo, 0), np.where(np.isfinite(hi), hi - est, 0)])
            colour = f"C{i % 10}"  # a series keeps its colour in every panel
            ax.errorbar(xs, est, yerr=err, marker="o", capsize=3, lw=1.2, label=label or None,
                        color=colour, ls="none" if line_by else "-")
            if line_by:
                keys = rows[line_by].to_numpy()
                for key in dict.fromkeys(keys):
                    if (keys == key).sum() > 1:
                        ax.plot(xs[keys == key], est[keys == key], color=colour, lw=1.2)
        ax.axhline(0.0, color="black", lw=1)
        if name.startswith("3"):
            ax.axhspan(-margin_db, 0.0, color="grey", alpha=0.2, lw=0,
                       label=f"within claim 3's margin (-{margin_db:g} dB)")
        _fixed_log_x(ax, sorted(set(table[x].dropna().astype(float))))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(True, alpha=0.3)
    # One legend for the figure, below the panels: a series has one colour in every
    # panel, and a legend inside a panel hides the points it labels.
    legend: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(legend.values(), legend.keys(), loc="outside lower center", fontsize=8,
                   ncols=min(len(legend), 4))
    for ax in grid[:, 0]:
        ax.set_ylabel("paired difference, test SI-SNRi (dB)\nestimate and its CI", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _png(fig)
