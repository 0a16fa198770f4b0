"""The tuned study's protocol without Ray: its spec checks (search space, seeds
disjoint from the test seeds) and the tuning sweeps it derives."""

from pathlib import Path

import pytest
import yaml

from masksep.errors import ConfigError
from masksep.sweep.spec import load_spec
from masksep.tuned import best_setting, tuning_spec

STUDY = {
    "name": "tuned", "base": "trials/study-tcn.yaml", "repeats": 3,
    "study": {"reference": "shallow",
              "variants": {"shallow": {"head.kind": "shallow"},
                           "deep-d3": {"head.kind": "deep", "head.depth": 3, "head.width": 64}},
              "tuning": {"search_space": {"train.lr": {"loguniform": [2.0e-4, 5.0e-3]}},
                         "by_head": {"deep": {"head.width": {"choice": [32, 64, 128]}}},
                         "trials": 6, "seed": 100}},
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
    spec = load_spec(spec_file())
    raw = yaml.safe_load(spec_file().read_text())
    test_seeds = {spec.trial_config({"variant": "shallow", "__trial_index__": i}).seed for i in range(3)}
    for variant, dims in (("shallow", {"train.lr"}), ("deep-d3", {"train.lr", "head.width"})):
        sub = tuning_spec(spec, raw, variant)
        assert set(sub["search_space"]) == dims
        assert sub["num_samples"] == 6 and sub["search"] == "optuna-tpe" and sub["scheduler"] == "asha"
        assert sub["trial"]["seed"] == 100 and 100 not in test_seeds
        # the variant's own study setting is the first point tried
        assert sub["initial_points"][0]["train.lr"] == pytest.approx(1e-3)
        if variant == "deep-d3":
            assert sub["initial_points"][0]["head.width"] == 64
            assert sub["trial"]["head"]["kind"] == "deep"


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
    ({"trials": 1}, "study.tuning.trials", "at least 2"),
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
