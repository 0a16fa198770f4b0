"""The study report on planted results folders (trials.csv, epochs.csv,
study.json; no Ray): each claim's verdict follows the planted effect and its
CI, the comparisons are scipy's, and a one-seed design resolves nothing."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from masksep import report as R
from masksep.design import StudyDesign, read_design
from masksep.errors import UserError
from masksep.report import schema, study

HEADS = {  # name -> (head, depth, width, P, grouping, head MACs/s)
    "shallow": ("shallow", 1, 0, 2, "none", 2.0e6),
    "deep-d2": ("deep", 2, 128, 2, "none", 4.0e6),
    "deep-d3": ("deep", 3, 128, 2, "none", 6.0e6),
    "og-p4-learned": ("og", 1, 0, 4, "learned", 4.3e6),
    "og-p8-learned": ("og", 1, 0, 8, "learned", 8.3e6),
    "og-p4-oracle": ("og", 1, 0, 4, "oracle", 4.3e6),
}


def plant(folder, effects, seeds=4, noise=0.05, macs=None, pooled=(), rng_seed=0, val_effects=None,
          fixed=None, **study_fields):
    """A results folder whose test SI-SNRi is 5 dB + a seed's offset (shared by
    every variant: common random numbers) + the variant's planted effect +
    noise; deep heads' validation curves start low and catch up. Other
    effects for validation (``val_effects``; default: the test ones); ``fixed``: the
    fixed-grouping test effects of oracle og variants."""
    rng = np.random.default_rng(rng_seed)
    seed_offset = rng.normal(0, 0.8, seeds)  # large, and cancelled by pairing
    rows, curves = [], []
    for name, effect in effects.items():
        head, depth, width, p, grouping, head_macs = HEADS[name]
        head_macs = (macs or {}).get(name, head_macs)
        for seed in range(seeds):
            noise_here = rng.normal(0, noise)
            test = 5.0 + seed_offset[seed] + effect + noise_here
            valid = 6.0 + seed_offset[seed] + (val_effects or effects)[name] + noise_here
            trial_id = f"{name}-{seed}"
            extra = {}
            if fixed is not None and grouping == "oracle":
                extra = {"test_si_snri_fixed": test - effect + fixed[name],
                         "test_sdri_fixed": test - effect + fixed[name] + 0.7}
            rows.append({**extra,
                "trial_id": trial_id, "status": "completed", "variant": name, "head": head,
                "depth": depth, "width": width, "oversep": p, "grouping": grouping, "backbone": "tcn",
                "n_src": 2, "params": 3e5, "head_params": head_macs / 100, "macs_per_s": 2e7 + head_macs,
                "head_macs_per_s": head_macs, "best_val_si_snri": valid, "best_epoch": 6,
                "test_si_snr": test - 3, "test_si_snri": test, "test_sdri": test + 0.7, "epochs": 6,
                "train_steps": 600, "train_audio_s": 2400.0, "wall_s": 100.0 + depth, "seed": seed,
                "retries": 0, "error": ""})
            for epoch in range(1, 7):
                lag = 4.0 * (depth - 1) / epoch**2  # deep heads start slower
                val = test + 1 - 2 / epoch - lag
                curves.append({"trial_id": trial_id, "epoch": epoch, "val_si_snri": val})
    epochs = pd.DataFrame(curves)
    epochs["best_val_si_snri"] = epochs.groupby("trial_id")["val_si_snri"].cummax()
    block = {"reference": "shallow", "margin_db": 0.3, "variants": {n: {} for n in effects},
             "pooled": [{"name": n, "variants": v} for n, v in pooled], "repeats": seeds,
             **study_fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trials.csv").write_text(schema.csv_text(schema.trials_frame(rows)))
    (folder / "epochs.csv").write_text(schema.csv_text(epochs.reindex(columns=schema.EPOCH_COLUMNS)))
    (folder / "study.json").write_text(json.dumps({"sweep": {"name": "planted"}, "study": block}))
    return folder


def claims_of(folder, whole_report=False):
    """{claim number [reading]: verdict} and the claims table, from the folder's
    trials.csv and study.json (through the whole report, plots and all, when
    ``whole_report``)."""
    if whole_report:
        R.write_report(folder)
        df = pd.read_csv(folder / "study_claims.csv")
    else:
        block = json.loads((folder / "study.json").read_text())["study"]
        df = study.claims(R.load_trials(folder / "trials.csv"), read_design(block, "study.json"))
    df.index = keys(df)
    return df["verdict"].to_dict(), df


def keys(df):
    """A claims table's rows as "1", "2 learned", "3 oracle", "3 fixed"."""
    readings = df["reading"].fillna("").astype(str)
    return [f"{c.split('.')[0]} {r}".strip() for c, r in zip(df["claim"], readings, strict=True)]


EFFECTS = {"shallow": 0.0, "deep-d2": 1.0, "deep-d3": 2.0, "og-p4-learned": 1.5, "og-p8-learned": 2.0,
           "og-p4-oracle": 3.0}


def test_planted_effects_far_outside_their_ci_hold(tmp_path):
    folder = plant(tmp_path / "s", EFFECTS, pooled=[("deep, any depth", ["deep-d2", "deep-d3"])],
                   fixed={"og-p4-oracle": 0.5})
    verdicts, by = claims_of(folder, whole_report=True)
    assert verdicts == {"1": "holds", "2 learned": "holds", "3 learned": "holds",
                        "2 oracle": "holds", "3 oracle": "does not hold",
                        "2 fixed": "holds", "3 fixed": "does not hold"}
    assert by.loc["1", "comparison"] == "deep-d3 - shallow"  # the deep variant of depth 3 by default
    assert by.loc["2 learned", "comparison"] == "og-p8-learned - shallow"  # best on validation
    assert "best on validation of the default family" in by.loc["3 learned", "picked"]
    assert by.loc["3 learned", "comparison"] == "deep-d3 - og-p8-learned"
    assert by.loc["2 oracle", "comparison"] == "og-p4-oracle - shallow"
    assert by.loc["1", "estimate"] == pytest.approx(2.0, abs=0.15)
    # the fixed grouping is scored from its own column: 0.5 dB over shallow, not 3
    assert by.loc["2 fixed", "estimate"] == pytest.approx(0.5, abs=0.15)
    # deep (6.0M MACs/s) 1.5 dB ahead of the fixed-grouping og (4.3M): fails on cost alone
    three = by.loc["3 fixed"]
    assert three["non_inferior"] == "holds" and three["cost"] == "does not hold"
    assert "fails on cost" in three["note"] and "non-inferiority" not in three["note"].split(";")[0]
    assert three["sensitivity"] == "0.1 dB: does not hold; 0.3 dB: does not hold; 0.5 dB: does not hold"
    comp = pd.read_csv(folder / "study_comparisons.csv").set_index("variant")
    assert comp.loc["og-p4-oracle (fixed grouping)", "mean"] == pytest.approx(0.5, abs=0.15)
    assert "og-p4-oracle (oracle-trained, grouping fixed on validation)" in (
        folder / "summary.md").read_text()

    text = (folder / "summary.md").read_text()
    assert text.startswith("# Study report: planted")
    for section in ("## Budget", "## Cells", "## Paired differences from `shallow`", "## Claims",
                    "## What this design resolves", "## ASHA check"):
        assert section in text
    assert "deep, any depth (pooled: deep-d2 + deep-d3; per-seed mean)" in text
    assert "| deep, any depth (pooled) |" in text
    for name in ("paired_differences.png", "si_snri_vs_oversep.png", "si_snri_vs_head_macs.png",
                 "depth_vs_oversep.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"


def test_comparisons_and_bonferroni_are_scipys_on_the_trials_csv(tmp_path):
    folder = plant(tmp_path / "s", EFFECTS, seeds=6, noise=0.3,
                   pooled=[("deep, any depth", ["deep-d2", "deep-d3"])])
    R.write_report(folder)
    trials = pd.read_csv(folder / "trials.csv")
    table = trials.pivot(index="seed", columns="variant", values="test_si_snri")
    comp = pd.read_csv(folder / "study_comparisons.csv").set_index("variant")
    for name in ("deep-d3", "og-p4-learned"):
        t = scipy.stats.ttest_rel(table[name], table["shallow"])
        ci = t.confidence_interval(0.95)
        assert comp.loc[name, "p_t"] == pytest.approx(t.pvalue)
        assert (comp.loc[name, "ci_low"], comp.loc[name, "ci_high"]) == pytest.approx((ci.low, ci.high))
        assert comp.loc[name, "p_wilcoxon"] == pytest.approx(
            scipy.stats.wilcoxon(table[name], table["shallow"]).pvalue)
    pooled = table[["deep-d2", "deep-d3"]].mean(axis=1)
    assert comp.loc["deep, any depth", "mean"] == pytest.approx((pooled - table["shallow"]).mean())

    claims = pd.read_csv(folder / "study_claims.csv")
    claims.index = keys(claims)
    two = claims.loc["2 learned"]
    ci = scipy.stats.ttest_rel(table["og-p8-learned"], table["shallow"]).confidence_interval(1 - 0.05 / 2)
    assert two["ci_level"] == pytest.approx(0.975)  # picked from two learned og variants with P > C
    assert (two["ci_low"], two["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert "Bonferroni" in two["picked"]

    cells = pd.read_csv(folder / "study_cells.csv").set_index("variant")
    x = table["deep-d3"]
    low, high = scipy.stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert (cells.loc["deep-d3", "ci_low"], cells.loc["deep-d3", "ci_high"]) == pytest.approx((low, high))

    resolved = study.resolution(pd.read_csv(folder / "study_comparisons.csv"), StudyDesign(reference="shallow", repeats=6))
    diffs = [table[n] - table["shallow"] for n in EFFECTS if n != "shallow"]
    sd = math.sqrt(sum(d.var(ddof=1) * (len(d) - 1) for d in diffs) / sum(len(d) - 1 for d in diffs))
    assert resolved["sd"] == pytest.approx(sd)
    assert resolved["half_width"] == pytest.approx(scipy.stats.t.ppf(0.975, 5) * sd / math.sqrt(6))
    text = (folder / "summary.md").read_text()
    assert f"95% CI half-width of {resolved['half_width']:.2f} dB" in text
    assert f"needs n = {resolved['seeds_needed']} seeds" in text


def test_planted_opposite_effects_do_not_hold(tmp_path):
    folder = plant(tmp_path / "s", {"shallow": 0.0, "deep-d3": -2.0, "og-p4-learned": -1.5,
                                    "og-p8-learned": -1.0})
    verdicts, _ = claims_of(folder)
    assert verdicts == {"1": "does not hold", "2 learned": "does not hold",
                        "3 learned": "does not hold"}


def test_a_declared_comparator_is_used_even_when_another_og_scores_higher_on_test(tmp_path):
    effects = {"shallow": 0.0, "deep-d3": 1.0, "og-p4-learned": 2.0, "og-p8-learned": 1.0}
    verdicts, by = claims_of(plant(tmp_path / "s", effects, claims={"og": "og-p8-learned"}))
    assert by.loc["3 learned", "comparison"] == "deep-d3 - og-p8-learned"
    assert by.loc["3 learned", "picked"] == "og: named in the spec"
    assert verdicts["3 learned"] == "holds"  # level with P = 8 and cheaper (6.0M < 8.3M)
    # no family declared: claim 2 tests the named og too, with no adjustment
    assert by.loc["2 learned", "comparison"] == "og-p8-learned - shallow"
    assert by.loc["2 learned", "ci_level"] == pytest.approx(0.95)


def test_the_best_of_a_family_is_picked_on_validation_not_on_test(tmp_path):
    test = {"shallow": 0.0, "deep-d3": 1.0, "og-p4-learned": 2.0, "og-p8-learned": 0.5}
    val = {**test, "og-p4-learned": 0.5, "og-p8-learned": 2.0}  # validation ranks them the other way
    verdicts, by = claims_of(plant(tmp_path / "s", test, val_effects=val,
                                   claims={"og_family": ["og-p4-learned", "og-p8-learned"]}))
    assert by.loc["2 learned", "comparison"] == "og-p8-learned - shallow"  # not og-p4, best on test
    assert by.loc["3 learned", "comparison"] == "deep-d3 - og-p8-learned"
    assert "family declared in the spec" in by.loc["2 learned", "picked"]
    assert by.loc["2 learned", "ci_level"] == pytest.approx(0.975)  # Bonferroni over the family of 2


def test_claim_3_is_non_inferiority_and_cost_in_separate_columns(tmp_path):
    same = {"shallow": 0.0, "deep-d3": 1.0, "og-p4-learned": 1.0}
    cheaper = {"deep-d3": 3.0e6}  # below og-p4-learned's 4.3M
    verdicts, by = claims_of(plant(tmp_path / "cheaper", same, macs=cheaper))
    assert verdicts["3 learned"] == "holds"
    assert by.loc["3 learned", "non_inferior"] == by.loc["3 learned", "cost"] == "holds"
    assert by.loc["3 learned", "deep_head_params"] == pytest.approx(3.0e4)
    # the same qualities, but the deep head costs more than the og head (6.0M > 4.3M)
    verdicts, by = claims_of(plant(tmp_path / "costly", same))
    three = by.loc["3 learned"]
    assert verdicts["3 learned"] == "does not hold" and three["non_inferior"] == "holds"
    assert three["cost"] == "does not hold" and three["note"].startswith("fails on cost")
    # the deep head 0.3 dB behind with noise as large as the margin: neither side is shown
    verdicts, by = claims_of(plant(tmp_path / "close", {**same, "deep-d3": 0.7}, noise=0.3,
                                   macs=cheaper))
    assert verdicts["3 learned"] == "not resolved at this n"
    # 1 dB behind with little noise: the CI lies below -0.3 dB, though cheaper
    verdicts, by = claims_of(plant(tmp_path / "behind", {**same, "deep-d3": 0.0}, macs=cheaper))
    assert verdicts["3 learned"] == "does not hold"
    assert by.loc["3 learned", "note"].startswith("fails on non-inferiority;")
    # 0.4 dB behind: within a 0.5 dB margin, outside 0.1 and 0.3
    verdicts, by = claims_of(plant(tmp_path / "margins", {**same, "deep-d3": 0.6}, macs=cheaper,
                                   noise=0.01))
    assert by.loc["3 learned", "sensitivity"] == (
        "0.1 dB: does not hold; 0.3 dB: does not hold; 0.5 dB: holds")


def test_one_seed_resolves_nothing(tmp_path):
    folder = plant(tmp_path / "s", EFFECTS, seeds=1)
    verdicts, df = claims_of(folder, whole_report=True)
    costly = df["cost"] == "does not hold"  # a deep head dearer than the og: no n changes that
    assert set(df.loc[~costly, "verdict"]) == {"not resolved at this n"}
    assert set(df.loc[costly, "verdict"]) == {"does not hold"}
    assert (df.loc[costly, "non_inferior"] == "not resolved at this n").all()
    assert df["ci_low"].isna().all() and (df["n"] == 1).all()
    text = (folder / "summary.md").read_text()
    assert "Not measurable: no comparison has two or more paired seeds" in text
    assert "no CI (n < 2)" in text


def test_claims_need_their_variants(tmp_path):
    verdicts, df = claims_of(plant(tmp_path / "s", {"shallow": 0.0, "deep-d2": 2.0, "og-p4-oracle": 3.0}))
    # deep-d2 is the deep head by the default rule (depth 3 first, else the first of depth >= 2)
    assert verdicts["1"] == "holds" and df.loc["1", "comparison"] == "deep-d2 - shallow"
    assert "2 learned" not in verdicts  # no learned og in the design: no learned reading
    assert "3 fixed" not in verdicts  # the fixed grouping was not measured here
    verdicts, df = claims_of(plant(tmp_path / "none", {"shallow": 0.0, "og-p4-oracle": 3.0}))
    assert verdicts["1"] == "not resolved at this n" and "no deep variant" in df.loc["1", "picked"]


def test_asha_check_flags_a_head_kind_that_catches_up(tmp_path):
    folder = plant(tmp_path / "s", EFFECTS)
    check = R.asha_rank_check(folder)
    assert sorted(check["grace_period"].unique()) == [1, 2, 3, 4, 5]
    deep = check[check["head"] == "deep"].set_index("grace_period")
    assert deep.loc[1, "catches_up"] and deep.loc[1, "stopped_share"] == 1.0
    assert not deep.loc[5, "catches_up"]  # by epoch 5 the lag (4 / 25 dB) no longer reorders kinds
    # Spearman's rho is scipy's over the rung metric and the test SI-SNRi
    trials = R.load_trials(folder / "trials.csv")
    epochs = pd.read_csv(folder / "epochs.csv", dtype={"trial_id": str})
    at = epochs[epochs["epoch"] == 2].merge(trials, on="trial_id", suffixes=("", "_trial"))
    og = at[at["head"] == "og"]
    rho = scipy.stats.spearmanr(og["best_val_si_snri"], og["test_si_snri"]).statistic
    assert check.set_index(["grace_period", "head"]).loc[(2, "og"), "spearman_rho"] == pytest.approx(rho)
    assert check[check["head"] == "all"]["rank_at_g"].isna().all()
    R.write_report(folder)
    text = (folder / "summary.md").read_text()
    assert "Behind at the rung but ahead at the end: deep (g = 1" in text
    assert pd.read_csv(folder / "asha_check.csv").shape[0] == len(check)
    with pytest.raises(UserError, match="needs its epochs"):
        R.asha_rank_check(trials)


def test_a_study_sweep_folder_writes_study_json_and_rebuilds_from_it(tmp_path):
    out = tmp_path / "sweep"
    experiment = out / "ray" / "st"
    planted = plant(tmp_path / "planted", {"shallow": 0.0, "deep-d3": 1.0, "og-p4-learned": 0.8}, seeds=2)
    block = json.loads((planted / "study.json").read_text())["study"]
    for r in schema.records(R.load_trials(planted / "trials.csv")):
        folder = experiment / f"trial_{r['trial_id']}"
        folder.mkdir(parents=True)
        (folder / "searched.json").write_text(json.dumps({"variant": r["variant"]}))
        summary = {k: r[k] for k in [*schema.HEAD_COLUMNS, *schema.METRIC_COLUMNS]}
        (folder / "summary.json").write_text(json.dumps(summary))
        # Values with more digits than the CSVs keep: the fresh report must compute
        # from what the CSVs hold, or the rebuild below would differ in the last digits.
        curve = [4.0 + epoch / 3 + r["test_si_snri"] / 7 for epoch in range(1, 5)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(
            {"epoch": e, "val_si_snri": v, "best_val_si_snri": max(curve[:e]), "steps": 50})
            + "\n" for e, v in enumerate(curve, 1)))
    state = {"name": "st", "storage": str(out / "ray"), "search": "grid", "scheduler": "none",
             "num_trials": 6, "max_concurrent_trials": 2, "status": "finished", "pid": 1,
             "driver_wall_s": 400.0, "study": block}
    (out / "sweep.json").write_text(json.dumps(state))
    first = R.write_report(out)
    assert set(first["claims"]) == {"1. deep > shallow", "2. OG (P > C) > shallow [learned]",
                                    "3. deep is an efficient OG [learned]"}
    saved = json.loads((out / "study.json").read_text())
    assert saved["study"] == block and saved["sweep"]["name"] == "st" and "storage" not in saved["sweep"]
    assert sorted(R.load_trials(out / "trials.csv")["variant"].unique()) == [
        "deep-d3", "og-p4-learned", "shallow"]
    written = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "sweep.json"}
    assert {"summary.md", "asha_check.csv", "epochs.csv", "study_claims.csv"} <= set(written)

    (out / "sweep.json").unlink()  # a committed results folder: no sweep.json, no Ray experiment
    for path in sorted(experiment.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    assert R.write_report(out) == first
    rebuilt = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert rebuilt == written  # byte for byte, every table and plot


def test_a_bad_study_block_is_one_line_and_writes_nothing(tmp_path):
    folder = plant(tmp_path / "s", {"shallow": 0.0, "deep-d3": 1.0}, seeds=2)
    data = json.loads((folder / "study.json").read_text())
    data["study"]["reference"] = "shalow"
    (folder / "study.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"study.json: study.reference: 'shalow' is not one of"):
        R.write_report(folder)
    data["study"].update(reference="shallow", margin_db=-1)
    (folder / "study.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="study.margin_db"):
        R.write_report(folder)
    assert not (folder / "summary.md").exists() and not (folder / "study_claims.csv").exists()


def test_the_analysis_section_joins_when_masksep_analyze_provides_it(tmp_path):
    folder = plant(tmp_path / "s", {"shallow": 0.0, "deep-d3": 1.0}, seeds=2)
    (folder / "analysis").mkdir()
    (folder / "analysis" / "analysis.json").write_text("{}")
    try:
        from masksep.analyze import study_analysis_section
    except ImportError:
        study_analysis_section = None
    R.write_report(folder)  # with or without the module, the report is written
    text = (folder / "summary.md").read_text()
    if study_analysis_section is not None:
        section = study_analysis_section({})
        first = (section.splitlines() if isinstance(section, str) else list(section))[0]
        assert first in text
    (folder / "analysis" / "analysis.json").write_text("{not json")
    if study_analysis_section is not None:
        with pytest.raises(UserError, match="analysis.json: unreadable"):
            R.write_report(folder)


def plant_milestones(folder, at_steps):
    """milestones.csv for a planted folder: at each step, every trial's test score
    is its end-of-run score + ``at_steps[step][variant]`` (dB)."""
    trials = pd.read_csv(folder / "trials.csv", dtype={"trial_id": str})
    rows = []
    for steps, shift in at_steps.items():
        for _, t in trials.iterrows():
            test = t["test_si_snri"] + shift.get(t["variant"], 0.0)
            rows.append({"trial_id": t["trial_id"], "steps": steps, "epoch": steps // 100,
                         "best_epoch": steps // 100, "best_val_si_snri": test + 1,
                         "test_si_snr": test - 3, "test_si_snri": test, "test_sdri": test + 0.7})
    (folder / schema.MILESTONES_FILE).write_text(schema.csv_text(pd.DataFrame(rows)))


def test_claims_by_budget_follow_the_scores_at_each_milestone(tmp_path):
    effects = {"shallow": 0.0, "deep-d3": 2.0, "og-p4-learned": 1.5, "og-p8-learned": 2.0}
    folder = plant(tmp_path / "s", effects, seeds=5, milestones=[200, 600])
    # at 200 steps the deep head is 2 dB behind the shallow one (its planted +2 minus 4)
    plant_milestones(folder, {200: {"deep-d3": -4.0}, 600: {}})
    summary = R.write_report(folder)
    by = pd.read_csv(folder / "claims_by_budget.csv")
    assert list(by["steps"].unique()) == [200, 600]
    one = by[by["claim"].str.startswith("1.")].set_index("steps")
    assert one.loc[200, "verdict"] == "does not hold" and one.loc[600, "verdict"] == "holds"
    assert one.loc[200, "estimate"] == pytest.approx(-2.0, abs=0.15)
    assert one.loc[200, "n"] == 5
    # the last milestone is the end of the run: the same claims as study_claims.csv
    end = pd.read_csv(folder / "study_claims.csv")
    assert list(by[by["steps"] == 600]["verdict"]) == list(end["verdict"])
    assert summary["claims_by_budget"][200]["1. deep > shallow"] == "does not hold"
    assert (folder / "claims_by_budget.png").read_bytes()[:4] == b"\x89PNG"
    text = (folder / "summary.md").read_text()
    assert "## Claims by training budget" in text and "### Was validation still improving?" in text

    trend = pd.read_csv(folder / "convergence.csv").set_index(["steps", "variant"])
    # planted curves rise as -2/epoch: still improving over epochs 4-6 (600 steps);
    # at 200 steps there are only two epochs, too few for a slope
    assert trend.loc[(600, "shallow"), "trend"] == "still improving"
    assert trend.loc[(600, "shallow"), "slope_db_per_kstep"] > 0
    assert trend.loc[(200, "shallow"), "trend"] == "no trend resolved"
    assert trend.loc[(200, "shallow"), "n"] == 0


def test_a_trial_missing_a_milestone_drops_out_of_that_budgets_pairs(tmp_path):
    effects = {"shallow": 0.0, "deep-d3": 2.0, "og-p4-learned": 1.5, "og-p8-learned": 2.0}
    folder = plant(tmp_path / "s", effects, seeds=4, milestones=[200, 600])
    plant_milestones(folder, {200: {}, 600: {}})
    marks = pd.read_csv(folder / schema.MILESTONES_FILE, dtype={"trial_id": str})
    marks = marks[~((marks["trial_id"] == "deep-d3-0") & (marks["steps"] == 200))]
    (folder / schema.MILESTONES_FILE).write_text(schema.csv_text(marks))
    R.write_report(folder)
    by = pd.read_csv(folder / "claims_by_budget.csv")
    one = by[by["claim"].str.startswith("1.")].set_index("steps")
    assert one.loc[200, "n"] == 3 and one.loc[600, "n"] == 4


@pytest.mark.parametrize("value", [[600, 200], [0], "200", [True]])
def test_a_study_json_with_bad_milestones_names_the_field(tmp_path, value):
    folder = plant(tmp_path / "s", {"shallow": 0.0, "deep-d3": 1.0}, seeds=2, milestones=value)
    with pytest.raises(UserError, match="study.milestones"):
        R.write_report(folder)


def test_the_report_says_when_a_head_costs_more_than_the_rest_of_the_model(tmp_path):
    # the planted model is 20 M MACs/s besides its head: a 25 M head outweighs it
    folder = plant(tmp_path / "s", {"shallow": 0.0, "deep-d3": 0.5}, macs={"deep-d3": 2.5e7})
    R.write_report(folder)
    text = (folder / "summary.md").read_text()
    assert "The head costs more MACs than the rest of the model" in text and "`deep-d3`" in text
    assert "| 56% |" in text  # 25 / (20 + 25)
    lean = plant(tmp_path / "lean", {"shallow": 0.0, "deep-d3": 0.5})
    R.write_report(lean)
    assert "costs more MACs than the rest" not in (lean / "summary.md").read_text()
