"""Sweep specs: validation before Ray starts, the Optuna space, grid points, trial configs."""

import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from masksep.design import StudyDesign, read_design
from masksep.errors import ConfigError
from masksep.sweep import spec as S

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "name": "t",
    "base": {"train": {"epochs": 3}},
    "search_space": {
        "head.kind": {"choice": ["shallow", "deep", "og"]},
        "head.depth": {"int": [2, 4], "when": {"head.kind": ["deep", "og"]}},
        "head.width": {"logint": [64, 512], "when": {"head.kind": ["deep", "og"]}},
        "head.oversep": {"choice": [4, 8], "when": {"head.kind": "og"}},
        "train.lr": {"loguniform": [1e-4, 3e-3]},
    },
}


def write(tmp_path, data, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_shipped_specs_load():
    quick = S.load_spec(ROOT / "sweeps" / "quick.yaml")
    assert S.count_trials(quick) >= 8
    kinds = next(d for d in quick.dims if d.name == "head.kind").values
    assert {"shallow", "deep", "og"} <= set(kinds)
    search = S.load_spec(ROOT / "sweeps" / "paper-search.yaml")
    assert search.repeats == 3 and set(search.bases) == {"convtasnet", "dprnn"} and search.gpu_hours
    study = S.load_spec(ROOT / "sweeps" / "study.yaml")
    assert S.count_trials(study) == 8 * 5 and study.study.claims.deep == "deep-d3"
    assert study.study.claims.og == "og-p8-learned" and study.study.claims.og_oracle == "og-p8-oracle"
    for name, backbone in (("paper", "tcn"), ("paper-dprnn", "dprnn")):
        paper = S.load_spec(ROOT / "sweeps" / f"{name}.yaml")
        assert paper.study is not None and paper.repeats == 3 and paper.gpu_hours
        assert set(paper.study.variants) == set(study.study.variants)  # the embedded study's design
        assert next(iter(paper.bases.values())).backbone.kind == backbone


def test_every_shipped_spec_loads_and_the_size_ladder_spans_8x_in_macs(monkeypatch):
    monkeypatch.setenv("MASKSEP_SPEECH_DATA", "/nonexistent")  # read by the trials, not the spec
    specs = {p.stem: S.load_spec(p) for p in sorted((ROOT / "sweeps").glob("*.yaml"))}
    assert {"quick", "study", "scale-budget", "scale-tuned", "scale-size-medium"} <= set(specs)
    from masksep.complexity import complexity

    def macs(name):
        return complexity(next(iter(specs[name].bases.values())))["macs_per_s"]

    ladder = {name: macs(name) / macs("study") for name in specs if name.startswith("scale-size-")}
    assert len(ladder) >= 4 and max(ladder.values()) >= 8  # study-tcn, medium, reduced Conv-TasNet
    for name in ladder:  # the speech rungs: the same backbones and design as on the synthetic data
        if name.endswith("-speech"):
            twin = name.removesuffix("-speech")
            assert ladder[name] == ladder[twin] and specs[name].study.variants == specs[twin].study.variants
            assert specs[name].repeats == specs[twin].repeats


def test_the_width_and_layout_spec_is_the_study_design_with_the_per_source_head():
    spec = S.load_spec(ROOT / "sweeps" / "scale-width-layout.yaml")
    study = S.load_spec(ROOT / "sweeps" / "study.yaml")
    assert S.count_trials(spec) == 6 * 5 and spec.max_concurrent_trials == 2
    assert spec.study.claims.deep == "deep-d3-w256" and spec.study.claims.og == "og-p8-learned"
    heads = {name: spec.trial_config({S.VARIANT_KEY: name}) for name in spec.study.variants}
    assert {n: (c.head.kind, c.head.depth, c.head.width, c.head.layout) for n, c in heads.items()
            if c.head.kind == "deep"} == {
        "deep-d3-w64": ("deep", 3, 64, "joint"), "deep-d3-w256": ("deep", 3, 256, "joint"),
        "deep-d3-w1024": ("deep", 3, 1024, "joint"),
        "deep-d3-w256-per_source": ("deep", 3, 256, "per_source")}
    # The embedded study's trial: everything but the head as in sweeps/study.yaml.
    reference = study.trial_config({S.VARIANT_KEY: "shallow"})
    for cfg in heads.values():
        assert (cfg.backbone, cfg.encoder, cfg.data, cfg.train) == (
            reference.backbone, reference.encoder, reference.data, reference.train)
        assert cfg.train.threads == 1


def test_the_width_p_x_n_spec_pairs_with_the_width_study_at_og_p8s_output_count():
    spec = S.load_spec(ROOT / "sweeps" / "scale-width-pn.yaml")
    width = S.load_spec(ROOT / "sweeps" / "scale-width-layout.yaml")
    og = spec.trial_config({S.VARIANT_KEY: spec.study.claims.og})
    deep = spec.trial_config({S.VARIANT_KEY: spec.study.claims.deep})
    n_bins = og.encoder.kernel_size // 2 + 1  # the STFT's N
    assert deep.head.kind == "deep" and deep.head.width == og.head.oversep * n_bins == 2056
    # shallow and og as in the width study, at its seeds: the trials pair with its trials
    assert spec.repeats == width.repeats and spec.max_concurrent_trials == width.max_concurrent_trials
    for name in ("shallow", "og-p8-learned"):
        assert spec.trial_config({S.VARIANT_KEY: name, "__trial_index__": 3}) == width.trial_config(
            {S.VARIANT_KEY: name, "__trial_index__": 3})


def test_the_speech_rungs_at_a_resolving_n_are_their_synthetic_rungs_on_espeak_and_kokoro():
    for name, twin, seeds in (("medium-mixed", "medium", 26), ("convtasnet-mixed", "convtasnet", 12)):
        spec = S.load_spec(ROOT / "sweeps" / f"scale-size-{name}.yaml")
        synthetic = S.load_spec(ROOT / "sweeps" / f"scale-size-{twin}.yaml")
        assert spec.repeats == seeds and spec.study.claims.deep == "deep-d3-w256"
        assert spec.study.claims.og == "og-p8-learned"
        ours, theirs = (s.trial_config({S.VARIANT_KEY: "shallow"}) for s in (spec, synthetic))
        assert (ours.backbone, ours.encoder, ours.train) == (theirs.backbone, theirs.encoder, theirs.train)
        # both corpora, equal weights (the trials expand the variables when they read the data)
        assert [(r.root, r.weight) for r in ours.data.roots] == [
            ("${MASKSEP_ESPEAK_DATA}/utterances/wav8k", 1), ("${MASKSEP_KOKORO_DATA}/utterances/wav8k", 1)]
        wide = spec.trial_config({S.VARIANT_KEY: "deep-d3-w256"}).head
        assert (wide.kind, wide.depth, wide.width) == ("deep", 3, 256)


def test_define_by_run_skips_inactive_dimensions(tmp_path):
    spec = S.load_spec(write(tmp_path, BASE))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    seen_kinds = set()
    for _ in range(30):
        trial = study.ask()
        S.DefineByRun(spec.dims)(trial)
        params = trial.params
        seen_kinds.add(params["head.kind"])
        if params["head.kind"] == "shallow":
            assert set(params) == {"head.kind", "train.lr"}
        elif params["head.kind"] == "deep":
            assert "head.oversep" not in params and 2 <= params["head.depth"] <= 4
        else:
            assert params["head.oversep"] in (4, 8)
        cfg = spec.trial_config(params)
        assert cfg.head.kind == params["head.kind"] and cfg.train.epochs == 3
        study.tell(trial, 0.0)
    assert seen_kinds == {"shallow", "deep", "og"}


def test_trial_config_seed_comes_from_the_repeat_index(tmp_path):
    spec = S.load_spec(write(tmp_path, {**BASE, "repeats": 2, "num_samples": 4}))
    params = {"head.kind": "deep", "head.depth": 3, "head.width": 128, "train.lr": 1e-3}
    assert spec.trial_config({**params, S.TRIAL_INDEX: 1}).seed == 1
    assert spec.trial_config(params).seed == 0


@pytest.mark.parametrize("cpus,threads", [(2, 2), (1, 1), (0.5, 1), (2.5, 2)])
def test_trial_torch_threads_are_the_cpus_ray_gives_it(tmp_path, cpus, threads):
    spec = S.load_spec(write(tmp_path, {**BASE, "resources": {"cpus": cpus}}))
    assert spec.trial_config({"head.kind": "shallow", "train.lr": 1e-3}).train.threads == threads


def test_grid_points_follow_when_and_cross_the_rest(tmp_path):
    data = {
        "name": "g",
        "search": "grid",
        "scheduler": "none",
        "search_space": {
            "head.kind": {"grid": ["deep", "og"]},
            "head.depth": {"grid": [1, 3]},
            "head.oversep": {"grid": [4, 8], "when": {"head.kind": "og"}},
        },
    }
    spec = S.load_spec(write(tmp_path, data))
    points = spec.grid_points()
    assert len(points) == 2 + 4  # deep x 2 depths, og x 2 depths x 2 P
    assert {"head.kind": "deep", "head.depth": 3} in points
    assert S.count_trials(spec) == 6
    cfg = spec.trial_config({S.GRID_KEY: points[-1]})
    assert cfg.head.kind == "og" and cfg.head.oversep == 8


def test_bases_pick_a_whole_trial_config(tmp_path):
    data = {
        "name": "b",
        "bases": {"tcn": str(ROOT / "sweeps/trials/convtasnet-paper.yaml"),
                  "rnn": str(ROOT / "sweeps/trials/dprnn-paper.yaml")},
        "trial": {"train": {"epochs": 2}},
        "search_space": {"base": {"choice": ["tcn", "rnn"]}, "head.depth": {"int": [1, 2]}},
        "scheduler": "none",
    }
    spec = S.load_spec(write(tmp_path, data))
    assert spec.trial_config({"base": "rnn", "head.depth": 2}).backbone.kind == "dprnn"
    assert spec.trial_config({"base": "tcn", "head.depth": 1}).encoder.n_filters == 512
    assert spec.max_epochs == 2


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"colour": 1}, "colour", "unknown field"),
        ({"search": "random"}, "search", "must be one of"),
        ({"search": "optuna-multi"}, "scheduler", "asha needs a single objective"),
        ({"num_samples": 0}, "num_samples", "must be >= 1"),
        ({"repeats": 3, "num_samples": 8}, "num_samples", "multiple of repeats"),
        ({"resources": {"cpus": 0}}, "resources.cpus", "must be > 0"),
        ({"resources": {"gpus": 1.5}}, "resources.gpus", "below 1"),
        ({"resources": {"cpu": 1}}, "resources.cpu", "unknown field"),
        ({"asha": {"grace_period": 9}}, "asha.grace_period", "at most"),
        ({"wandb": {"mode": "cloud"}}, "wandb.mode", "must be one of 'auto' | 'online' | 'offline'"),
        ({"search_space": {}}, "search_space", "is empty"),
        ({"search_space": {"head.colour": {"choice": [1]}}}, "search_space.head.colour", "not a trial config field"),
        ({"search_space": {"head.depth": {"int": [0, 3]}}}, "search_space.head.depth", "head.depth: must be >= 1"),
        ({"search_space": {"head.kind": {"choice": ["og"]}, "head.oversep": {"choice": [1, 4]}}},
         "search_space.head.oversep", "head.oversep: must be >= n_src"),
        ({"search_space": {"head.depth": {"int": [3, 1]}}}, "search_space.head.depth.int", "low must be below high"),
        ({"search_space": {"head.depth": {"int": [1.5, 3]}}}, "search_space.head.depth.int", "integers"),
        ({"search_space": {"train.lr": {"loguniform": [0, 1]}}}, "search_space.train.lr.loguniform", "positive"),
        ({"search_space": {"head.depth": {"range": [1, 3]}}}, "search_space.head.depth.range", "unknown key"),
        ({"search_space": {"head.depth": {"choice": 3}}}, "search_space.head.depth.choice", "non-empty list"),
        ({"search_space": {"head.depth": {"int": [1, 3], "when": {"head.kind": "og"}}}},
         "search_space.head.depth.when", "listed before"),
        ({"search_space": {"seed": {"int": [0, 3]}}}, "search_space.seed", "repeats"),
        ({"search": "grid", "scheduler": "none", "search_space": {"train.lr": {"uniform": [0.1, 0.2]}}},
         "search_space.train.lr", "discrete"),
        ({"initial_points": [{"head.colour": 1}]}, "initial_points[0].head.colour", "not a dimension"),
        ({"initial_points": [{"head.kind": "og", "head.oversep": 16}]}, "initial_points[0].head.oversep", "outside"),
        ({"initial_points": {"head.kind": "og"}}, "initial_points", "expected a list"),
        ({"base": "nowhere.yaml"}, "base", "not found"),
        ({"trial": {"head": {"depth": 0}}}, "trial.head.depth", "must be >= 1"),
        # the reason keeps its own colons and parentheses
        ({"trial": {"head": {"colour": 1}}}, "trial.head.colour", "unknown field (known: depth, "),
        ({"resources": {"custom": {"a100": "x"}}}, "resources.custom.a100", "expected a number"),
        ({"study": {"variants": {"a": {"head.kind": "shallow"}}}}, "search_space", "leave search_space out"),
    ],
)
def test_bad_specs_name_the_field(tmp_path, change, field, words):
    path = write(tmp_path, {**BASE, **change})
    with pytest.raises(ConfigError) as info:
        S.load_spec(path)
    assert info.value.field == field, str(info.value)
    assert words in str(info.value)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_a_base_config_with_a_bad_field_names_that_file(tmp_path):
    trial = tmp_path / "trial.yaml"
    trial.write_text("head:\n  dept: 2\n")
    with pytest.raises(ConfigError, match=r"trial.yaml: head.dept: unknown field"):
        S.load_spec(write(tmp_path, {**BASE, "base": "trial.yaml"}))


STUDY = {
    "name": "s",
    "base": {"train": {"epochs": 2}},
    "repeats": 3,
    "study": {"variants": {
        "shallow": {"head.kind": "shallow"},
        "deep-d3": {"head": {"kind": "deep", "depth": 3, "width": 32}},
        "og-p4-oracle": {"head.kind": "og", "head.oversep": 4, "head.grouping": "oracle"},
    }},
}


def test_a_study_is_a_grid_of_variants_by_seeds_with_common_seeds(tmp_path):
    spec = S.load_spec(write(tmp_path, STUDY))
    assert spec.search == "grid" and spec.scheduler == "none" and S.count_trials(spec) == 9
    assert spec.study.reference == "shallow" and spec.study.claims.deep == "deep-d3"
    assert spec.study.variants["deep-d3"] == {"head.kind": "deep", "head.depth": 3, "head.width": 32}
    for index in range(3):
        cfgs = {v: spec.trial_config({S.GRID_KEY: {S.VARIANT_KEY: v}, S.TRIAL_INDEX: index})
                for v in spec.study.variants}
        assert {c.seed for c in cfgs.values()} == {index}  # every variant of a seed: the same seed
        assert cfgs["deep-d3"].head.depth == 3 and cfgs["og-p4-oracle"].head.grouping == "oracle"
    searched = spec.searched({S.GRID_KEY: {S.VARIANT_KEY: "og-p4-oracle"}})
    assert searched == {"variant": "og-p4-oracle", "head.kind": "og", "head.oversep": 4,
                        "head.grouping": "oracle"}


def test_the_report_reads_back_the_design_the_spec_stores(tmp_path):
    # One dataclass on both sides: sweep.json's block, read by the report, is the spec's design.
    spec = S.load_spec(write(tmp_path, {**STUDY, "study": {**STUDY["study"], "milestones": [250],
                                                           "pooled": [{"name": "any", "variants": [
                                                               "shallow", "deep-d3"]}]}}))
    block = json.loads(json.dumps(spec.study.to_dict()))  # as sweep.json holds it
    assert "tuning" not in block and block["repeats"] == 3
    design = read_design(block, "sweep.json")
    assert type(design) is StudyDesign and isinstance(spec.study, StudyDesign)
    assert design.to_dict() == block and design.deep == "deep-d3" and design.repeats == 3
    assert design.pooled_members == {"any": ["shallow", "deep-d3"]} and design.milestones == [250]
    with pytest.raises(ConfigError, match=r"^sweep.json: study.tuning: unknown field"):
        read_design({**block, "tuning": {"trials": 2}}, "sweep.json")


def test_common_random_numbers_give_two_variants_of_a_seed_the_same_first_batches(tmp_path):
    from masksep.data import build_dataset
    from masksep.parallel import Dist

    spec = S.load_spec(write(tmp_path, {**STUDY, "base": {
        "train": {"epochs": 2, "batch_size": 4},
        "data": {"segment_s": 0.25, "train_items": 16, "valid_items": 4, "test_items": 4}}}))
    batches = {}
    for variant in ("shallow", "deep-d3"):
        cfg = spec.trial_config({S.GRID_KEY: {S.VARIANT_KEY: variant}, S.TRIAL_INDEX: 1})
        data = build_dataset(cfg, "train")
        data.set_epoch(1)
        loader = Dist().train_loader(data, cfg.train.batch_size, cfg.seed, 1)
        batches[variant] = [b for _, b in zip(range(2), loader, strict=False)]
        batches[variant + "/test"] = build_dataset(cfg, "test")[0]
    for (mix_a, ref_a), (mix_b, ref_b) in zip(batches["shallow"], batches["deep-d3"], strict=True):
        assert torch.equal(mix_a, mix_b) and torch.equal(ref_a, ref_b)
    assert torch.equal(batches["shallow/test"][0], batches["deep-d3/test"][0])


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"search": "optuna-tpe"}, "search", "a study runs every variant with every seed"),
        ({"scheduler": "asha"}, "scheduler", "no early stopping"),
        ({"study": {"variants": {"a": {"head.kind": "shallow"}}}}, "study.variants", "at least two"),
        ({"study": {**STUDY["study"], "reference": "nope"}}, "study.reference", "is not one of the variants"),
        ({"study": {**STUDY["study"], "claims": {"deep": "shallow"}}}, "study.claims.deep", "deep variant"),
        ({"study": {**STUDY["study"], "claims": {"ogg": "x"}}}, "study.claims.ogg", "unknown field"),
        ({"study": {**STUDY["study"], "claims": {"og": "x"}}}, "study.claims.og", "not one of the variants"),
        ({"study": {**STUDY["study"], "claims": {"og": "deep-d3"}}}, "study.claims.og",
         "must name an og variant with learned grouping and P > C"),
        ({"study": {**STUDY["study"], "claims": {"og_family": []}}}, "study.claims.og_family", "is empty"),
        ({"study": {**STUDY["study"], "sensitivity_db": [0.3, 0]}}, "study.sensitivity_db", "margins > 0"),
        ({"study": {**STUDY["study"], "margin_db": -1}}, "study.margin_db", "must be >= 0"),
        ({"study": {"variants": {**STUDY["study"]["variants"], "x": {"seed": 3}}}},
         "study.variants.x.seed", "common random numbers"),
        ({"study": {"variants": {**STUDY["study"]["variants"], "x": {"head.depth": 0}}}},
         "study.variants.x", "head.depth: must be >= 1"),
        ({"study": {"variants": {**STUDY["study"]["variants"], "x": {"head.colour": 1}}}},
         "study.variants.x.head.colour", "not a trial config field"),
        ({"study": {**STUDY["study"], "pooled": [{"name": "p", "variants": ["shallow"]}]}},
         "study.pooled[0]", "at least two"),
        ({"study": {**STUDY["study"], "repeats": 4}}, "study.repeats", "top-level repeats"),
    ],
)
def test_bad_studies_name_the_field(tmp_path, change, field, words):
    path = write(tmp_path, {**STUDY, **change})
    with pytest.raises(ConfigError) as info:
        S.load_spec(path)
    assert info.value.field == field, str(info.value)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_an_empty_spec_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="spec.yaml: file: is empty"):
        S.load_spec(write(tmp_path, None))
