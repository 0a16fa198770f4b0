"""The sweep report: trials.csv in and out, cells with their CI and what they
pool, the Pareto front, the heatmap's colour scale, the raw-file fallback of
collect, and the CLI's one-line errors. No Ray needed."""

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from masksep import report as R
from masksep.cli import main
from masksep.errors import UserError
from masksep.report import plots, schema, tables


def row(trial_id, head, depth, p, val, macs, test=None, status="completed", grouping=None, seed=0,
        lr=1e-3, width=None):
    return {
        "trial_id": trial_id, "status": status, "searched.head.kind": head, "searched.train.lr": lr,
        "head": head, "depth": depth, "width": width if width is not None else (128 if depth > 1 else 0),
        "oversep": p, "grouping": grouping or ("learned" if head == "og" else "none"),
        "backbone": "tcn", "n_src": 2, "params": 1e5, "head_params": macs / 1000, "macs_per_s": 1e8,
        "head_macs_per_s": macs, "best_val_si_snri": val, "test_si_snri": test,
        "test_sdri": None if test is None else test + 0.5, "epochs": 3, "wall_s": 60.0, "seed": seed,
        "retries": 0, "error": "ValueError: boom" if status == "failed" else "",
    }


ROWS = [
    row("a", "shallow", 1, 2, 5.0, 1e6, test=4.8, seed=0),
    row("b", "shallow", 1, 2, 5.4, 1e6, test=5.2, seed=1),
    row("b2", "shallow", 1, 2, 5.1, 1e6, test=5.1, seed=2),
    row("c", "deep", 3, 2, 7.0, 5e6, test=6.9, lr=2e-3),
    row("d", "deep", 3, 2, 6.0, 9e6, test=5.9, width=256),
    row("e", "og", 1, 4, 6.5, 2e6, test=6.1),
    row("f", "og", 1, 4, 8.0, 2e6, test=7.5, grouping="oracle"),
    row("g", "deep", 2, 2, 3.0, 3e6, status="stopped"),
    row("h", "og", 1, 8, math.nan, 4e6, status="failed"),
]


def write_trials(path, rows=ROWS):
    path.write_text(schema.csv_text(schema.trials_frame(rows)))


def test_trials_csv_round_trips_typed_with_none_where_missing(tmp_path):
    write_trials(tmp_path / "trials.csv")
    df = R.load_trials(tmp_path / "trials.csv")
    assert df["trial_id"].tolist() == [r["trial_id"] for r in ROWS]
    assert df["oversep"].dtype == float and df.loc[df["trial_id"] == "e", "oversep"].item() == 4
    rows, columns = R.read_trials(tmp_path / "trials.csv")  # the runner's W&B table reads these
    assert columns[:3] == ["trial_id", "status", "searched.head.kind"]
    assert rows[7]["test_si_snri"] is None and rows[8]["best_val_si_snri"] is None
    assert rows[3]["searched.train.lr"] == pytest.approx(2e-3)
    assert rows[8]["error"] == "ValueError: boom" and rows[0]["error"] == ""
    # a trials.csv from before these columns existed still reads: the new ones are empty
    old = pd.read_csv(tmp_path / "trials.csv").drop(columns=["n_src", "train_steps"])
    old.to_csv(tmp_path / "old.csv", index=False)
    df = R.load_trials(tmp_path / "old.csv")
    assert df["train_steps"].isna().all() and tables.n_src_values(df) == {2}


def test_layout_is_a_head_column_and_an_old_trials_csv_reads_as_joint(tmp_path):
    per_source = {**row("p", "deep", 3, 2, 6.8, 7e6, test=6.6, width=256), "layout": "per_source"}
    write_trials(tmp_path / "trials.csv", [*ROWS, per_source])
    df = R.load_trials(tmp_path / "trials.csv")
    assert "layout" in schema.HEAD_COLUMNS and "layout" in df.columns
    layouts = df.set_index("trial_id")["layout"]
    assert layouts["p"] == "per_source" and layouts["d"] == "joint"  # rows without it: joint
    assert tables.label(df.set_index("trial_id").loc["p"]) == "tcn: deep d=3 w=256 per-source"
    assert tables.label(df.set_index("trial_id").loc["d"]) == "tcn: deep d=3 w=256"
    cells = tables.depth_oversep_cells(df)
    deep = cells[cells["depth"] == 3].iloc[0]
    assert deep["n"] == 3 and deep["pools"]["layout"] == ["joint", "per_source"]

    # A trials.csv written before head.layout existed: no column at all.
    old = tmp_path / "old"
    old.mkdir()
    text = (tmp_path / "trials.csv").read_text()
    legacy = pd.read_csv(io.StringIO(text)).drop(columns=["layout"]).iloc[:-1]
    legacy.to_csv(old / "trials.csv", index=False)
    assert "layout" not in (old / "trials.csv").read_text().splitlines()[0]
    df = R.load_trials(old / "trials.csv")
    assert set(df["layout"]) == {"joint"}
    summary = R.write_report(old)
    assert summary["trials"] == len(ROWS)
    text = (old / "summary.md").read_text()
    assert "deep d=3 w=256" in text and "per-source" not in text


def test_pareto_front_keeps_only_non_dominated_trials():
    front = R.pareto_front(schema.trials_frame(ROWS))
    # a, b2: b costs the same and scores higher; e: f likewise; c, d, g: f is cheaper and better
    assert front["trial_id"].tolist() == ["b", "f"]


def test_depth_oversep_cells_carry_the_t_interval_and_what_they_pool():
    cells = tables.depth_oversep_cells(schema.trials_frame(ROWS))
    shallow = cells[(cells["kind"] == "learned") & (cells["depth"] == 1) & (cells["oversep"] == 2)].iloc[0]
    values = [4.8, 5.2, 5.1]
    low, high = scipy.stats.t.interval(0.95, 2, loc=np.mean(values), scale=scipy.stats.sem(values))
    assert shallow["n"] == 3 and shallow["ci_low"] == pytest.approx(low)
    assert shallow["ci_high"] == pytest.approx(high)
    assert shallow["pools"] == {"seed": [0.0, 1.0, 2.0]}
    deep = cells[(cells["depth"] == 3)].iloc[0]
    assert deep["n"] == 2 and set(deep["pools"]) == {"width", "train.lr"}  # seeds alike: not pooled
    oracle = cells[cells["kind"] == "oracle"].iloc[0]
    assert oracle["n"] == 1 and math.isnan(oracle["ci_low"]) and oracle["pools"] == {}
    assert tables.cell_text(oracle) == "7.50 (n=1, no CI)"


def test_report_from_trials_csv_alone(tmp_path):
    write_trials(tmp_path / "trials.csv")
    summary = R.write_report(tmp_path)
    assert summary["trials"] == 9 and summary["completed"] == 7 and summary["failed"] == 1
    assert summary["best_trial"] == "f" and "claims" not in summary
    json.dumps(summary)  # the CLI prints it
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith("# Sweep report")
    assert "og P=4 d=1 (oracle grouping)" in text and "og P=4 d=1 (learned grouping)" in text
    assert "5.03 ± 0.21 [4.52, 5.55] (n=3)" in text  # shallow over its three seeds
    assert "7.50 (n=1, no CI)" in text
    assert "seed (depth 1 × P 2: 0, 1, 2)" in text
    assert "width (depth 3 × P 2: 128, 256)" in text
    # P = C is labelled only where P equals C (two sources)
    assert "| P = 2 (= C) | P = 4 |" in text and "P = 4 (= C)" not in text
    assert "ValueError: boom" in text
    assert "epochs.csv" not in text  # none here, so no link to one
    assert pd.read_csv(tmp_path / "pareto.csv")["trial_id"].tolist() == ["b", "f"]
    for name in ("tradeoff.png", "depth_vs_oversep.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not (tmp_path / "study_claims.csv").exists()


def test_heatmap_colour_span_is_never_narrower_than_the_noise():
    cells = tables.depth_oversep_cells(schema.trials_frame(ROWS))
    widths = (cells["ci_high"] - cells["ci_low"]).dropna()
    vmin, vmax, why = plots.colour_scale(cells)
    assert vmax - vmin >= max(widths.median(), plots.MIN_SPAN_DB) - 1e-9
    assert vmin <= cells["mean"].min() and vmax >= cells["mean"].max()
    # means 0.02 dB apart, each from one run: no CI, so the fixed span, said so
    close = pd.DataFrame({"mean": [4.60, 4.62], "ci_low": [math.nan] * 2, "ci_high": [math.nan] * 2})
    vmin, vmax, why = plots.colour_scale(close)
    assert vmax - vmin == pytest.approx(plots.FIXED_SPAN_DB) and "no cell has a CI" in why
    # means far apart: the range itself, said so
    far = pd.DataFrame({"mean": [2.0, 8.0], "ci_low": [1.9, 7.9], "ci_high": [2.1, 8.1]})
    assert plots.colour_scale(far) == (2.0, 8.0, "range of the means, 6.00 dB")


def test_sweep_efficiency_is_trial_time_over_slots_times_sweep_time():
    # 9 trials of 60 s on 2 slots would take 270 s with no gaps; the sweep took 300 s
    df = schema.trials_frame(ROWS)
    state = {"max_concurrent_trials": 2, "driver_wall_s": 300.0, "status": "finished"}
    assert R.sweep_efficiency(df, state) == pytest.approx(540 / 2 / 300)
    assert "Sweep efficiency 0.90" in R.summary_markdown(df, state)
    assert R.sweep_efficiency(df, {"driver_wall_s": 300.0}) is None  # older sweep.json


def test_a_resumed_sweep_whose_killed_driver_recorded_no_time_gives_no_efficiency():
    df = schema.trials_frame(ROWS)
    whole = {"max_concurrent_trials": 2, "driver_wall_s": 300.0, "resumed": True,
             "drivers": [{"started": 1.0, "wall_s": 100.0}, {"started": 9.0, "wall_s": 200.0}]}
    assert R.sweep_efficiency(df, whole) == pytest.approx(540 / 2 / 300)
    assert "Sweep wall time 300 s over 2 driver runs (resumed)." in R.summary_markdown(df, whole)
    killed = {**whole, "driver_wall_s": 200.0,
              "drivers": [{"started": 1.0, "wall_s": None}, {"started": 9.0, "wall_s": 200.0}]}
    # a sweep.json from before driver runs were listed, resumed: not known either
    older = {"max_concurrent_trials": 2, "driver_wall_s": 200.0, "resumed": True}
    for state in (killed, older):
        assert R.sweep_efficiency(df, state) is None
        text = R.summary_markdown(df, state)
        assert "Sweep wall time not known in full: at least 200 s." in text
        assert "Sweep efficiency" not in text


def _trial_folder(root, trial_id, *, summary=None, epochs=(), error=None, searched=None):
    folder = root / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    (folder / "searched.json").write_text(json.dumps(searched or {"head.kind": "shallow"}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    if error is not None:
        (folder / "error.txt").write_text(f"Traceback (most recent call last):\n  ...\n{error}\n")


def test_a_sweep_copied_without_rays_state_is_read_from_its_trial_folders(tmp_path):
    out = tmp_path / "sweep"
    experiment = out / "ray" / "s"
    head = {"head": "shallow", "depth": 1, "width": 0, "oversep": 2, "grouping": "none",
            "backbone": "tcn", "n_src": 2, "seed": 0, "params": 1e5, "head_params": 1e3,
            "macs_per_s": 1e8, "head_macs_per_s": 1e6}
    epoch = {"epoch": 1, "train_loss": -3.0, "val_si_snr": 1.0, "val_si_snri": 4.0,
             "best_val_si_snri": 4.0, "lr": 1e-3, "epoch_s": 2.0, "steps": 10}
    _trial_folder(experiment, "done", summary={**head, "best_val_si_snri": 4.5, "test_si_snri": 4.2,
                                               "test_sdri": 4.9, "epochs": 2, "wall_s": 9.0,
                                               "train_steps": 20, "train_audio_s": 80.0},
                  epochs=[epoch, {**epoch, "epoch": 2, "val_si_snri": 4.5, "best_val_si_snri": 4.5},
                          {**epoch, "epoch": 2, "val_si_snri": 4.5, "best_val_si_snri": 4.5}])
    _trial_folder(experiment, "boom", epochs=[epoch], error="RuntimeError: diverged (NaN loss)")
    _trial_folder(experiment, "cut", epochs=[epoch])
    state = {"name": "s", "storage": str(out / "ray"), "search": "grid", "scheduler": "asha",
             "num_trials": 3, "max_concurrent_trials": 1, "status": "finished", "driver_wall_s": 30.0}
    (out / "sweep.json").write_text(json.dumps(state))
    summary = R.write_report(out)
    assert summary == {**summary, "trials": 3, "completed": 1, "failed": 1, "stopped": 1}
    df = R.load_trials(out / "trials.csv")
    by_id = df.set_index("trial_id")
    assert by_id.loc["done", "train_steps"] == 20 and by_id.loc["done", "n_src"] == 2
    assert by_id.loc["boom", "error"] == "RuntimeError: diverged (NaN loss)"
    assert by_id.loc["cut", "best_val_si_snri"] == 4.0 and math.isnan(by_id.loc["cut", "test_si_snri"])
    epochs = pd.read_csv(out / "epochs.csv", dtype={"trial_id": str})
    assert epochs[epochs["trial_id"] == "done"]["epoch"].tolist() == [1, 2]  # a retried epoch once
    assert not (out / "study.json").exists()  # not a study

    state["status"] = "running"  # a driver that is gone: its unfinished trial was interrupted
    state["pid"] = 2**22 + 12345
    (out / "sweep.json").write_text(json.dumps(state))
    assert R.write_report(out)["interrupted"] == 1


def test_report_cli_on_missing_and_empty_folders(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "neither a sweep" in err and err.count("\n") == 1
    (tmp_path / "trials.csv").write_text(",".join(schema.trials_frame(ROWS).columns) + "\n")
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no trials" in capsys.readouterr().err
    assert not (tmp_path / "summary.md").exists()


def test_a_malformed_trials_csv_is_one_line(tmp_path):
    (tmp_path / "trials.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a masksep trials.csv"):
        R.write_report(tmp_path)
    (tmp_path / "trials.csv").write_text("")
    with pytest.raises(UserError, match="empty"):
        R.write_report(tmp_path)
    assert not (tmp_path / "summary.md").exists()
