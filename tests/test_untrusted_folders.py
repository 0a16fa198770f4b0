"""Run folders from somewhere else (issue 34, item 2): the report reads a sweep folder
without unpickling anything; --resume restores only the Ray state of the sweep its
sweep.json names; every torch.load is weights_only=True."""

from __future__ import annotations

import ast
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

from masksep.cli import main
from masksep.sweep import spec as spec_mod

PACKAGE = Path(__file__).resolve().parents[1] / "masksep"


class Plant:
    """Unpickling this creates the file ``path``: the proof that something was unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def planted(path: Path) -> str:
    return pickle.dumps(Plant(path)).hex()


def hostile_experiment(experiment: Path, marker: Path) -> None:
    """Tune's snapshot as Tune writes it (trial_data: [trial json, run metadata json]),
    every field Tune unpickles holding a pickle that creates ``marker``; and Tune's
    own pickles beside it."""
    fallback = {"_type": "CLOUDPICKLE_FALLBACK", "value": planted(marker)}
    trials = []
    for trial_id, status, failures, last in (
            ("aaaa0001", "TERMINATED", 0, {"epoch": 1, "best_val_si_snri": 3.5, "time_total_s": 7.0}),
            ("aaaa0002", "ERROR", 2, {}),
            ("aaaa0003", "TERMINATED", 0, {})):
        trial = {"stub": False, "trainable_name": "run_trial", "trial_id": trial_id, "status": status,
                 "relative_logdir": f"trial_{trial_id}", "config": {"head.kind": "deep"},
                 "storage": fallback, "trial_name_creator": fallback,
                 **{key: planted(marker) for key in ("results", "extra_arg", "placement_group_factory",
                                                     "_resources", "_default_placement_group_factory")}}
        meta = {"num_failures": failures, "last_result": last, "checkpoint_manager": fallback}
        trials.append([json.dumps(trial), json.dumps(meta)])
    experiment.mkdir(parents=True)
    (experiment / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": trials, "runner_data": fallback, "stats": {}}))
    for name in ("tuner.pkl", "searcher-state-2026-01-01_00-00-00.pkl"):
        (experiment / name).write_bytes(pickle.dumps(Plant(marker)))
    for trial_id in ("aaaa0001", "aaaa0002", "aaaa0003"):
        folder = experiment / f"trial_{trial_id}"
        folder.mkdir()
        (folder / "searched.json").write_text(json.dumps({"head.kind": "deep"}))
        (folder / "result.pkl").write_bytes(pickle.dumps(Plant(marker)))
    (experiment / "trial_aaaa0001" / "metrics.jsonl").write_text(json.dumps(
        {"epoch": 1, "val_si_snri": 3.5, "best_val_si_snri": 3.5}) + "\n")


def test_the_report_of_a_folder_from_elsewhere_unpickles_nothing(tmp_path):
    out = tmp_path / "copied"
    marker = tmp_path / "pwned"
    hostile_experiment(out / "ray" / "s", marker)
    (out / "sweep.json").write_text(json.dumps(
        {"name": "s", "storage": str(out / "ray"), "search": "grid", "scheduler": "asha",
         "num_trials": 3, "status": "finished"}))
    # In a fresh interpreter, so that what it imports is what the report imports.
    probe = ("import sys; from masksep.cli import main; rc = main(['report', sys.argv[1]]); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'cloudpickle'})); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True,
                          timeout=300, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"  # neither Ray nor cloudpickle loaded
    assert not marker.exists()
    trials = {r["trial_id"]: r for r in _csv_rows(out / "trials.csv")}
    # What Tune's snapshot says is still read (as JSON): its status, retries, last result.
    assert trials["aaaa0001"]["status"] == "stopped" and trials["aaaa0001"]["best_val_si_snri"] == "3.5"
    assert trials["aaaa0002"]["status"] == "failed" and trials["aaaa0002"]["retries"] == "2"
    assert trials["aaaa0003"]["status"] == "stopped"


def _csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_report_never_imports_ray_or_a_pickle_reader():
    # Static: the modules the report reads a folder with name no unpickler.
    banned = re.compile(r"\b(ExperimentAnalysis|ResultGrid|cloudpickle|pickle\.loads?|Tuner\.restore"
                        r"|torch\.load|pd\.read_pickle|allow_pickle)\b")
    files = [*sorted((PACKAGE / "report").glob("*.py")), PACKAGE / "rundir.py", PACKAGE / "design.py"]
    for path in files:
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        tree = ast.parse(path.read_text())
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        hits = [m.group(0) for m in banned.finditer(code) if not any(m.group(0) in s for s in strings)]
        assert not hits, f"{path.name}: {hits}"
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"ray", "pickle", "cloudpickle", "torch"}, f"{path.name}: {imported}"


def test_every_torch_load_in_the_package_is_weights_only():
    calls = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        where = str(path.relative_to(PACKAGE.parent))
        called = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr == "load"
                    and isinstance(node.value, ast.Name) and node.value.id == "torch"):
                continue
            call = called.get(id(node))  # torch.load kept under another name escapes the check
            assert call is not None, f"{where}:{node.lineno}: torch.load used without being called"
            calls += 1
            flags = [k.value for k in call.keywords if k.arg == "weights_only"]
            assert len(flags) == 1 and isinstance(flags[0], ast.Constant) and flags[0].value is True, (
                f"{where}:{node.lineno}: torch.load without weights_only=True")
        # torch reached under another name, or load taken out of it
        assert not re.search(r"import torch as|from torch import [^\n]*\bload\b|from torch\.serialization"
                             r"|getattr\(\s*torch\s*,|torch\.serialization\.load", text), where
    assert calls >= 1  # the checkpoint reader is found


# --------------------------------------------------------------------------- --resume


def started_sweep(spec_path: Path, out: Path, storage: Path, owner_uid: str | None,
                  marker: Path) -> None:
    """A sweep folder as a killed driver leaves it, its Ray state holding planted pickles."""
    spec = spec_mod.load_spec(spec_path)
    out.mkdir(parents=True)
    (out / "spec.yaml").write_text(spec_mod.self_contained_yaml(spec))
    hostile_experiment(storage / "s", marker)
    if owner_uid is not None:
        (storage / "s" / "masksep-sweep.json").write_text(json.dumps({"name": "s", "uid": owner_uid}))
    (out / "sweep.json").write_text(json.dumps(
        {"name": "s", "uid": "0badc0de", "storage": str(storage), "status": "running",
         "owner": "masksep-sweep.json", "pid": 2**22 + 12345}))


def test_resume_refuses_a_folder_whose_ray_state_lives_elsewhere(tmp_path, spec_path, capsys):
    out, marker = tmp_path / "out", tmp_path / "pwned"
    elsewhere = tmp_path / "someone-elses"
    started_sweep(spec_path, out, elsewhere, "0badc0de", marker)
    assert main(["sweep", str(spec_path), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"keeps its Ray state at {elsewhere}" in err
    assert "moved or copied" in err and not marker.exists()
    assert not (out / ".masksep.lock").exists()


def test_resume_refuses_ray_state_that_another_sweep_owns(tmp_path, spec_path, capsys):
    out, marker = tmp_path / "out", tmp_path / "pwned"
    started_sweep(spec_path, out, out / "ray", "feedface", marker)  # same name, another sweep's uid
    assert main(["sweep", str(spec_path), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not the Ray state of the sweep" in err and "0badc0de" in err
    assert not marker.exists()
    (out / "ray" / "s" / "masksep-sweep.json").unlink()  # and one without an owner file
    assert main(["sweep", str(spec_path), "--out", str(out), "--resume"]) == 2
    assert "is not the Ray state of the sweep" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_refuses_a_folder_started_from_another_spec(tmp_path, spec_path, capsys):
    out, marker = tmp_path / "out", tmp_path / "pwned"
    started_sweep(spec_path, out, out / "ray", "0badc0de", marker)
    changed = tmp_path / "changed.yaml"
    changed.write_text(spec_path.read_text().replace("epochs: 2", "epochs: 3"))
    assert main(["sweep", str(changed), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and err.count("\n") == 1 and not marker.exists()
