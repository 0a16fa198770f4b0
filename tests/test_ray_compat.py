"""Ray's private names that masksep reads (masksep/sweep/ray_compat.py) exist in the
installed Ray; a Ray that renamed one, or is outside the pinned range, fails loudly here."""

from __future__ import annotations

import pytest
import ray

from masksep.errors import UserError
from masksep.sweep import ray_compat


def test_the_installed_ray_has_every_private_name_masksep_reads():
    ray_compat.check()
    lo, hi = ray_compat.SUPPORTED
    assert lo <= tuple(int(p) for p in ray.__version__.split(".")[:2]) < hi


def test_a_renamed_name_or_another_ray_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(ray_compat.PRIVATE_ATTRIBUTES, "Repeater",
                        (*ray_compat.PRIVATE_ATTRIBUTES["Repeater"], "_renamed_in_a_later_ray"))
    with pytest.raises(UserError, match="Repeater._renamed_in_a_later_ray"):
        ray_compat.check()
    monkeypatch.setattr(ray, "__version__", "2.99.0")
    with pytest.raises(UserError, match=r"ray 2.99.0: masksep supports ray >= 2.52, < 2.61"):
        ray_compat.check()


def test_the_pin_in_pyproject_is_the_checked_range():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    lo, hi = ray_compat.SUPPORTED
    assert f'"ray[default,tune]>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}"' in text


def test_wandb_needs_no_private_ray_name():
    """masksep's W&B runs hang off ray.tune.Callback's public hooks: no subclass of
    Ray's WandbLoggerCallback, nothing of ray.air.integrations.wandb."""
    from pathlib import Path

    from ray.tune import Callback

    from masksep.sweep.callbacks import Progress, WandbRuns

    assert issubclass(WandbRuns, Callback) and issubclass(Progress, Callback)
    package = Path(ray_compat.__file__).parent
    for path in package.glob("*.py"):
        assert "ray.air.integrations.wandb" not in path.read_text(), path


def _classes_defined_in_functions(tree):
    import ast

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ClassDef):
                    yield inner.name


def test_every_ray_subclass_is_a_module_level_class_of_one_module():
    """masksep's subclasses of Ray's classes are all in masksep/sweep/callbacks.py, and
    no class in masksep is made inside a function (Tune pickles them with its state)."""
    import ast
    import inspect
    from pathlib import Path

    from masksep.sweep import callbacks

    package = Path(ray_compat.__file__).parents[1]
    inside = {str(p.relative_to(package)): names for p in sorted(package.rglob("*.py"))
              if (names := list(_classes_defined_in_functions(ast.parse(p.read_text()))))}
    assert not inside, f"classes defined inside functions: {inside}"
    ours = {name: cls for name, cls in vars(callbacks).items()
            if inspect.isclass(cls) and cls.__module__ == callbacks.__name__}
    ray_based = {name for name, cls in ours.items()
                 if any(base.__module__.startswith("ray.") for base in cls.__mro__[1:])}
    assert ray_based == {"Progress", "WandbRuns", "ExportingOptunaSearch", "MultiRepeater",
                         "ForwardToTune"}
    # and no other module of the package subclasses a class it imports from Ray
    for path in sorted(package.rglob("*.py")):
        if path.name == "callbacks.py" and path.parent.name == "sweep":
            continue
        tree = ast.parse(path.read_text())
        from_ray = {alias.asname or alias.name for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ray")
                    for alias in node.names}
        bases = {ast.unparse(base) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                 for base in node.bases}
        assert not (bases & from_ray) and not any(b.startswith("ray.") for b in bases), path


def test_the_multi_objective_repeater_averages_each_objective_and_exports_the_study(tmp_path):
    """build_searcher's Repeater over the exporting OptunaSearch, driven as Tune drives
    it (suggest, then on_trial_complete), with no Ray cluster: each configuration's
    seeds are averaged per objective, the study is exported, the searcher pickles."""
    import pickle

    import optuna
    import yaml

    from masksep.sweep import callbacks
    from masksep.sweep.runner import build_searcher
    from masksep.sweep.spec import COST, METRIC, load_spec

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "name": "m", "search": "optuna-multi", "scheduler": "none", "num_samples": 4,
        "repeats": 2, "startup_trials": 1, "search_space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}))
    spec = load_spec(path)
    searcher = build_searcher(spec, tmp_path / "optuna.db")
    assert isinstance(searcher, callbacks.MultiRepeater)
    assert isinstance(searcher.searcher, callbacks.ExportingOptunaSearch)
    configs = {f"t{i}": searcher.suggest(f"t{i}") for i in range(4)}
    assert sorted(c["__trial_index__"] for c in configs.values()) == [0, 0, 1, 1]
    for i, (trial_id, config) in enumerate(configs.items()):
        searcher.on_trial_complete(trial_id, {METRIC: float(i), COST: 10.0 * i, **config})
    study = optuna.load_study(study_name="m", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert sorted(t.values for t in study.trials) == [[0.5, 5.0], [2.5, 25.0]]  # seed means
    again = pickle.loads(pickle.dumps(searcher))  # module-level classes: by reference
    assert type(again) is callbacks.MultiRepeater
    assert type(again.searcher) is callbacks.ExportingOptunaSearch
