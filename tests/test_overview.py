"""masksep overview: one claims table over planted study folders (issue 26)."""

import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from masksep.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_study_report import plant, plant_milestones  # noqa: E402

EFFECTS = {"shallow": 0.0, "deep-d3": 2.0, "og-p4-learned": 1.5, "og-p8-learned": 2.0}


def manifest(folder, runs):
    path = folder / "runs.yaml"
    path.write_text(yaml.safe_dump({"title": "Planted scale", "runs": runs}))
    return path


def test_overview_has_a_row_per_claim_folder_and_milestone(tmp_path, capsys):
    plant(tmp_path / "small", EFFECTS, seeds=4)
    budget = plant(tmp_path / "budget", EFFECTS, seeds=5, milestones=[200, 600], rng_seed=1)
    plant_milestones(budget, {200: {"deep-d3": -4.0}, 600: {}})
    big = plant(tmp_path / "big", {**EFFECTS, "deep-d3": -2.0}, seeds=4, rng_seed=2)
    trials = pd.read_csv(big / "trials.csv")
    trials["macs_per_s"] *= 10  # a backbone ten times the size
    (big / "trials.csv").write_text(trials.to_csv(index=False))
    out = tmp_path / "scale"
    out.mkdir()
    path = manifest(out, [
        {"folder": "../small", "data": "synthetic", "backbone": "small", "tuned": False},
        {"folder": "../budget", "data": "synthetic", "backbone": "small", "tuned": False},
        {"folder": "../big", "data": "synthetic", "backbone": "big", "tuned": False},
    ])
    assert main(["overview", str(path)]) == 0
    table = pd.read_csv(out / "overview.csv")
    one = table[table["claim"].str.startswith("1.")]
    assert len(one) == 4  # small (its end), budget at 200 and 600, big
    verdicts = {(r.backbone, r.steps, r.folder): r.verdict for r in one.itertuples()}
    assert verdicts[("small", 600, "../budget")] == "holds"
    assert verdicts[("small", 200, "../budget")] == "does not hold"
    assert verdicts[("big", 600, "../big")] == "does not hold"
    assert verdicts[("small", 600, "../small")] == "holds"
    big_row = one[one["backbone"] == "big"].iloc[0]
    assert big_row["backbone_macs_per_s"] == pytest.approx(10 * one[one["folder"] == "../small"].iloc[0][
        "backbone_macs_per_s"])
    assert list(dict.fromkeys(table["claim"].str.split(".").str[0])) == ["1", "2", "3"]  # the claims' own order
    text = (out / "overview.md").read_text()
    assert text.startswith("# Planted scale") and "## 1. deep > shallow" in text
    for name in ("overview.png", "claims_by_size.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # At a glance: a row per folder and budget, each claim's verdict in its column, counted
    glance = text[text.index("## At a glance"):text.index("## 1. deep > shallow")]
    rows = [line for line in glance.splitlines() if line.startswith("| synthetic")]
    assert len(rows) == 4  # small, budget at 200 and at 600, big
    big = next(r for r in rows if "../big" in r).split(" | ")
    assert big[1].startswith("big (") and "**does not hold**" in big[6]
    assert "1,200" not in glance and "| 200 † |" in glance  # the budgets of one folder, marked
    ind = pd.read_csv(out / "independent.csv")
    first = ind[ind["claim"].str.startswith("1.")]
    assert sorted(first["folder"]) == ["../big", "../budget", "../small"]  # one row per set of trials
    assert (first.set_index("folder").loc["../budget", "steps"]) == 600  # at its final budget
    assert "**1. deep > shallow**: 3 experiments" in text


def test_a_repeated_folder_is_one_experiment_shown_once(tmp_path):
    import shutil

    plant(tmp_path / "small", EFFECTS, seeds=4)
    shutil.copytree(tmp_path / "small", tmp_path / "again")  # the same trials, another folder
    plant(tmp_path / "rerun", EFFECTS, seeds=4, rng_seed=9)  # the same design run again: other numerics
    plant(tmp_path / "other", EFFECTS, seeds=3, rng_seed=5)  # other seeds: another experiment
    out = tmp_path / "scale"
    out.mkdir()
    path = manifest(out, [
        {"folder": f"../{name}", "data": "synthetic", "backbone": "small", "tuned": False}
        for name in ("small", "again", "rerun", "other")])
    assert main(["overview", str(path)]) == 0
    table = pd.read_csv(out / "overview.csv", keep_default_na=False)
    one = table[table["claim"].str.startswith("1.")]
    assert sorted(one["folder"]) == ["../other", "../small"]
    assert one.set_index("folder").loc["../small", "also"] == "../again, ../rerun"
    ind = pd.read_csv(out / "independent.csv")
    assert len(ind[ind["claim"].str.startswith("1.")]) == 2  # not 4: a copy or re-run is no replication
    text = (out / "overview.md").read_text()
    assert "../small (also ../again, ../rerun)" in text and "**1. deep > shallow**: 2 experiments" in text


@pytest.mark.parametrize("runs, words", [
    ([], "runs: expected a list"),
    ([{"folder": "../nowhere", "data": "x", "backbone": "y"}], "runs[0].folder: ../nowhere holds no trials.csv"),
    ([{"folder": "../small", "data": "x"}], "runs[0].backbone: expected a string"),
    ([{"folder": "../small", "data": "x", "backbone": "y", "tuned": "no"}], "runs[0].tuned"),
    ([{"folder": "../small", "data": "x", "backbone": "y", "size": 3}], "runs[0].size: unknown field"),
])
def test_a_bad_manifest_is_one_line_naming_the_field_and_exit_2(tmp_path, capsys, runs, words):
    plant(tmp_path / "small", EFFECTS, seeds=2)
    out = tmp_path / "scale"
    out.mkdir()
    code = main(["overview", str(manifest(out, runs))])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert not (out / "overview.csv").exists()
