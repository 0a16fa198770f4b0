"""Config loading: defaults, YAML, dotted overrides, and one clear error per bad field."""

from pathlib import Path

import pytest
import yaml

from masksep import config as C
from masksep.errors import ConfigError

TRIALS = Path(__file__).resolve().parents[1] / "sweeps" / "trials"


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = C.load_config(None, ["head.kind=deep", "head.depth=3", "train.lr=3e-4"])
    path = tmp_path / "c.yaml"
    path.write_text(C.to_yaml(cfg))
    again = C.load_config(path)
    assert again == cfg
    assert again.head.depth == 3 and again.train.lr == pytest.approx(3e-4)


def test_override_values_are_read_as_yaml():
    cfg = C.load_config(None, ["train.amp=false", "data.root=/x/y", "train.lr=1"])
    assert cfg.train.amp is False
    assert cfg.data.root == "/x/y"
    assert isinstance(cfg.train.lr, float)  # an int widens to a float field


def test_flatten_and_merge():
    cfg = C.load_config(None)
    flat = C.flatten(cfg)
    assert flat["head.depth"] == 1 and flat["backbone.tcn.layers"] == cfg.backbone.tcn.layers
    merged = C.merge(cfg, {"head.kind": "og", "head.oversep": 8})
    assert merged.head.oversep == 8 and cfg.head.kind == "shallow"


@pytest.mark.parametrize(
    "override, field, words",
    [
        (["head.colour=3"], "head.colour", "unknown field"),
        (["nope=1"], "nope", "unknown field"),
        (["head.depth=two"], "head.depth", "expected an integer"),
        (["head.depth=1.5"], "head.depth", "expected an integer"),
        (["train.amp=3"], "train.amp", "expected true or false"),
        (["head.depth=0"], "head.depth", "must be >= 1"),
        (["head.kind=og", "head.oversep=1"], "head.oversep", "must be >= n_src"),
        (["head.kind=mlp"], "head.kind", "must be one of"),
        (["head.mask_act=gelu"], "head.mask_act", "must be one of"),
        (["encoder.stride=17"], "encoder.stride", "must be between 1 and 16"),
        (["encoder.kind=stft", "encoder.kernel_size=256", "encoder.stride=200"], "encoder.stride", "between 1 and 128"),
        (["head=3"], "head", "expected a mapping"),
        (["data.kind=librimix"], "data.root", "is required"),
        (["train.lr=0"], "train.lr", "must be > 0"),
    ],
)
def test_bad_values_name_the_field(override, field, words):
    with pytest.raises(ConfigError) as info:
        C.load_config(None, override)
    assert info.value.field == field
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="missing.yaml: file: not found"):
        C.load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("head: {depth: 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: line 2: not valid YAML"):
        C.load_config(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml: file: must hold a YAML mapping"):
        C.load_config(listy)
    typo = tmp_path / "typo.yaml"
    typo.write_text("head:\n  dept: 3\n")
    with pytest.raises(ConfigError, match="typo.yaml: head.dept: unknown field"):
        C.load_config(typo)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="field.name=value"):
        C.load_config(None, ["head.depth"])
    with pytest.raises(ConfigError, match="seed: expected an integer"):
        C.load_config(None, ["seed.x=1"])


def test_head_summary_reports_what_each_head_uses():
    shallow = C.load_config(None, ["head.depth=3", "head.width=512"])
    assert C.head_summary(shallow) == {
        "head": "shallow", "depth": 1, "width": 0, "oversep": 2, "grouping": "none", "layout": "joint"}
    deep = C.load_config(None, ["head.kind=deep", "head.depth=3", "head.width=512"])
    assert C.head_summary(deep)["depth"] == 3 and C.head_summary(deep)["oversep"] == 2
    assert C.head_summary(deep)["layout"] == "joint"
    og = C.load_config(None, ["head.kind=og", "head.oversep=8", "head.grouping=oracle"])
    assert C.head_summary(og) == {
        "head": "og", "depth": 1, "width": 0, "oversep": 8, "grouping": "oracle", "layout": "joint"}
    per_source = C.load_config(None, ["head.kind=deep", "head.depth=3", "head.layout=per_source"])
    assert C.head_summary(per_source)["layout"] == "per_source"
    # Depth 1 (and a shallow head) is one conv F -> P*N in either layout: reported as it acts.
    for sets in (["head.kind=deep", "head.depth=1"], ["head.kind=shallow", "head.depth=3"],
                 ["head.kind=og", "head.depth=1"]):
        cfg = C.load_config(None, [*sets, "head.layout=per_source"])
        assert C.head_summary(cfg)["layout"] == "joint", sets


def test_a_bad_head_layout_is_one_line_naming_the_field(tmp_path, capsys):
    from masksep.cli import main

    with pytest.raises(ConfigError, match=r"^head\.layout: must be one of 'joint' \| 'per_source', "
                                          r"got 'simo'$"):
        C.load_config(None, ["head.layout=simo"])
    path = tmp_path / "trial.yaml"
    path.write_text("head: {kind: deep, depth: 3, layout: [per_source]}\n")
    assert main(["complexity", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "head.layout" in err and str(path) in err, err


def test_expand_root(monkeypatch):
    monkeypatch.setenv("MASKSEP_TEST_ROOT", "/data")
    assert C.expand_root("${MASKSEP_TEST_ROOT}/Libri2Mix") == "/data/Libri2Mix"
    monkeypatch.delenv("MASKSEP_TEST_ROOT")
    with pytest.raises(ConfigError, match="MASKSEP_TEST_ROOT"):
        C.expand_root("${MASKSEP_TEST_ROOT}/Libri2Mix")


def test_every_shipped_trial_config_loads():
    paths = sorted(TRIALS.glob("*.yaml"))
    assert len(paths) >= 6
    for path in paths:
        cfg = C.load_config(path)
        assert yaml.safe_load(path.read_text())  # not empty
        assert cfg.n_src >= 1


def test_first_difference_names_the_first_dotted_field_that_differs():
    cfg = C.load_config(None)
    assert C.first_difference(cfg, C.to_dict(cfg)) is None  # a Config and its dict agree
    changed = C.merge(cfg, {"head.depth": 3, "backbone.tcn.hidden": 48, "train.lr": 0.5})
    # sorted dotted order: backbone.* comes before head.* and train.*
    assert C.first_difference(cfg, changed) == ("backbone.tcn.hidden", cfg.backbone.tcn.hidden, 48)
    assert C.first_difference(cfg, changed, ignore=("backbone",)) == ("head.depth", 1, 3)
    # a section name leaves out the fields under it, not fields that merely start alike
    assert C.first_difference({"train": {"lr": 1}, "trainer": 1}, {"train": {"lr": 2}, "trainer": 2},
                              ignore=("train",)) == ("trainer", 1, 2)
    assert C.first_difference(cfg, changed, ignore=("backbone", "head", "train")) is None
    # a field on one side only reads as None there; lists are compared whole
    assert C.first_difference({"a": {"b": 1}}, {}) == ("a.b", 1, None)
    assert C.first_difference({"r": [{"w": 1}]}, {"r": [{"w": 2}]}) == ("r", [{"w": 1}], [{"w": 2}])


def test_a_run_and_a_sweep_refuse_a_resume_on_the_same_first_difference(tmp_path):
    """train's resume check and the sweep's changed-spec check are the one comparison."""
    from masksep.errors import UserError
    from masksep.sweep import runner
    from masksep.sweep import spec as spec_mod
    from masksep.train import _check_resumable

    cfg = C.load_config(None)
    changed = C.merge(cfg, {"head.depth": 3, "data.num_workers": 0, "train.lr": 0.5})
    with pytest.raises(UserError, match=r"cannot resume: head\.depth is 1 in the checkpoint but 3"):
        _check_resumable(changed, {"config": C.to_dict(cfg)}, "last.pt")
    _check_resumable(C.merge(cfg, {"train.lr": 0.5, "data.num_workers": 0}),
                     {"config": C.to_dict(cfg)}, "last.pt")  # budget and reading: free

    spec = spec_mod.load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "quick.yaml")
    saved = yaml.safe_load(spec_mod.self_contained_yaml(spec))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(saved))
    runner._check_same_spec(spec, tmp_path)  # the spec it started with
    # the sweep started with another head width and budget: the first field in dotted order is named
    width = saved["base"]["head"]["width"]
    saved["base"]["head"]["width"] = width + 1
    saved["base"]["train"]["epochs"] += 1
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(UserError, match=rf"base\.head\.width is {width} here but {width + 1} in the sweep"):
        runner._check_same_spec(spec, tmp_path)
