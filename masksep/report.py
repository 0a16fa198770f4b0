"""The sweep's answer as files: trials.csv, pareto.csv, summary.md and two plots.

Two stages. ``collect`` reads the Ray Tune experiment of a sweep folder (a
finished, running or partly failed one) into one row per trial and writes
trials.csv. ``render`` turns trials.csv into pareto.csv, summary.md,
tradeoff.png and depth_vs_oversep.png. ``masksep report DIR`` runs both when
the Ray experiment is there and only ``render`` when trials.csv is all there is
(a committed results folder).

Which SI-SNRi where: the search optimises the best validation SI-SNRi, which
every trial that finished an epoch has, so the Pareto front and tradeoff.png
use it. Final numbers (best configurations, the depth x P table, the heatmap)
use the test SI-SNRi of trials that trained to the end.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from masksep.errors import UserError
from masksep.files import atomic_write

STATE_FILE = "sweep.json"
HEAD_COLUMNS = ["head", "depth", "width", "oversep", "grouping", "backbone"]
METRIC_COLUMNS = [
    "params", "head_params", "macs_per_s", "head_macs_per_s", "best_val_si_snri",
    "test_si_snri", "test_sdri", "epochs", "wall_s", "seed",
]
NUMERIC = set(METRIC_COLUMNS) | {"depth", "width", "oversep", "retries"}


# --------------------------------------------------------------------------- reading storage


class _Store:
    """Read-only access to a local folder or an s3:// / gs:// URI (pyarrow's filesystems)."""

    def __init__(self, uri: str):
        from pyarrow import fs

        if "://" in uri:
            self.fs, self.root = fs.FileSystem.from_uri(uri)
        else:
            self.fs, self.root = fs.LocalFileSystem(), str(Path(uri).resolve())

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def listdir(self, *parts: str) -> list[tuple[str, bool]]:
        from pyarrow import fs

        try:
            infos = self.fs.get_file_info(fs.FileSelector(self.path(*parts)))
        except (FileNotFoundError, OSError):
            return []
        return [(Path(i.path).name, i.type == fs.FileType.Directory) for i in infos]

    def read(self, *parts: str) -> str | None:
        try:
            with self.fs.open_input_stream(self.path(*parts)) as f:
                return f.read().decode("utf-8", errors="replace")
        except (FileNotFoundError, OSError):
            return None


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _json_lines(text: str | None) -> list[dict]:
    rows = []
    for line in (text or "").splitlines():
        item = _json(line)
        if isinstance(item, dict):
            rows.append(item)
    return rows


def _ray_states(store: _Store) -> dict[str, dict[str, Any]]:
    """Trial id -> {status, retries} from Ray's newest experiment_state file."""
    names = sorted(n for n, is_dir in store.listdir() if n.startswith("experiment_state") and not is_dir)
    data = _json(store.read(names[-1])) if names else None
    states: dict[str, dict[str, Any]] = {}
    for entry in (data or {}).get("trial_data", []):
        try:
            trial = json.loads(entry[0])
            runtime = json.loads(entry[1])
        except (TypeError, ValueError, IndexError):
            continue
        states[trial["trial_id"]] = {
            "status": trial.get("status", ""),
            "retries": runtime.get("num_failures", 0),
        }
    return states


def _error_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def collect(out: Path, state: dict[str, Any] | None = None
            ) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """One row per trial of the sweep in ``out``, the searched field names, the
    state (``state``: sweep.json's content when the caller has read it)."""
    from masksep import config as config_mod

    if state is None and (out / STATE_FILE).is_file():
        state = _json((out / STATE_FILE).read_text())
    if not isinstance(state, dict) or "storage" not in state:
        raise UserError(f"{out}: no sweep state ({STATE_FILE}); nothing to report")
    store = _Store(f"{state['storage'].rstrip('/')}/{state['name']}")
    ray_states = _ray_states(store)
    driver_alive = state.get("status") == "running" and _pid_alive(state.get("pid"))
    rows, searched_names = [], []
    for name, is_dir in sorted(store.listdir()):
        if not (is_dir and name.startswith("trial_")):
            continue
        trial_id = name[len("trial_"):]
        searched = _json(store.read(name, "searched.json")) or {}
        for key in searched:
            if key not in searched_names:
                searched_names.append(key)
        summary = _json(store.read(name, "summary.json")) or {}
        results = _json_lines(store.read(name, "result.json"))
        epochs = [r for r in results if "epoch" in r and not r.get("final")]
        last = epochs[-1] if epochs else {}
        row: dict[str, Any] = {"trial_id": trial_id, **{f"searched.{k}": v for k, v in searched.items()}}

        cfg_text = store.read(name, "config.yaml")
        if cfg_text:
            import yaml

            try:
                cfg = config_mod.from_dict(yaml.safe_load(cfg_text))
                row.update(config_mod.head_summary(cfg), backbone=cfg.backbone.kind, seed=cfg.seed)
            except Exception:  # noqa: BLE001 - a half-written config is reported, not fatal
                pass
        for key in ("params", "head_params", "macs_per_s", "head_macs_per_s"):
            row[key] = summary.get(key, last.get(key))
        row["best_val_si_snri"] = summary.get("best_val_si_snri", last.get("best_val_si_snri"))
        row["test_si_snri"] = summary.get("test_si_snri")
        row["test_sdri"] = summary.get("test_sdri")
        row["epochs"] = summary.get("epochs", last.get("epoch", 0))
        row["wall_s"] = summary.get("wall_s", last.get("time_total_s"))
        if summary:
            row.update({k: summary[k] for k in HEAD_COLUMNS + ["seed"] if k in summary})

        error = _error_line(store.read(name, "error.txt"))
        ray_status = ray_states.get(trial_id, {}).get("status", "")
        if ray_status == "ERROR" or (error and not summary):
            status = "failed"
        elif summary:
            status = "completed"
        elif ray_status == "TERMINATED":
            status = "stopped"  # ended by the scheduler (ASHA) before its last epoch
        elif ray_status in ("RUNNING", "PENDING", "PAUSED") or not ray_status:
            status = "running" if driver_alive else "interrupted"
        else:
            status = ray_status.lower()
        row["status"] = status
        row["retries"] = ray_states.get(trial_id, {}).get("retries", 0)
        row["error"] = error if status == "failed" else ""
        rows.append(row)
    columns = (["trial_id", "status"] + [f"searched.{k}" for k in searched_names]
               + HEAD_COLUMNS + METRIC_COLUMNS + ["retries", "error"])
    return rows, columns, state


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# --------------------------------------------------------------------------- csv


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return buf.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def read_trials(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = [dict(r) for r in reader]
    except FileNotFoundError:
        raise UserError(f"{path}: not found") from None
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({type(exc).__name__})") from None
    missing = [c for c in ("trial_id", "status", "head", "best_val_si_snri") if c not in columns]
    if missing:
        raise UserError(f"{path}: not a masksep trials.csv (no column {missing[0]!r})")
    for row in rows:
        for key in NUMERIC:
            row[key] = _number(row.get(key))
    return rows, columns


def _number(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# --------------------------------------------------------------------------- analysis


def _ok(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pareto_front(rows: list[dict[str, Any]], gain: str = "best_val_si_snri",
                 cost: str = "head_macs_per_s") -> list[dict[str, Any]]:
    """Rows not dominated in (higher ``gain``, lower ``cost``), by increasing cost."""
    points = [r for r in rows if _ok(r.get(gain)) and _ok(r.get(cost))]
    front = []
    for r in points:
        dominated = any(
            o is not r and o[gain] >= r[gain] and o[cost] <= r[cost]
            and (o[gain] > r[gain] or o[cost] < r[cost])
            for o in points
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r[cost], -r[gain]))


def _label(row: dict[str, Any]) -> str:
    depth, width, p = (int(row[k]) if _ok(row.get(k)) else "?" for k in ("depth", "width", "oversep"))
    head = row.get("head", "?")
    deep = f"deep d={depth} w={width}" if depth != 1 else "deep d=1 (= shallow)"
    text = {"shallow": "shallow", "deep": deep}.get(
        head, f"og P={p} d={depth}" + (f" w={width}" if head == "og" and depth != 1 else ""))
    if row.get("grouping") == "oracle":
        text += " (oracle grouping)"
    elif head == "og":
        text += " (learned grouping)"
    if row.get("backbone"):
        text = f"{row['backbone']}: {text}"
    return text


def _fmt(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if _ok(value) else "-"


def _macs(value: Any) -> str:
    return f"{value / 1e6:.2f}M" if _ok(value) else "-"


def depth_oversep_table(rows: list[dict[str, Any]], metric: str = "test_si_snri",
                        completed_only: bool = True):
    """{(grouping_kind, depth, P): [values]} over (completed) trials."""
    cells: dict[tuple[str, int, int], list[float]] = {}
    for r in rows:
        if (completed_only and r.get("status") != "completed") or not _ok(r.get(metric)):
            continue
        if not (_ok(r.get("depth")) and _ok(r.get("oversep"))):
            continue
        kind = "oracle" if r.get("grouping") == "oracle" else "learned"
        cells.setdefault((kind, int(r["depth"]), int(r["oversep"])), []).append(r[metric])
    return cells


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} (n=1)"
    return f"{mean(values):.2f} ± {stdev(values):.2f} (n={len(values)})"


def sweep_efficiency(rows: list[dict[str, Any]], state: dict[str, Any]) -> float | None:
    """(sum of trial wall times / concurrency) / sweep wall time: 1.0 means every
    slot trained all the time; Ray's start-up per trial and idle slots lower it."""
    walls = [r["wall_s"] for r in rows if _ok(r.get("wall_s"))]
    slots = min(state.get("max_concurrent_trials") or 0, len(rows))
    total = state.get("driver_wall_s")
    if not walls or not slots or not total:
        return None
    return sum(walls) / slots / total


def _cell_tables(cells: dict[tuple[str, int, int], list[float]]) -> list[str]:
    """A depth x P markdown table per grouping kind."""
    lines: list[str] = []
    for kind in ("learned", "oracle"):
        part = {k[1:]: v for k, v in cells.items() if k[0] == kind}
        if not part:
            continue
        depths = sorted({d for d, _ in part})
        ps = sorted({p for _, p in part})
        title = "learned or no grouping" if kind == "learned" else "oracle grouping"
        lines += [f"*{title}*", "", "| depth \\ P | " + " | ".join(str(p) for p in ps) + " |",
                  "|---|" + "---|" * len(ps)]
        for d in depths:
            lines.append(f"| {d} | " + " | ".join(_mean_std(part[(d, p)]) if (d, p) in part else "-"
                                                  for p in ps) + " |")
        lines.append("")
    return lines


def summary_markdown(rows: list[dict[str, Any]], state: dict[str, Any] | None) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    name = (state or {}).get("name", "sweep")
    lines = [f"# Sweep report: {name}", ""]
    if state:
        lines.append(f"Search `{state.get('search', '?')}`, scheduler `{state.get('scheduler', '?')}`, "
                     f"status `{state.get('status', '?')}`.")
        if state.get("driver_wall_s"):
            lines.append(f"Sweep wall time {state['driver_wall_s']:.0f} s.")
            efficiency = sweep_efficiency(rows, state)
            if efficiency is not None:
                lines.append(f"Sweep efficiency {efficiency:.2f} (trial wall times summed, over "
                             f"{state['max_concurrent_trials']} concurrent slots × the sweep's wall time).")
    lines.append("Trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f" ({len(rows)} in all).")
    lines += ["", "SI-SNRi and SDRi are improvements in dB over the mixture. *val* is the best "
              "validation SI-SNRi (what the search optimises; trials stopped early by ASHA have it "
              "too); *test* is measured once, after the last epoch, with the best weights. "
              "Rows marked *(oracle grouping)* group the P outputs with the references "
              "(MixIT-style) in training and evaluation: an upper bound, not a deployable separator.", ""]

    done = sorted((r for r in rows if r["status"] == "completed" and _ok(r.get("test_si_snri"))),
                  key=lambda r: -r["test_si_snri"])
    lines += ["## Best configurations (test SI-SNRi)", ""]
    if done:
        lines += ["| # | head | test SI-SNRi | test SDRi | val SI-SNRi | head MACs/s | params | epochs | trial |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(done[:10], 1):
            lines.append(f"| {i} | {_label(r)} | {_fmt(r['test_si_snri'])} | {_fmt(r.get('test_sdri'))} | "
                         f"{_fmt(r.get('best_val_si_snri'))} | {_macs(r.get('head_macs_per_s'))} | "
                         f"{_macs(r.get('params'))} | {int(r['epochs']) if _ok(r.get('epochs')) else '-'} | "
                         f"{r['trial_id']} |")
    else:
        lines.append("No trial has trained to the end yet.")

    lines += ["", "## Test SI-SNRi by mask-head depth x overseparation P", "",
              "Mean ± std over the completed trials in each cell (seeds and any other searched "
              "field, such as width or learning rate, pooled). P = C is a shallow (depth 1) or "
              "deep head; P > C is overseparation-grouping.", ""]
    cells = depth_oversep_table(rows)
    lines += _cell_tables(cells) if cells else ["No completed trials yet.", ""]
    stopped = [r for r in rows if r.get("status") != "completed" and _ok(r.get("best_val_si_snri"))]
    if stopped:
        lines += ["## Best validation SI-SNRi by depth x P, every trial", "",
                  "Trials stopped early (by ASHA) included, after however many epochs they ran: "
                  "a head that starts slowly looks worse here than it may end.", ""]
        lines += _cell_tables(depth_oversep_table(rows, "best_val_si_snri", completed_only=False))

    front = pareto_front(rows)
    lines += ["## Pareto front: best validation SI-SNRi vs head MACs per second", ""]
    if front:
        lines += ["| head | val SI-SNRi | head MACs/s | head params | trial |", "|---|---|---|---|---|"]
        for r in front:
            lines.append(f"| {_label(r)} | {_fmt(r['best_val_si_snri'])} | {_macs(r['head_macs_per_s'])} | "
                         f"{_macs(r.get('head_params'))} | {r['trial_id']} |")
    else:
        lines.append("No trial has reported a validation score yet.")

    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "## Failed trials", "", "| trial | head | error |", "|---|---|---|"]
        for r in failed:
            lines.append(f"| {r['trial_id']} | {_label(r)} | {str(r.get('error', '')).replace('|', '/')} |")
    lines += ["", "Plots: [tradeoff.png](tradeoff.png), [depth_vs_oversep.png](depth_vs_oversep.png). "
              "Every trial: [trials.csv](trials.csv); the front: [pareto.csv](pareto.csv).", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


HEAD_COLOURS = {"shallow": "#4c72b0", "deep": "#dd8452", "og": "#55a868"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def plot_tradeoff(rows: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = [r for r in rows if _ok(r.get("best_val_si_snri")) and _ok(r.get("head_macs_per_s"))]
    for head, colour in HEAD_COLOURS.items():
        for oracle in (False, True):
            group = [r for r in points if r.get("head") == head and (r.get("grouping") == "oracle") == oracle]
            if not group:
                continue
            full = [r for r in group if r["status"] == "completed"]
            part = [r for r in group if r["status"] != "completed"]
            marker = "^" if oracle else "o"
            label = head + (" (oracle grouping)" if oracle else "")
            if full:
                ax.scatter([r["head_macs_per_s"] / 1e6 for r in full], [r["best_val_si_snri"] for r in full],
                           c=colour, marker=marker, label=label, s=40, zorder=3)
            if part:
                ax.scatter([r["head_macs_per_s"] / 1e6 for r in part], [r["best_val_si_snri"] for r in part],
                           facecolors="none", edgecolors=colour, marker=marker, s=40, zorder=3,
                           label=None if full else label)
    front = pareto_front(rows)
    if front:
        ax.plot([r["head_macs_per_s"] / 1e6 for r in front], [r["best_val_si_snri"] for r in front],
                color="black", lw=1, ls="--", label="Pareto front", zorder=2, drawstyle="steps-post")
    if points:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 2, 3, 4, 6, 10 rather than 2x10^0
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no trial has reported yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("mask head MACs per second of audio (millions)")
    ax.set_ylabel("best validation SI-SNRi (dB)")
    ax.set_title("Separation quality vs mask-head cost (hollow: stopped early or unfinished)", fontsize=9)
    ax.grid(True, alpha=0.3)
    data = _png(fig)
    plt.close(fig)
    return data


def plot_depth_vs_oversep(rows: list[dict[str, Any]]) -> bytes:
    """Heatmaps of SI-SNRi over depth x P: test SI-SNRi of the completed trials
    and, when some trials stopped early, best validation SI-SNRi of every trial
    (as the two tables of summary.md); a column per grouping kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [("test SI-SNRi (dB), completed trials", depth_oversep_table(rows))]
    if any(r.get("status") != "completed" and _ok(r.get("best_val_si_snri")) for r in rows):
        panels.append(("best val SI-SNRi (dB), every trial",
                       depth_oversep_table(rows, "best_val_si_snri", completed_only=False)))
    kinds = [k for k in ("learned", "oracle") if any(c[0] == k for _, cells in panels for c in cells)]
    kinds = kinds or ["learned"]
    fig, axes = plt.subplots(len(panels), len(kinds), figsize=(4.5 * len(kinds) + 1, 3.6 * len(panels)),
                             squeeze=False, layout="constrained")
    for row_axes, (label, cells) in zip(axes, panels, strict=True):
        for ax, kind in zip(row_axes, kinds, strict=True):
            part = {k[1:]: v for k, v in cells.items() if k[0] == kind}
            title = "learned / no grouping" if kind == "learned" else "oracle grouping"
            if not part:
                ax.text(0.5, 0.5, f"{title}:\nno trials here yet", ha="center", va="center",
                        transform=ax.transAxes)
                ax.set_axis_off()
                continue
            depths = sorted({d for d, _ in part})
            ps = sorted({p for _, p in part})
            grid = np.full((len(depths), len(ps)), np.nan)
            for (d, p), values in part.items():
                grid[depths.index(d), ps.index(p)] = mean(values)
            image = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
            for (d, p), values in part.items():
                light = image.norm(mean(values)) > 0.6  # viridis turns yellow: dark text there
                ax.text(ps.index(p), depths.index(d), f"{mean(values):.1f}\nn={len(values)}",
                        ha="center", va="center", fontsize=8, color="black" if light else "white")
            ax.set_xticks(range(len(ps)), [str(p) for p in ps])
            ax.set_yticks(range(len(depths)), [str(d) for d in depths])
            ax.set_xlabel("outputs P (P = C: no overseparation)")
            ax.set_ylabel("mask head depth")
            ax.set_title(title, fontsize=9)
            fig.colorbar(image, ax=ax, label=label, shrink=0.9)
    fig.suptitle("SI-SNRi by mask-head depth and overseparation", fontsize=10)
    data = _png(fig)
    plt.close(fig)
    return data


# --------------------------------------------------------------------------- entry points


def render(out: Path, rows: list[dict[str, Any]], columns: list[str],
           state: dict[str, Any] | None) -> dict[str, Any]:
    """pareto.csv, summary.md and the plots from the rows of trials.csv."""
    front = pareto_front(rows)
    files = {
        "pareto.csv": _csv_text(front, columns),
        "summary.md": summary_markdown(rows, state),
        "tradeoff.png": plot_tradeoff(rows),
        "depth_vs_oversep.png": plot_depth_vs_oversep(rows),
    }
    for name, data in files.items():  # everything is built before anything is written
        atomic_write(out / name, data)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    best = max((r for r in rows if _ok(r.get("test_si_snri"))), key=lambda r: r["test_si_snri"], default=None)
    return {"trials": len(rows), **counts, "pareto": len(front),
            "best_test_si_snri": best["test_si_snri"] if best else None,
            "best_trial": best["trial_id"] if best else None}


def write_report(out: str | Path) -> dict[str, Any]:
    """Collect (when the Ray experiment is reachable) and render the report of ``out``."""
    out = Path(out)
    if not out.is_dir():
        raise UserError(f"{out}: no such folder")
    state = _json((out / STATE_FILE).read_text()) if (out / STATE_FILE).is_file() else None
    if state:
        rows, columns, state = collect(out, state)
        if not rows:
            raise UserError(f"{out}: the sweep has no trials yet")
        atomic_write(out / "trials.csv", _csv_text(rows, columns))
    elif not (out / "trials.csv").is_file():
        raise UserError(f"{out}: neither a sweep ({STATE_FILE}) nor a report (trials.csv) is here")
    # Rows read from the CSV either way, so that both paths render the same typed values.
    rows, columns = read_trials(out / "trials.csv")
    if not rows:
        raise UserError(f"{out / 'trials.csv'}: holds no trials")
    return render(out, rows, columns, state)
