"""The tuned study's protocol without Ray: its spec checks (search space, seeds
disjoint from the test seeds) and the tuning sweeps it derives."""

from pathlib import Path

import pytest
import yaml

from masksep.errors import ConfigError
from masksep.sweep.spec import count_trials, load_spec, spec_to_dict
from masksep.tuned import best_setting, study_spec, tuning_spec, variant_base

STUDY = {
    "name": "tuned", "base": "trials/study-tcn.yaml", "repeats": 3,
    "study": {"reference": "shallow",
              "variants": {"shallow": {"head.kind": "shallow"},
                           "deep-d3": {"head.kind": "deep", "head.depth": 3, "head.width": 64}},
              "tuning": {"search_space": {"train.lr": {"loguniform": [2.0e-4, 5.0e-3]}},
                         "by_head": {"deep": {"head.width": {"choice": [32, 64, 128]}}},
                         "search": "optuna-tpe", "trials": 6, "seed": 100}},
}
SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"


def write(tmp_path, **tuning):
    spec = yaml.safe_load(yaml.safe_dump(STUDY))
    spec["study"]["tuning"].update(tuning)
    path = SWEEPS / f".test-tuned-{tmp_path.name}.yaml"  # beside the trial configs it names
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def spec_file(tmp_path):
    made = []

    def make(**tuning):
        made.append(write(tmp_path, **tuning))
        return made[-1]

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def test_each_variant_is_tuned_on_the_tuning_seed_with_its_own_space(spec_file):
    spec = load_spec(spec_file(search="optuna-tpe", trials=6))
    test_seeds = {spec.trial_config({"variant": "shallow", "__trial_index__": i}).seed for i in range(3)}
    for variant, dims in (("shallow", {"train.lr"}), ("deep-d3", {"train.lr", "head.width"})):
        sub = tuning_spec(spec, variant)
        assert {d.name for d in sub.dims} == dims
        assert sub.num_samples == 6 and sub.search == "optuna-tpe" and sub.scheduler == "none"
        assert sub.startup_trials == 3  # below the 6 trials: TPE models the other 3
        assert sub.bases["default"].seed == 100 and 100 not in test_seeds
        # the variant's own study setting is the first point tried
        assert sub.initial_points[0]["train.lr"] == pytest.approx(1e-3)
        if variant == "deep-d3":
            assert sub.initial_points[0]["head.width"] == 64
            assert sub.bases["default"].head.kind == "deep"


def test_a_grid_tuning_tries_every_point_with_every_tuning_seed(spec_file):
    path = spec_file(search="grid", trials=None, repeats=2, by_head={},
                     search_space={"train.lr": {"choice": [5e-4, 1e-3, 2e-3]}})
    spec = load_spec(path)
    sub = tuning_spec(spec, "deep-d3")
    assert sub.search == "grid" and sub.scheduler == "none"
    assert [p["train.lr"] for p in sub.grid_points()] == [5e-4, 1e-3, 2e-3]
    assert count_trials(sub) == 6


def test_a_stage_runs_on_the_study_base_even_from_bases(spec_file, tmp_path):
    """A spec with ``bases:`` (one entry) is tuned on that base, not the built-in
    default: each stage is derived from the loaded spec and loads back equal."""
    path = spec_file(search="grid", trials=None, by_head={},
                     search_space={"train.lr": {"choice": [5e-4, 1e-3]}})
    raw = yaml.safe_load(path.read_text())
    raw["bases"] = {"tcn": raw.pop("base")}
    raw["trial"] = {"data": {"train_items": 77}}
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path)
    study_base = next(iter(spec.bases.values()))
    for variant in spec.study.variants:
        written = tmp_path / f"{variant}.yaml"
        written.write_text(yaml.safe_dump(spec_to_dict(tuning_spec(spec, variant))))
        stage = load_spec(written)
        base = stage.bases["default"]
        assert base.data.train_items == 77 and base.backbone == study_base.backbone
        assert base == variant_base(spec, variant, 100)
    final = study_spec(spec, {"shallow": {"train.lr": 5e-4}, "deep-d3": {"train.lr": 1e-3}})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec_to_dict(final)))
    again = load_spec(tmp_path / "study.yaml")
    assert next(iter(again.bases.values())) == study_base
    assert again.study.tuned["shallow"] == {"train.lr": 5e-4} and again.study.tuning is None
    assert again.trial_config({"variant": "shallow"}).train.lr == 5e-4


def test_two_variants_draw_different_points_once_tpe_starts(spec_file):
    """The sampler a tuning search gets leaves its random start-up within the
    budget: two variants whose scores differ are led to different points (the old
    protocol drew the same seeded points for every variant)."""
    import math

    import optuna

    spec = load_spec(spec_file(search="optuna-tpe", trials=12, startup_trials=4, by_head={}))
    drawn = {}
    for variant, best_lr in (("shallow", 3e-4), ("deep-d3", 4e-3)):
        sub = tuning_spec(spec, variant)
        sampler = optuna.samplers.TPESampler(seed=sub.seed, n_startup_trials=sub.startup_trials)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        dim = sub.dims[0]
        study.optimize(lambda t, d=dim, b=best_lr: -(math.log(d.suggest(t)) - math.log(b)) ** 2,
                       n_trials=sub.num_samples)
        drawn[variant] = [t.params["train.lr"] for t in study.trials]
    start = sub.startup_trials
    assert drawn["shallow"][:start] == drawn["deep-d3"][:start]  # the same seeded start-up
    assert drawn["shallow"][start:] != drawn["deep-d3"][start:]  # then TPE follows the scores


@pytest.mark.parametrize("tuning, field, words", [
    ({"seed": 2}, "study.tuning.seed", "overlap the study's test seeds 0-2"),
    ({"seed": 0}, "study.tuning.seed", "overlap"),
    ({"search_space": {}, "by_head": {}}, "study.tuning.search_space", "needs a search space"),
    ({"search_space": {"train.lrr": {"loguniform": [1e-4, 1e-3]}}}, "study.tuning.search_space.train.lrr",
     "not a trial config field"),
    ({"search_space": {"data.train_items": {"choice": [100, 200]}}},
     "study.tuning.search_space.data.train_items", "share the seed and the data"),
    ({"search_space": {"train.lr": {"loguniform": [1e-3, 1e-4]}}},
     "study.tuning.search_space.train.lr", "low must be below high"),
    ({"by_head": {"og": {"head.width": {"choice": [32]}}}}, "study.tuning.by_head.og", "no variant"),
    ({"search": "optuna-tpe", "trials": 1}, "study.tuning.trials", "at least 2"),
    ({"search": "optuna-tpe", "trials": 8, "startup_trials": 10}, "study.tuning.startup_trials",
     "10 random start-up trials leave TPE nothing to model among the 8"),
    ({"search": "grid"}, "study.tuning.search_space.train.lr", "a grid search needs discrete values"),
    ({"search": "grid", "search_space": {"train.lr": {"choice": [1e-3, 2e-3]}}, "by_head": {}},
     "study.tuning.trials", "a grid tries every point"),
    ({"asha": {"grace_period": 8}}, "study.tuning.asha.grace_period",
     "must be below"),
])
def test_a_bad_tuning_block_names_its_field(spec_file, tuning, field, words):
    with pytest.raises(ConfigError) as info:
        load_spec(spec_file(**tuning))
    assert info.value.field == field and words in str(info.value)


def test_the_tuned_setting_is_the_best_mean_validation_of_completed_trials(tmp_path):
    rows = [  # (lr, status, best_val); the stopped trial's higher val is not comparable
        (1e-3, "completed", 5.0), (1e-3, "completed", 5.4), (2e-3, "completed", 5.3),
        (3e-3, "stopped", 9.0), (5e-4, "completed", 4.0)]
    lines = ["trial_id,status,head,best_val_si_snri,searched.train.lr,test_si_snri"]
    lines += [f"t{i},{st},shallow,{v},{lr},{-v}" for i, (lr, st, v) in enumerate(rows)]
    (tmp_path / "trials.csv").write_text("\n".join(lines) + "\n")
    assert best_setting(tmp_path, ["train.lr"]) == {"train.lr": 2e-3}  # mean 5.3 > 5.2 for 1e-3


def test_an_interrupted_tuning_stage_stops_the_study_before_any_setting_is_chosen(
        spec_file, tmp_path, monkeypatch):
    """Ctrl-C in a stage (run_sweep raises KeyboardInterrupt, sweep.json says
    interrupted) must not pick a setting from the stage's partial trials."""
    from masksep import pipeline, tuned

    ran = []

    def interrupted(path, folder, **kwargs):
        ran.append(Path(folder).name)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "sweep_and_report", interrupted)
    monkeypatch.setattr(tuned, "best_setting", lambda *a: pytest.fail("a setting was chosen"))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        tuned.run_tuned_study(spec_file(search="optuna-tpe", trials=6), out)
    assert len(ran) == 1  # the first stage only
    assert not (out / "tuned.json").exists()
