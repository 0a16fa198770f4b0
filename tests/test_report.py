"""The report: Pareto front, tables and plots from a trials.csv (no Ray needed)."""

import csv
import math

import pytest

from masksep import report as R
from masksep.cli import main
from masksep.errors import UserError

COLUMNS = ["trial_id", "status", "searched.head.kind", *R.HEAD_COLUMNS, *R.METRIC_COLUMNS, "retries", "error"]


def row(trial_id, head, depth, p, val, macs, test=None, status="completed", grouping=None, seed=0):
    return {
        "trial_id": trial_id, "status": status, "searched.head.kind": head, "head": head,
        "depth": depth, "width": 128 if depth > 1 else 0, "oversep": p,
        "grouping": grouping or ("learned" if head == "og" else "none"), "backbone": "tcn",
        "params": 1e5, "head_params": macs / 1000, "macs_per_s": 1e8, "head_macs_per_s": macs,
        "best_val_si_snri": val, "test_si_snri": test, "test_sdri": None if test is None else test + 0.5,
        "epochs": 3, "wall_s": 60.0, "seed": seed, "retries": 0,
        "error": "ValueError: boom" if status == "failed" else "",
    }


ROWS = [
    row("a", "shallow", 1, 2, 5.0, 1e6, test=4.8, seed=0),
    row("b", "shallow", 1, 2, 5.4, 1e6, test=5.2, seed=1),
    row("c", "deep", 3, 2, 7.0, 5e6, test=6.9),
    row("d", "deep", 3, 2, 6.0, 9e6, test=5.9),
    row("e", "og", 1, 4, 6.5, 2e6, test=6.1),
    row("f", "og", 1, 4, 8.0, 2e6, test=7.5, grouping="oracle"),
    row("g", "deep", 2, 2, 3.0, 3e6, status="stopped"),
    row("h", "og", 1, 8, math.nan, 4e6, status="failed"),
]


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: R._cell(v) for k, v in r.items()})


def test_pareto_front_keeps_only_non_dominated_trials():
    front = R.pareto_front([dict(r) for r in ROWS])
    # a: b costs the same and scores higher; e: f likewise; c, d, g: f is cheaper and better
    assert [r["trial_id"] for r in front] == ["b", "f"]


def test_report_from_trials_csv_alone(tmp_path):
    write_csv(tmp_path / "trials.csv", ROWS)
    summary = R.write_report(tmp_path)
    assert summary["trials"] == 8 and summary["completed"] == 6 and summary["failed"] == 1
    assert summary["best_trial"] == "f"
    text = (tmp_path / "summary.md").read_text()
    assert "og P=4 d=1 (oracle grouping)" in text
    assert "og P=4 d=1 (learned grouping)" in text
    assert "5.00 ± 0.28 (n=2)" in text  # shallow: mean and std of 4.8 and 5.2 over two seeds
    assert "ValueError: boom" in text
    pareto = list(csv.DictReader(open(tmp_path / "pareto.csv")))
    assert [r["trial_id"] for r in pareto] == ["b", "f"]
    for name in ("tradeoff.png", "depth_vs_oversep.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_sweep_efficiency_is_trial_time_over_slots_times_sweep_time():
    # 8 trials of 60 s on 2 slots would take 240 s with no gaps; the sweep took 300 s
    state = {"max_concurrent_trials": 2, "driver_wall_s": 300.0, "status": "finished"}
    assert R.sweep_efficiency(ROWS, state) == pytest.approx(480 / 2 / 300)
    assert "Sweep efficiency 0.80" in R.summary_markdown([dict(r) for r in ROWS], state)
    assert R.sweep_efficiency(ROWS, {"driver_wall_s": 300.0}) is None  # older sweep.json


def test_report_cli_on_missing_and_empty_folders(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "neither a sweep" in err and err.count("\n") == 1
    write_csv(tmp_path / "trials.csv", [])
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no trials" in capsys.readouterr().err
    assert not (tmp_path / "summary.md").exists()


def test_a_malformed_trials_csv_is_one_line(tmp_path):
    (tmp_path / "trials.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="not a masksep trials.csv"):
        R.write_report(tmp_path)
