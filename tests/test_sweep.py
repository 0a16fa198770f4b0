"""Sweeps on a real local Ray: Optuna + ASHA + W&B offline, failures, kill and resume.

Each test's Ray runs in a temp dir of its own (RAY_TMPDIR), and only the
processes started under it are ever stopped.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from masksep.report import read_trials
from masksep.sweep.spec import load_spec

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402
from wandb_offline import run_info  # noqa: E402

pytestmark = pytest.mark.slow

TINY_BASE = {
    **tiny.MODEL,
    "data": {"segment_s": 0.25, "train_items": 16, "valid_items": 4, "test_items": 4, "eval_seconds": 0.5},
    "train": {"epochs": 3, "batch_size": 4},
}


def write_spec(path: Path, **fields) -> Path:
    spec = {"name": "t", "base": TINY_BASE, "num_samples": 4, "max_concurrent_trials": 2,
            "resources": {"cpus": 1}, "wandb": {"mode": "offline"}, **fields}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    load_spec(path)  # the test's own spec must be valid
    return path


@pytest.fixture
def ray_env(tmp_path_factory, monkeypatch):
    """A private RAY_TMPDIR (short: Ray's socket paths must stay under ~100 chars)."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="mst-", dir="/tmp"))
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    yield env
    _kill_ours(tmp)


def _pids_under(tmp: Path) -> list[int]:
    """Processes whose command line names our temp dir: the Ray we started."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(tmp) in cmdline and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


def _kill_ours(tmp: Path) -> None:
    for pid in _pids_under(tmp):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sweep(env, *args, timeout=400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "masksep.cli", "sweep", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def trial_dirs(out: Path, name: str = "t") -> list[Path]:
    return sorted((out / "ray" / name).glob("trial_*"))


def test_optuna_asha_sweep_with_wandb_offline(tmp_path, ray_env):
    spec = write_spec(
        tmp_path / "spec.yaml",
        search_space={"head.kind": {"choice": ["shallow", "deep", "og"]},
                      "head.depth": {"int": [2, 3], "when": {"head.kind": ["deep"]}},
                      "head.oversep": {"choice": [3, 4], "when": {"head.kind": "og"}}},
        initial_points=[{"head.kind": "og", "head.oversep": 4}],
        scheduler="asha", asha={"grace_period": 1, "reduction_factor": 2},
    )
    out = tmp_path / "out"
    done = sweep(ray_env, spec, "--out", out, "--num-cpus", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "report:" in done.stdout and "wandb sync" in done.stdout

    rows, columns = read_trials(out / "trials.csv")
    assert len(rows) == 4
    assert {"searched.head.kind", "head", "depth", "oversep", "head_macs_per_s", "best_val_si_snri",
            "test_si_snri", "status", "wall_s", "seed"} <= set(columns)
    assert all(r["status"] in ("completed", "stopped") for r in rows)
    assert any(r["status"] == "completed" for r in rows)
    og = [r for r in rows if r["head"] == "og"]
    assert og and og[0]["oversep"] == 4  # the initial point ran first
    for name in ("pareto.csv", "summary.md", "tradeoff.png", "depth_vs_oversep.png"):
        assert (out / name).is_file(), name

    # Optuna's study is on disk and reopens with optuna itself
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == 4
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert finished and all(t.value is not None for t in finished)
    assert {t.params["head.kind"] for t in study.trials} <= {"shallow", "deep", "og"}

    # every trial is a W&B run in the sweep's group, with its per-epoch metrics streamed
    runs = sorted((out / "wandb").glob("offline-run-*"))
    trials = [run_info(r) for r in runs if not r.name.endswith("-summary")]
    assert len(trials) == 4
    for info, row in zip(sorted(trials, key=lambda i: i["run"].run_id.split("-")[-1]),
                         sorted(rows, key=lambda r: r["trial_id"]), strict=True):
        assert info["run"].run_group == "t" and info["run"].job_type == "trial"
        assert info["config"]["head.kind"] == row["head"]
        assert info["config"]["head_macs_per_s"] == row["head_macs_per_s"]
        epochs = [h["epoch"] for h in info["history"] if "epoch" in h]
        assert epochs == list(range(1, int(row["epochs"]) + 1))
        assert [h["val_si_snri"] for h in info["history"]][-1] == pytest.approx(
            json.loads((out / "ray" / "t" / f"trial_{row['trial_id']}" / "metrics.jsonl")
                       .read_text().splitlines()[-1])["val_si_snri"], abs=1e-6)
        assert info["summary"]["status"] == row["status"]
        if row["status"] == "completed":
            assert info["summary"]["test_si_snri"] == pytest.approx(row["test_si_snri"], abs=1e-3)
    summary_run = [r for r in runs if r.name.endswith("-summary")]
    assert len(summary_run) == 1 and run_info(summary_run[0])["run"].job_type == "sweep"
    # and no API key went anywhere
    assert "WANDB_API_KEY" not in (out / "sweep.json").read_text()


def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path, ray_env):
    # data.kind librimix with a root that does not exist: that trial raises at start
    base = {**TINY_BASE, "data": {**TINY_BASE["data"], "root": str(tmp_path / "no-corpus")}}
    spec = write_spec(tmp_path / "spec.yaml", base=base, search="grid", scheduler="none",
                      num_samples=1, max_failures=0,
                      search_space={"data.kind": {"grid": ["synthetic", "librimix"]}})
    out = tmp_path / "out"
    done = sweep(ray_env, spec, "--out", out, "--num-cpus", 2, "--no-wandb")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FAILED" in done.stdout
    rows, _ = read_trials(out / "trials.csv")
    by_kind = {r["searched.data.kind"]: r for r in rows}
    assert by_kind["synthetic"]["status"] == "completed"
    assert by_kind["synthetic"]["test_si_snri"] is not None
    assert by_kind["librimix"]["status"] == "failed"
    assert "no-corpus" in by_kind["librimix"]["error"]
    assert "no-corpus" in (out / "summary.md").read_text()
    assert not (out / "wandb").exists()


def test_a_killed_driver_resumes_without_rerunning_trials(tmp_path, ray_env):
    spec = write_spec(tmp_path / "spec.yaml", num_samples=4, max_concurrent_trials=1,
                      scheduler="none", base={**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 4}},
                      search_space={"head.kind": {"choice": ["shallow", "deep"]}})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "masksep.cli", "sweep", str(spec), "--out", str(out),
           "--num-cpus", "2", "--no-wandb"]
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(cmd, env=ray_env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.monotonic() + 300
    # kill once a trial has finished and another is part way through
    while time.monotonic() < deadline:
        finished = [d for d in trial_dirs(out) if (d / "summary.json").is_file()]
        running = [d for d in trial_dirs(out) if not (d / "summary.json").is_file()
                   and (d / "metrics.jsonl").is_file() and (d / "metrics.jsonl").read_text().strip()]
        if finished and running:
            break
        assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.5)
    else:
        pytest.fail("the sweep never had a finished and a running trial")
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    _kill_ours(Path(ray_env["RAY_TMPDIR"]))
    done_before = {d.name: (d / "summary.json").stat().st_mtime for d in finished}
    state = json.loads((out / "sweep.json").read_text())
    assert state["status"] == "running"  # what a killed driver leaves behind

    resumed = sweep(ray_env, spec, "--out", out, "--num-cpus", 2, "--no-wandb", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows, _ = read_trials(out / "trials.csv")
    assert len(rows) == 4 and len(trial_dirs(out)) == 4
    assert all(r["status"] == "completed" for r in rows)
    for name, mtime in done_before.items():  # finished trials were not run again
        assert (out / "ray" / "t" / name / "summary.json").stat().st_mtime == mtime
    for d in trial_dirs(out):  # and no trial trained an epoch twice
        epochs = [json.loads(line)["epoch"] for line in (d / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3, 4], (d.name, epochs)
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{out / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4


def test_bad_specs_and_folders_are_one_line(tmp_path, ray_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nsearch_space: {head.depth: {int: [0, 2]}}\n")
    done = sweep(ray_env, bad, "--out", tmp_path / "out")
    assert done.returncode == 2
    assert "bad.yaml: search_space.head.depth" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()
    good = write_spec(tmp_path / "good.yaml", search_space={"head.kind": {"choice": ["shallow"]}})
    done = sweep(ray_env, good, "--out", tmp_path / "none", "--resume")
    assert done.returncode == 2 and "no sweep here" in done.stderr


def test_the_final_report_carries_the_objective_even_without_an_epoch(monkeypatch):
    # A trial resumed after its last epoch reports no epoch before its final
    # report; Tune (and the searcher) still need the objective in it.
    from ray import tune

    from masksep.sweep.runner import TuneReporter
    from masksep.sweep.spec import FINAL_KEYS, METRIC

    sent = []
    monkeypatch.setattr(tune, "report", lambda metrics, **kwargs: sent.append(metrics))
    reporter = TuneReporter({"trial_id": "t1"})
    reporter.start({"complexity": {"params": 123, "head_macs_per_s": 4.0}})
    reporter.end({key: float(i) for i, key in enumerate(FINAL_KEYS, 1)} | {"seed": 0})
    assert len(sent) == 1 and sent[0]["final"] is True
    assert sent[0][METRIC] == 1.0 and sent[0]["params"] == 123 and sent[0]["trial_id"] == "t1"
