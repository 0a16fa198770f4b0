"""`masksep analyze`: the three views on a hand-built deep head whose hidden
units each serve one source, the same views on heads at initialisation, the
files it writes (and does not write on bad input), sweep folders, re-rendering
from analysis.json, and the study section against scipy.stats."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from masksep import config as C
from masksep import train
from masksep.analyze import study_analysis_section, study_analysis_table
from masksep.analyze import views as V
from masksep.analyze.run import FORMAT, _Datasets
from masksep.cli import main

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

UNITS = 8
# Short test mixtures, a handful of them: each view needs a few frames, not a test set.
DATA = ["data.test_items=8", "data.eval_seconds=0.5"]
DEEP = ["head.kind=deep", "head.depth=2", f"head.width={UNITS}"]
PLANTED = DEEP + ["head.hidden_act=relu", "head.mask_act=relu"]


def tiny_config(*overrides):
    return C.load_config(None, tiny.CHECKPOINT_SETS + DATA + list(overrides))


def items_of(cfg, n=8):
    _, items, _, _ = _Datasets(None, n).get(cfg)
    return items


def planted_model(cfg):
    """A deep head (relu hidden units, relu masks) whose unit u feeds source u mod 2 only:
    non-negative output weights on that source's N rows, zeros on the other's. Each
    unit's input bias is set at its median pre-activation, so it is off half the time
    (the head is then no shallow function of its features, but an og head exactly)."""
    torch.manual_seed(0)
    model = train.initial_model(cfg).eval()
    head = model.head
    n_bins = head.n_bins
    source = torch.arange(UNITS) % 2
    gen = torch.Generator().manual_seed(1)
    weights = (torch.rand(2, n_bins, UNITS, generator=gen) + 0.1)
    weights *= source.view(1, 1, UNITS) == torch.arange(2).view(2, 1, 1)
    with torch.no_grad():
        head.trunk[-1].weight.copy_(weights.reshape(2 * n_bins, UNITS, 1))
        head.trunk[-1].bias.zero_()
        hidden = V.probe(model, items_of(cfg, 2))[0].hidden
        pre = head.trunk[0](hidden).transpose(0, 1).reshape(UNITS, -1)
        head.trunk[0].bias -= pre.median(dim=1).values
    return model, source.tolist()


def save(path, cfg, model):
    torch.save({"format": train.CHECKPOINT_FORMAT, "config": C.to_dict(cfg),
                "model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def planted():
    cfg = tiny_config(*PLANTED)
    model, source = planted_model(cfg)
    items = items_of(cfg)
    return cfg, model, source, V.probe(model, items[:4]), V.probe(model, items[4:])


# --------------------------------------------------------------------------- the planted head


def test_weight_view_finds_the_planted_grouping(planted):
    _, model, source, _, _ = planted
    settings = V.Settings()
    view = V.weight_view_deep(model.head, settings)
    assert view["dominant_source"] == source
    assert all(view["shares"][u][source[u]] == 1.0 for u in range(UNITS))
    assert view["mean_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert view["fraction_dominant"] == 1.0
    assert view["units_per_source"] == [UNITS // 2, UNITS // 2]
    # Not one of the label-permuted copies is as grouped: the smallest p the test can give.
    assert view["p_value"] == pytest.approx(1 / (settings.permutations + 1))
    assert view["fraction_dominant_chance"] < 0.5


def test_ablation_removes_the_planted_source_and_only_it(planted):
    _, model, source, fit, held = planted
    view = V.ablation_view(model, fit + held, source, V.Settings(), og_outputs=False)
    delta = np.array(view["delta_db"])
    assert view["group_sizes"] == [UNITS // 2, UNITS // 2]
    # Silencing source c's units leaves output c with a zero mask ...
    assert delta[0, 0] < -20 and delta[1, 1] < -20
    # ... and the other output exactly as it was (its mask never reads those units).
    assert abs(delta[0, 1]) < 1e-4 and abs(delta[1, 0]) < 1e-4
    assert view["selectivity_db"] > 20
    # Random sets of as many units hit both sources.
    assert view["random_selectivity_db"] < view["selectivity_db"] / 2


def test_function_view_fits_the_planted_head_almost_exactly(planted):
    _, model, _, fit, held = planted
    view = V.function_view(model, fit, held, UNITS,
                           V.Settings(fit_steps=400, fit_frames=256, fit_lr=1e-2))
    # An og head of P = width reproduces it on held-out items; a shallow head cannot.
    assert view["og_rel_mse"] < 0.03, view
    assert view["shallow_rel_mse"] > 3 * view["og_rel_mse"], view
    assert view["og_fit_best_mse"] < view["og_fit_start_mse"]
    assert abs(view["og_gap_db"]) < 1.0, view


def test_the_og_fit_starts_at_the_shallow_fit(planted):
    # With no steps the og head is the shallow fit plus nearly silent outputs.
    _, model, _, fit, held = planted
    view = V.function_view(model, fit, held, UNITS, V.Settings(fit_steps=0))
    assert view["og_rel_mse"] == pytest.approx(view["shallow_rel_mse"], rel=0.05)


# --------------------------------------------------------------------------- heads at initialisation


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_head_at_initialisation_groups_no_more_than_chance(seed):
    cfg = tiny_config("head.kind=deep", "head.depth=3", "head.width=64", f"seed={seed}")
    model = train.initial_model(cfg).eval()
    view = V.weight_view_deep(model.head, V.Settings())
    assert view["p_value"] > 0.01, view["p_value"]
    assert abs(view["fraction_dominant"] - view["fraction_dominant_chance"]) < 0.1
    assert abs(view["mean_entropy"] - view["mean_entropy_chance"]) < 0.02
    assert max(view["units_per_source"]) < 64 * 0.75


# --------------------------------------------------------------------------- the command


WEIGHT_FIELDS = {"units", "mean_entropy", "median_entropy", "fraction_dominant", "units_per_source",
                 "dominant_source", "dominant_share_hist"}
CHANCE_FIELDS = {"mean_entropy_chance", "fraction_dominant_chance", "p_value", "dead_units"}
ABLATION_FIELDS = {"units", "group_sizes", "items", "base_si_snr_db", "delta_db", "random_delta_db",
                   "selectivity_db", "random_selectivity_db"}
FUNCTION_FIELDS = {"og_mse", "og_rel_mse", "shallow_mse", "shallow_rel_mse", "og_fit_start_mse",
                   "og_fit_best_mse", "head_si_snri", "og_si_snri", "shallow_si_snri", "og_gap_db",
                   "mask_variance"}
ASSIGNMENT_FIELDS = {"pair_agreement", "pair_agreement_chance", "p_value", "mean_group_sizes"}


def numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    cfg = tiny_config(*PLANTED)
    model, _ = planted_model(cfg)
    paths = {"planted": save(root / "planted.pt", cfg, model)}
    for name, sets in {"og-learned": ["head.kind=og", "head.oversep=4"],
                       "og-oracle": ["head.kind=og", "head.oversep=4", "head.grouping=oracle"],
                       "shallow": ["head.kind=shallow"]}.items():
        tiny.save_checkpoint(root / f"{name}.pt", *DATA, *sets)
        paths[name] = root / f"{name}.pt"
    return paths


def test_analyze_writes_every_view_present_and_finite(checkpoints, tmp_path, capsys):
    out = tmp_path / "analysis"
    paths = [checkpoints[k] for k in ("planted", "og-learned", "og-oracle")]
    assert main(["analyze", *map(str, paths), "--out", str(out), "--threads", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["analysed"] == 3
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["format"] == FORMAT
    assert analysis["settings"]["share_threshold"] == V.Settings().share_threshold
    names = [e["name"] for e in analysis["entries"]]
    assert [n.rsplit("-", 1)[-1] for n in names[:1]] == ["planted"] and len(set(names)) == 3
    deep, learned, oracle = (analysis["entries"][i] for i in range(3))
    for side in ("trained", "init"):
        assert WEIGHT_FIELDS | CHANCE_FIELDS <= set(deep["weight"][side])
        assert ABLATION_FIELDS <= set(deep["ablation"][side])
        assert FUNCTION_FIELDS <= set(deep["function"][side])
        assert WEIGHT_FIELDS <= set(learned["weight"][side])
        assert ABLATION_FIELDS <= set(learned["ablation"][side])
        assert ASSIGNMENT_FIELDS <= set(oracle["assignment"][side])
    assert not learned["function"]["applicable"] and learned["function"]["reason"]
    assert not oracle["weight"]["applicable"] and "oracle" in oracle["weight"]["reason"]
    assert not oracle["ablation"]["applicable"]
    for entry in analysis["entries"]:
        values = list(numbers({k: entry[k] for k in ("weight", "ablation", "function", "assignment")
                               if k in entry}))
        assert values and all(math.isfinite(v) for v in values), entry["name"]
        assert (out / entry["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The planted head is found grouped; its initialisation is not.
    assert deep["weight"]["trained"]["mean_entropy"] < 1e-6
    assert deep["weight"]["init"]["p_value"] > 0.01
    summary = (out / "summary.md").read_text()
    assert "follows the paper's argument" in summary and "masksep's own" in summary
    assert str(V.Settings().share_threshold) in summary


def test_bad_input_is_one_line_and_writes_nothing(checkpoints, tmp_path, capsys):
    out = tmp_path / "analysis"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    cases = [
        ([str(checkpoints["shallow"])], "shallow"),
        # A good checkpoint first: nothing of it is written either.
        ([str(checkpoints["og-learned"]), str(checkpoints["shallow"])], "shallow"),
        ([str(tmp_path / "missing.pt")], "not found"),
        ([str(corrupt)], "not a readable checkpoint"),
    ]
    for paths, words in cases:
        assert main(["analyze", *paths, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
        assert not out.exists()
    assert main(["analyze", str(checkpoints["planted"])]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["analyze", str(checkpoints["planted"]), "--out", str(out), "--items", "1"]) == 2
    assert "--items" in capsys.readouterr().err
    assert not out.exists()


def test_a_corpus_folder_gives_the_test_items(checkpoints, tmp_path, capsys):
    from masksep.data.export import synth

    root = tmp_path / "Libri2Mix" / "wav8k" / "min"
    synth(root, "librimix", "test", 4, seconds=0.5)
    out = tmp_path / "analysis"
    args = ["analyze", str(checkpoints["og-learned"]), "--out", str(out), "--threads", "1"]
    assert main([*args, "--data", str(root)]) == 0
    entry = json.loads((out / "analysis.json").read_text())["entries"][0]
    assert entry["data"] == str(root) and entry["items"] == 4
    capsys.readouterr()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("no audio")
    assert main([*args[:-4], "--out", str(tmp_path / "other"), "--data", str(tmp_path / "notes")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "notes: not a data folder" in err
    assert not (tmp_path / "other").exists()


# --------------------------------------------------------------------------- sweep folders


def test_a_sweep_is_analysed_over_its_deep_and_og_trials_and_renders_again(checkpoints, tmp_path,
                                                                             capsys):
    sweep = tiny.fake_sweep(tmp_path / "sweep", {
        "a": (checkpoints["planted"], {"variant": "deep-d2"}),
        "b": (checkpoints["shallow"], {"variant": "shallow"}),
    })
    assert main(["analyze", str(sweep), "--threads", "1"]) == 0
    capsys.readouterr()
    analysis = json.loads((sweep / "analysis" / "analysis.json").read_text())
    assert [e["name"] for e in analysis["entries"]] == ["a"]
    assert analysis["entries"][0]["variant"] == "deep-d2"
    assert analysis["entries"][0]["test_si_snri"] == 1.5
    assert analysis["left_out"] == [{"name": "b", "reason": analysis["left_out"][0]["reason"]}]
    assert "shallow" in analysis["left_out"][0]["reason"]
    # Paths relative to the analysis folder: the same wherever the folder is copied.
    assert analysis["source"] == ".."
    assert analysis["entries"][0]["checkpoint"] == "../ray/study/trial_a/checkpoints/best.pt"
    assert str(tmp_path) not in (sweep / "analysis" / "analysis.json").read_text()
    assert "The sweep folder (`..`): 1 checkpoint analysed" in (sweep / "analysis" / "summary.md").read_text()

    # A committed results folder: no sweep state, no checkpoints, only analysis/.
    results = tmp_path / "results"
    shutil.copytree(sweep / "analysis", results / "analysis")
    (results / "analysis" / "summary.md").unlink()
    assert main(["analyze", str(results)]) == 0
    assert json.loads(capsys.readouterr().out)["rerendered"] is True
    text = (results / "analysis" / "summary.md").read_text()
    assert "Rendered again from analysis.json" in text and "| a |" in text

    (results / "analysis" / "analysis.json").write_text("{broken")
    assert main(["analyze", str(results)]) == 2
    assert "analysis.json" in capsys.readouterr().err


def test_a_sweep_without_deep_or_og_trials_is_refused(checkpoints, tmp_path, capsys):
    sweep = tiny.fake_sweep(tmp_path / "sweep", {"a": (checkpoints["shallow"], {}),
                                            "b": (checkpoints["shallow"], {})})
    assert main(["analyze", str(sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no deep" in err and "2 shallow" in err
    assert not (sweep / "analysis").exists()
    assert main(["analyze", str(tmp_path / "nothing-here")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "sweep.json" in err and "analysis.json" in err


def test_a_per_source_deep_head_is_refused_naming_head_layout_and_its_og_is_analysed(
        checkpoints, tmp_path, capsys):
    per_source = tmp_path / "per-source.pt"
    tiny.save_checkpoint(per_source, *DATA, *DEEP, "head.layout=per_source")
    og = tmp_path / "og-per-source.pt"
    tiny.save_checkpoint(og, *DATA, "head.kind=og", "head.oversep=4", "head.depth=2",
                         f"head.width={UNITS}", "head.layout=per_source")
    out = tmp_path / "analysis"
    assert main(["analyze", str(per_source), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "head.layout per_source" in err, err
    assert not out.exists()

    # In a sweep the per-source deep trial is left out with that reason; an og head
    # of either layout is read through its grouping, which the layout does not change.
    sweep = tiny.fake_sweep(tmp_path / "sweep", {"a": (checkpoints["planted"], {"variant": "deep-d2"}),
                                            "b": (per_source, {"variant": "deep-d2-per_source"}),
                                            "c": (og, {})})
    assert main(["analyze", str(sweep), "--threads", "1"]) == 0
    capsys.readouterr()
    analysis = json.loads((sweep / "analysis" / "analysis.json").read_text())
    assert [e["name"] for e in analysis["entries"]] == ["a", "c"]
    assert [(x["name"], "head.layout per_source" in x["reason"]) for x in analysis["left_out"]] == [
        ("b", True)]
    entry = analysis["entries"][1]
    assert entry["kind"] == "og-learned" and entry["head"]["layout"] == "per_source"
    assert entry["weight"]["applicable"] and entry["ablation"]["applicable"]
    assert analysis["entries"][0]["head"]["layout"] == "joint"
    from masksep.analyze.study import variant_of
    assert variant_of(entry) == "og-P4-learned-per_source"
    assert variant_of({"head": {"head": "deep", "depth": 3, "width": 8}}) == "deep-d3-w8"  # older entry

    only = tiny.fake_sweep(tmp_path / "only", {"b": (per_source, {})})
    assert main(["analyze", str(only)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 deep per_source" in err, err


# --------------------------------------------------------------------------- the study section


def planted_analysis():
    """Two variants x 5 seeds with known numbers, and one variant with one seed."""
    rng = np.random.default_rng(0)
    entries = []
    for variant, shift in (("deep-d2", -0.3), ("deep-d3", 0.0)):
        for seed in range(5):
            init = {"mean_entropy": 0.99 + 0.001 * rng.standard_normal()}
            trained = {"mean_entropy": init["mean_entropy"] + shift + 0.02 * rng.standard_normal()}
            entries.append({
                "variant": variant, "seed": seed, "head": {"head": "deep", "depth": 2, "width": 8},
                "weight": {"applicable": True, "trained": trained, "init": init},
                "ablation": {"applicable": True,
                             "trained": {"selectivity_db": 2.0 + rng.standard_normal()},
                             "init": {"selectivity_db": 0.1 * rng.standard_normal()}},
                "function": {"applicable": True, "trained": {"og_rel_mse": 0.2 + 0.01 * seed},
                             "init": {"og_rel_mse": 0.05 + 0.02 * rng.standard_normal()}},
            })
    entries.append({"variant": "og-4", "seed": 0, "head": {"head": "og", "depth": 1, "oversep": 4},
                    "weight": {"applicable": True, "trained": {"mean_entropy": 0.3},
                               "init": {"mean_entropy": 0.47}},
                    "ablation": {"applicable": True, "trained": {"selectivity_db": 9.0},
                                 "init": {"selectivity_db": 0.2}},
                    "function": {"applicable": False, "reason": "og"}})
    return {"entries": entries}


def test_the_study_section_agrees_with_scipy_stats():
    analysis = planted_analysis()
    table = study_analysis_table(analysis)
    for variant in ("deep-d2", "deep-d3"):
        entries = [e for e in analysis["entries"] if e["variant"] == variant]
        for metric, view, key in (("share_entropy", "weight", "mean_entropy"),
                                  ("ablation_selectivity_db", "ablation", "selectivity_db"),
                                  ("function_gap", "function", "og_rel_mse")):
            a = np.array([e[view]["trained"][key] for e in entries])
            b = np.array([e[view]["init"][key] for e in entries])
            row = table[(table.variant == variant) & (table.metric == metric)].iloc[0]
            ci = scipy.stats.ttest_1samp(a, 0).confidence_interval(0.95)
            assert row.n == 5 and row["mean"] == pytest.approx(a.mean())
            assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high))
            test = scipy.stats.ttest_rel(a, b)
            diff_ci = test.confidence_interval(0.95)
            assert row.p_t == pytest.approx(test.pvalue)
            assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx((diff_ci.low, diff_ci.high))
            assert row.p_wilcoxon == pytest.approx(scipy.stats.wilcoxon(a, b).pvalue)
            expected = ("lower" if diff_ci.high < 0 else "higher" if diff_ci.low > 0
                        else "not resolved at this n")
            assert row.vs_init == expected
    d2 = table[(table.variant == "deep-d2") & (table.metric == "share_entropy")].iloc[0]
    assert d2.vs_init == "lower"  # planted 0.3 below its initialisation, noise 0.02
    one = table[table.variant == "og-4"]
    assert set(one.metric) == {"share_entropy", "ablation_selectivity_db"}  # no function view
    assert one.n.tolist() == [1, 1] and one.ci_low.isna().all() and one.p_t.isna().all()
    assert (one.vs_init == "not resolved at this n").all()
    text = study_analysis_section(analysis)
    assert text.startswith("## ") and text.count("| deep-d2 |") == 3 and "| og-4 |" in text
