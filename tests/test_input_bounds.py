"""Inputs that explode (issue 34, item 1): YAML aliases are measured before anything
expands them, and every count that allocates or loops has a bound that is one line
naming the field and the limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from masksep import config as config_mod
from masksep.config import load_config, read_yaml
from masksep.errors import ConfigError
from masksep.sweep import spec as spec_mod
from masksep.sweep.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def laughs(levels: int, width: int = 10) -> str:
    """A billion-laughs document: each level repeats the previous one ``width`` times."""
    lines = ["l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_spec_fails_at_once_with_one_line_and_writes_nothing(tmp_path):
    # 9 levels: 10^9 strings once expanded, in well under a kilobyte.
    spec = tmp_path / "laughs.yaml"
    spec.write_text("name: laughs\n" + laughs(9) + "search_space:\n  head.kind: {choice: *l8}\n")
    assert spec.stat().st_size < 1000
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "masksep", "sweep", str(spec), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{spec}: file:" in done.stderr and f"at most {config_mod.MAX_YAML_NODES}" in done.stderr
    assert not out.exists()


def test_a_trial_config_with_aliases_past_the_bound_is_refused(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(laughs(6) + "head: {kind: deep}\n")  # 10^6 values
    with pytest.raises(ConfigError, match=r"cfg\.yaml: file: expands to more than 100000 values"):
        load_config(cfg)


def test_aliases_within_the_bound_and_merge_keys_still_load(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\n"
        "base: &base {head: {kind: deep, depth: 2, width: 16}, train: {epochs: 2}}\n"
        "search_space:\n"
        "  head.width: {choice: &widths [16, 32]}\n"
        "  head.depth: {choice: [2, 3]}\n"
        "initial_points:\n"
        "  - &p {head.width: 16, head.depth: 2}\n"
        "  - {<<: *p, head.depth: 3}\n")
    loaded = load_spec(spec)
    assert [dict(p) for p in loaded.initial_points] == [{"head.width": 16, "head.depth": 2},
                                                        {"head.width": 16, "head.depth": 3}]
    assert read_yaml(spec)["search_space"]["head.width"]["choice"] == [16, 32]


def test_an_alias_that_contains_itself_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("head: &h {kind: deep, inner: *h}\n")
    assert isinstance(yaml.safe_load(path.read_text())["head"]["inner"], dict)  # PyYAML builds it
    with pytest.raises(ConfigError, match="recursive alias"):
        read_yaml(path)


def test_an_overlong_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "w") as f:
        f.write("name: big\n# " + "x" * config_mod.MAX_YAML_BYTES + "\n")
    with pytest.raises(ConfigError, match=f"at most {config_mod.MAX_YAML_BYTES}"):
        read_yaml(path)


def test_a_set_override_is_bounded_too():
    with pytest.raises(ConfigError, match="--set: file: expands to more than"):
        config_mod.parse_override("head.width=" + "{" + laughs(6).replace("\n", ", ") + "}")
    assert config_mod.parse_override("name=[x") == ("name", "[x")  # malformed YAML: a string


# --------------------------------------------------------------------------- trial config counts


@pytest.mark.parametrize("override, field, limit", [
    ("head.width=1000000000", "head.width", config_mod.MAX_CHANNELS),
    ("head.depth=100000", "head.depth", config_mod.MAX_DEPTH),
    ("encoder.n_filters=100000000", "encoder.n_filters", config_mod.MAX_CHANNELS),
    ("backbone.tcn.layers=64", "backbone.tcn.layers", config_mod.MAX_TCN_LAYERS),
    ("backbone.tcn.repeats=1000", "backbone.tcn.repeats", config_mod.MAX_DEPTH),
    ("backbone.dprnn.blocks=1000", "backbone.dprnn.blocks", config_mod.MAX_DEPTH),
    ("backbone.tcn.hidden=1000000", "backbone.tcn.hidden", config_mod.MAX_CHANNELS),
    ("n_src=1000", "n_src", config_mod.MAX_SRC),
    ("data.train_items=1000000000000", "data.train_items", config_mod.MAX_ITEMS),
    ("data.eval_seconds=.inf", "data.eval_seconds", config_mod.MAX_SECONDS),
    ("train.epochs=1000000000", "train.epochs", config_mod.MAX_EPOCHS),
])
def test_trial_config_counts_have_a_bound_that_names_field_and_limit(override, field, limit):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert caught.value.field == field and f"must be <= {limit}," in str(caught.value)
    load_config(None, [f"{field}={limit}"])  # the limit itself is allowed


def test_an_oracle_oversep_of_a_trillion_is_refused_before_counting_its_assignments():
    # n_src ** oversep of 10^12 is an integer no machine finishes computing.
    with pytest.raises(ConfigError, match=f"head.oversep: must be <= {config_mod.MAX_OVERSEP}"):
        load_config(None, ["head.kind=og", "head.grouping=oracle", "head.oversep=1000000000000"])


def test_the_number_of_milestones_is_bounded():
    steps = ",".join(str(250 * (i + 1)) for i in range(config_mod.MAX_MILESTONES + 1))
    with pytest.raises(ConfigError, match=f"train.milestones: at most {config_mod.MAX_MILESTONES}"):
        load_config(None, [f"train.milestones=[{steps}]"])


# --------------------------------------------------------------------------- sweep spec counts

TINY = {"train": {"epochs": 2}}


def write(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump({"name": "s", "base": TINY, **fields}, sort_keys=False))
    return path


def refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_spec(path)
    assert str(path) in str(caught.value)
    return caught.value


def test_num_samples_and_repeats_are_bounded(tmp_path):
    space = {"head.kind": {"choice": ["shallow", "deep"]}}
    err = refused(write(tmp_path / "a.yaml", search_space=space, num_samples=10**12))
    assert err.field == "num_samples" and f"<= {spec_mod.MAX_TRIALS}" in err.message
    err = refused(write(tmp_path / "d.yaml", search_space=space, repeats=10**9, num_samples=10**4))
    assert err.field == "repeats" and f"<= {spec_mod.MAX_REPEATS}" in err.message


def test_a_tuned_studys_repeats_are_bounded_before_its_seed_sets_are_built(tmp_path):
    study = {"variants": {"shallow": {"head.kind": "shallow"}, "deep": {"head.kind": "deep", "head.depth": 2}},
             "tuning": {"search_space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}, "trials": 4,
                        "seed": 100, "repeats": 10**12}}
    err = refused(write(tmp_path / "t.yaml", study=study))
    assert err.field == "study.tuning.repeats" and f"<= {spec_mod.MAX_REPEATS}" in err.message
    study["tuning"]["repeats"] = 1
    err = refused(write(tmp_path / "u.yaml", study=study, repeats=10**12))
    assert err.field == "repeats"
    study["tuning"]["trials"] = 10**12
    err = refused(write(tmp_path / "v.yaml", study=study))
    assert err.field == "study.tuning.trials"


def test_a_grid_is_counted_before_its_points_are_listed(tmp_path):
    err = refused(write(tmp_path / "g.yaml", search="grid", scheduler="none",
                        search_space={"head.width": {"int": [1, 10**9]}}))
    assert err.field == "search_space.head.width" and f"at most {spec_mod.MAX_VALUES}" in err.message
    err = refused(write(tmp_path / "h.yaml", search="grid", scheduler="none",
                        search_space={"head.width": {"int": [1, 5000]}, "head.depth": {"int": [1, 60]},
                                      "train.batch_size": {"int": [1, 500]}}))
    assert err.field == "search_space" and "1.5e+08 points" in err.message


def test_long_value_lists_and_what_validation_would_build_are_bounded(tmp_path):
    many = list(range(1, spec_mod.MAX_VALUES + 2))
    err = refused(write(tmp_path / "c.yaml", search_space={"train.epochs": {"choice": many}}))
    assert err.field == "search_space.train.epochs" and f"at most {spec_mod.MAX_VALUES}" in err.message
    # five dimensions of 100 values: each value checked beside each other's, 200,000 trial configs
    space = {f"train.{k}": {"choice": list(range(1, 101))}
             for k in ("epochs", "batch_size", "plateau_patience", "early_stop", "threads")}
    err = refused(write(tmp_path / "d.yaml", search_space=space))
    assert err.field == "search_space" and f"at most {spec_mod.MAX_CHECKS}" in err.message


def test_a_studys_milestones_are_bounded(tmp_path):
    study = {"variants": {"shallow": {"head.kind": "shallow"}, "deep": {"head.kind": "deep", "head.depth": 2}},
             "milestones": list(range(1, config_mod.MAX_MILESTONES + 2))}
    err = refused(write(tmp_path / "m.yaml", study=study))
    assert err.field == "study.milestones"
