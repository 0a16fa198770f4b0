"""`masksep transfer` (every checkpoint of each training source on every test set) and
`masksep eval` over several test sets in one call: the scores are eval's, the cells are
scipy's t-intervals, a source's own test sets are marked, and bad input is one line
with nothing written."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from masksep.cli import main
from masksep.data.export import synth

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

DATA = ["train.batch_size=2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two test sets ("a" and "b": synthetic mixtures of different seeds and lengths)
    and two training sources, "a" and "a+b", each a sweep of two variants x 2 seeds of
    random-weight checkpoints (different weights per seed)."""
    base = tmp_path_factory.mktemp("transfer")
    tests = {"a": base / "sets" / "a" / "wav8k" / "min", "b": base / "sets" / "b" / "wav8k" / "min"}
    synth(tests["a"], "librimix", "test", 3, seconds=0.5, seed=1)
    synth(tests["b"], "librimix", "test", 2, seconds=0.7, seed=2)
    sweeps = {}
    for k, source in enumerate(("a", "a+b")):
        trials = {}
        for variant, sets in {"shallow": ["head.kind=shallow"],
                              "og": ["head.kind=og", "head.oversep=4"]}.items():
            for seed in (0, 1):
                path = base / f"{source}-{variant}-{seed}.pt"
                tiny.save_checkpoint(path, *DATA, *sets, f"seed={seed}", seed=10 * k + seed)
                trials[f"{variant}{seed}"] = (path, {"variant": variant})
        sweeps[source] = tiny.fake_sweep(base / "sweeps" / source, trials)
    return base, tests, sweeps


def transfer_args(tests, sweeps, out):
    return (["transfer", "--out", str(out)]
            + [a for name, folder in sweeps.items() for a in ("--train", f"{name}={folder}")]
            + [a for name, folder in tests.items() for a in ("--test", f"{name}={folder}")])


def eval_si_snri(capsys, checkpoint, folder) -> float:
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(folder), "--json",
                 "--out", str(checkpoint.parent / "eval-check")]) == 0
    return json.loads(capsys.readouterr().out)["si_snri"]


def test_the_table_holds_evals_scores_and_scipys_intervals(world, tmp_path, capsys):
    base, tests, sweeps = world
    out = tmp_path / "transfer"
    assert main(transfer_args(tests, sweeps, out)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["models"] == 8 and printed["tests"] == ["a", "b"]

    scores = list(csv.DictReader((out / "scores.csv").open()))
    assert len(scores) == 8 * 2
    assert {(r["source"], r["test"]) for r in scores} == {(s, t) for s in sweeps for t in tests}
    # Each score is what masksep eval gives for that checkpoint on that folder.
    for row in scores[:3]:
        ckpt = sweeps[row["source"]] / "ray" / "study" / f"trial_{row['trial']}" / "checkpoints" / "best.pt"
        assert float(row["si_snri"]) == pytest.approx(eval_si_snri(capsys, ckpt, tests[row["test"]]), abs=1e-3)
        assert int(row["items"]) == {"a": 3, "b": 2}[row["test"]]

    table = list(csv.DictReader((out / "transfer.csv").open()))
    assert len(table) == 2 * 2 * 2  # sources x variants x test sets
    for cell in table:
        values = [float(r["si_snri"]) for r in scores if (r["source"], r["variant"], r["test"])
                  == (cell["source"], cell["variant"], cell["test"])]
        assert int(cell["n"]) == len(values) == 2
        assert float(cell["mean"]) == pytest.approx(np.mean(values), abs=1e-4)
        ci = scipy.stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
        assert float(cell["ci_low"]) == pytest.approx(ci.low, abs=1e-3)
        assert float(cell["ci_high"]) == pytest.approx(ci.high, abs=1e-3)
        # "a+b" was trained on a and b: both its test sets are its own; "a" has only a.
        assert cell["in_domain"] == str(cell["test"] in cell["source"].split("+"))

    meta = json.loads((out / "transfer.json").read_text())
    by_source = {r["source"]: r for r in meta["by_source"]}
    for source, r in by_source.items():
        per_test = {t: np.mean([float(c["mean"]) for c in table if c["source"] == source and c["test"] == t])
                    for t in tests}
        assert r["worst_test"] == min(per_test, key=per_test.get)
        assert r["worst"] == pytest.approx(min(per_test.values()), abs=1e-4)
    assert by_source["a"]["out_of_domain"] is not None and by_source["a+b"]["out_of_domain"] is None
    best = max(by_source, key=lambda s: by_source[s]["worst"])
    assert [s for s, r in by_source.items() if r["generalizes_best"]] == [best]

    text = (out / "transfer.md").read_text()
    assert "| trained on | head | a | b |" in text and "| a+b | og |" in text
    assert (out / "transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("scores.csv", "transfer.csv", "transfer.md", "transfer.json"):
        assert str(base) not in (out / name).read_text(), name  # no machine paths


def test_variants_pick_the_rows(world, tmp_path, capsys):
    _, tests, sweeps = world
    out = tmp_path / "only-og"
    assert main(transfer_args({"b": tests["b"]}, sweeps, out) + ["--variants", "og"]) == 0
    capsys.readouterr()
    assert {r["variant"] for r in csv.DictReader((out / "scores.csv").open())} == {"og"}


@pytest.mark.parametrize("change, words", [
    (lambda t, s: (t, {**s, "c": s["a"].parent / "missing"}), "--train c="),
    (lambda t, s: ({**t, "c": s["a"] / "ray"}, s), "not a data folder"),
    (lambda t, s: (t, {"a": s["a"], "x y": s["a"]}), "use letters"),
])
def test_bad_input_is_one_line_and_writes_nothing(world, tmp_path, capsys, change, words):
    _, tests, sweeps = world
    tests, sweeps = change(tests, sweeps)
    out = tmp_path / "transfer"
    assert main(transfer_args(tests, sweeps, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not out.exists()
    assert main(transfer_args(tests, sweeps, out)[:3] + ["--train", "a", "--test", "b=x"]) == 2
    assert "expected NAME=DIR" in capsys.readouterr().err
    assert main(transfer_args(world[1], world[2], out) + ["--variants", "deep"]) == 2
    assert "deep" in capsys.readouterr().err and not out.exists()


def test_eval_scores_several_test_sets_in_one_call(world, tmp_path, capsys):
    _, tests, sweeps = world
    ckpt = sweeps["a"] / "ray" / "study" / "trial_og0" / "checkpoints" / "best.pt"
    alone = {name: eval_si_snri(capsys, ckpt, folder) for name, folder in tests.items()}
    out = tmp_path / "eval"
    args = ["eval", "--checkpoint", str(ckpt), "--data", str(tests["a"]), "--data", str(tests["b"])]
    assert main([*args, "--out", str(out), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["items"] for r in results] == [3, 2]
    assert [r["si_snri"] for r in results] == pytest.approx([alone["a"], alone["b"]], abs=1e-4)
    for name in tests:
        summary = json.loads((out / f"{name}-wav8k-min-test" / "final_metrics.json").read_text())
        assert summary["si_snri"] == pytest.approx(alone[name], abs=1e-4)
    # In the run folder: RUN/eval/<set>-test per set; the tables are printed one after another.
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("# ") == 2 and printed.count("\nmean ") == 2
    run = ckpt.parent.parent
    assert {p.name for p in (run / "eval").iterdir()} >= {"a-wav8k-min-test", "b-wav8k-min-test"}
    # A bad second set or --csv with several sets: one line, nothing of the first written.
    (tmp_path / "notes").mkdir()
    fresh = tmp_path / "fresh"
    assert main([*args[:5], "--data", str(tmp_path / "notes"), "--out", str(fresh)]) == 2
    assert "notes" in capsys.readouterr().err and not fresh.exists()
    assert main([*args, "--csv", str(tmp_path / "x.csv")]) == 2
    assert "--csv" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
    assert main([*args[:5], "--data", str(tests["a"]), "--out", str(fresh)]) == 2
    assert "twice" in capsys.readouterr().err


def test_heads_are_paired_by_seed_and_a_table_renders_again_from_its_scores(world, tmp_path, capsys):
    _, tests, sweeps = world
    out = tmp_path / "transfer"
    assert main(transfer_args(tests, sweeps, out) + ["--reference", "og"]) == 0
    capsys.readouterr()
    scores = list(csv.DictReader((out / "scores.csv").open()))
    value = {(r["source"], r["variant"], r["seed"], r["test"]): float(r["si_snri"]) for r in scores}
    differences = list(csv.DictReader((out / "paired.csv").open()))
    assert {d["comparison"] for d in differences} == {"shallow - og"}
    assert len(differences) == len(sweeps) * len(tests)
    for d in differences:
        x = [value[(d["source"], "shallow", s, d["test"])] for s in ("0", "1")]
        y = [value[(d["source"], "og", s, d["test"])] for s in ("0", "1")]
        ci = scipy.stats.ttest_rel(x, y).confidence_interval(0.95)
        assert float(d["mean"]) == pytest.approx(np.mean(np.subtract(x, y)), abs=1e-4)
        assert float(d["ci_low"]) == pytest.approx(ci.low, abs=1e-3)
    assert "## Each head against og, paired by seed" in (out / "transfer.md").read_text()

    # A committed folder: scores.csv and transfer.json alone give every other file again.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for name in before:
        if name not in ("scores.csv", "transfer.json"):
            (out / name).unlink()
    assert main(["transfer", "--out", str(out)]) == 0
    capsys.readouterr()
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(after) == set(before)
    for name in ("transfer.csv", "paired.csv", "transfer.md"):
        assert after[name] == before[name], name
    (out / "transfer.json").write_text("{}")
    assert main(["transfer", "--out", str(out)]) == 2
    assert "not a masksep transfer file" in capsys.readouterr().err
