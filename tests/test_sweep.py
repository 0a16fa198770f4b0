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
    # Ray's lines that mean nothing to a masksep user are not printed: TensorBoard's
    # hint at a temp folder of the driver, the local Ray's token-auth notice.
    printed = done.stdout + done.stderr
    assert "tensorboard --logdir" not in printed and "Token authentication" not in printed, printed
    # Tune keeps its own result files (ExperimentAnalysis reads them), and only those.
    first = trial_dirs(out)[0]
    assert (first / "result.json").is_file() and (first / "progress.csv").is_file()
    assert not list(first.glob("events.out.tfevents*"))

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


def test_a_study_makes_each_seeds_data_once_and_drops_it_when_done(tmp_path, ray_env):
    spec = write_spec(
        tmp_path / "spec.yaml", num_samples=None, repeats=2,
        study={"reference": "shallow", "claims": {"deep": "deep-d3"}, "milestones": [4, 12],
               "variants": {"shallow": {"head.kind": "shallow"},
                            "deep-d3": {"head.kind": "deep", "head.depth": 3, "head.width": 16},
                            "og-p3": {"head.kind": "og", "head.oversep": 3}}},
    )
    out = tmp_path / "out"
    done = sweep(ray_env, spec, "--out", out, "--num-cpus", 2, "--no-wandb")
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads((d / "summary.json").read_text()) for d in trial_dirs(out)]
    assert len(summaries) == 6
    # budget milestones: every trial scored at 4 and 12 steps, collected and reported
    assert all([m["steps"] for m in s["milestones"]] == [4, 12] for s in summaries)
    marks = (out / "milestones.csv").read_text().splitlines()
    assert len(marks) == 1 + 6 * 2
    by_budget = (out / "claims_by_budget.csv").read_text()
    assert by_budget.count("1. deep > shallow") == 2
    assert (out / "claims_by_budget.png").is_file() and (out / "convergence.csv").is_file()
    files = TINY_BASE["train"]["epochs"] + 2  # the training epochs, validation and test
    for seed in (0, 1):
        at_seed = [s["data_cache"] for s in summaries if s["seed"] == seed]
        assert len(at_seed) == 3
        assert sum(c["made"] for c in at_seed) == files  # each file made by one trial only
        assert all(c["made"] + c["read"] == files for c in at_seed)  # and read by the others
    assert not (out / "ray" / "t" / "data-cache").exists()  # not a result: dropped at the end


def test_a_tuned_study_tunes_each_variant_on_its_own_seeds_then_runs_the_study(tmp_path, ray_env):
    spec = write_spec(
        tmp_path / "spec.yaml", num_samples=None, repeats=2,
        study={"reference": "shallow", "claims": {"deep": "deep-d3"},
               "variants": {"shallow": {"head.kind": "shallow"},
                            "deep-d3": {"head.kind": "deep", "head.depth": 3, "head.width": 16}},
               "tuning": {"search_space": {"train.lr": {"loguniform": [3.0e-4, 3.0e-3]}},
                          "by_head": {"deep": {"head.width": {"choice": [8, 16, 32]}}},
                          "search": "optuna-tpe", "trials": 3, "startup_trials": 1, "seed": 50,
                          "asha": {"grace_period": 1}}},
    )
    out = tmp_path / "out"
    done = sweep(ray_env, spec, "--out", out, "--num-cpus", 2, "--no-wandb", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    tuned = json.loads((out / "tuned.json").read_text())
    assert set(tuned) == {"shallow", "deep-d3"}
    assert set(tuned["shallow"]) == {"train.lr"} and set(tuned["deep-d3"]) == {"train.lr", "head.width"}
    for variant in tuned:  # the same number of tuning trials per variant, on the tuning seed only
        folder = out / "tuning" / variant
        rows, _ = read_trials(folder / "trials.csv")
        assert len(rows) == 3 and {r["seed"] for r in rows} == {50}
        # the chosen point is the tuning trial best on validation among those that finished
        done_rows = [r for r in rows if r["status"] == "completed"]
        best = max(done_rows, key=lambda r: r["best_val_si_snri"])
        assert tuned[variant]["train.lr"] == pytest.approx(best["searched.train.lr"])
        # the search said how much of it was random start-up (1 of its 3 points)
        text = (folder / "summary.md").read_text()
        assert "TPE's first 1 of 3 configurations were random" in text
    # the study: every variant at its tuned setting, on the test seeds 0 and 1
    rows, _ = read_trials(out / "trials.csv")
    assert len(rows) == 4 and {r["seed"] for r in rows} == {0, 1}
    for d in trial_dirs(out):
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        variant = json.loads((d / "searched.json").read_text())["variant"]
        assert cfg["train"]["lr"] == pytest.approx(tuned[variant]["train.lr"])
        if variant == "deep-d3":
            assert cfg["head"]["width"] == tuned[variant]["head.width"]
    text = (out / "summary.md").read_text()
    assert "## Tuned settings" in text and "### What each search saw" in text and "## Claims" in text


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


# --------------------------------------------------------------------------- kill and resume

FAULT_BASE = {**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 3}}
FAULT_SPACE = {"head.kind": {"choice": ["shallow", "deep"]},
               "head.depth": {"int": [2, 3], "when": {"head.kind": ["deep"]}},
               "train.lr": {"loguniform": [5e-4, 2e-3]}}


def start_sweep(env, spec, out, log_path, *extra, pause=None):
    """A sweep driver in its own session (so that killing it takes its Ray along);
    ``pause`` makes the first trial to reach that point stop there (sweep/trial.py)."""
    env = dict(env)
    if pause:
        pause_dir = out.parent / f"pause-{log_path.stem}"
        pause_dir.mkdir()
        env.update(MASKSEP_TEST_PAUSE=pause, MASKSEP_TEST_PAUSE_DIR=str(pause_dir))
    cmd = [sys.executable, "-m", "masksep.cli", "sweep", str(spec), "--out", str(out),
           "--num-cpus", "2", "--no-wandb", *extra]
    return subprocess.Popen(cmd, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_for(driver, log_path, what, ready, timeout=300):
    """Poll ``ready()`` every 50 ms (a state, never a sleep of a guessed length)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert driver.poll() is None, f"the sweep ended before {what}:\n" + log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n" + log_path.read_text()[-3000:]
        time.sleep(0.05)


def kill_driver(driver, env):
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
    driver.wait()
    _kill_ours(Path(env["RAY_TMPDIR"]))


def complete_in_optuna_db(out: Path) -> int:
    if not (out / "optuna.db").is_file():
        return 0
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{out / 'optuna.db'}")
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def kill_at(env, spec, out, log_path, point, *extra):
    """Run the sweep until ``point``, then kill its driver; the finished trials' summary mtimes."""
    if point == "optuna-export":  # the driver told Optuna a trial finished (issue 8, case a)
        driver = start_sweep(env, spec, out, log_path, *extra)
        wait_for(driver, log_path, "COMPLETE trial in optuna.db", lambda: complete_in_optuna_db(out) >= 1)
    else:
        driver = start_sweep(env, spec, out, log_path, *extra, pause=point)
        pause_dir = out.parent / f"pause-{log_path.stem}"
        wait_for(driver, log_path, f"trial paused at {point}", lambda: any(pause_dir.glob("*.paused")))
    kill_driver(driver, env)
    assert json.loads((out / "sweep.json").read_text())["status"] == "running"
    return {d.name: (d / "summary.json").stat().st_mtime for d in trial_dirs(out)
            if (d / "summary.json").is_file()}


def epochs_trained(trial: Path) -> list[int]:
    """Every epoch any attempt of the trial finished (its attempts.json, over all restarts)."""
    attempts = json.loads((trial / "attempts.json").read_text())
    return [epoch for attempt in attempts for epoch in attempt["epochs"]]


def check_resumed(out: Path, finished_before: dict[str, float], num_samples: int = 4) -> None:
    rows, _ = read_trials(out / "trials.csv")
    assert len(rows) == num_samples and len(trial_dirs(out)) == num_samples
    assert all(r["status"] == "completed" for r in rows), [(r["trial_id"], r["status"]) for r in rows]
    for name, mtime in finished_before.items():  # finished trials were not run again
        assert (out / "ray" / "t" / name / "summary.json").stat().st_mtime == mtime, name
    for d in trial_dirs(out):  # no trial trained a finished epoch twice
        epochs = [json.loads(line)["epoch"] for line in (d / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3], (d.name, epochs)
        trained = epochs_trained(d)
        assert len(trained) == len(set(trained)), (d.name, trained)
    assert complete_in_optuna_db(out) == num_samples
    assert json.loads((out / "sweep.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("point", ["summary", "checkpoint:2", "mid-epoch:2"])
def test_a_driver_killed_at_each_fault_point_resumes_to_exactly_the_trials_asked_for(
        tmp_path, ray_env, point):
    spec = write_spec(tmp_path / "spec.yaml", scheduler="none", base=FAULT_BASE,
                      search_space=FAULT_SPACE, wandb={"mode": "offline"})
    out = tmp_path / "out"
    finished = kill_at(ray_env, spec, out, tmp_path / "first.log", point)
    resumed = sweep(ray_env, spec, "--out", out, "--num-cpus", 2, "--no-wandb", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    check_resumed(out, finished)
    # --resume honours this invocation's --no-wandb (the first run was offline W&B)
    assert not (out / "wandb").exists()


@pytest.mark.parametrize("num_samples", [2, 4])
def test_ctrl_c_leaves_the_sweep_interrupted_and_resume_finishes_it(tmp_path, ray_env, num_samples):
    """Tune catches SIGINT and returns from fit() as if done: the sweep must say
    interrupted (not finished), exit 130, and --resume must run what is left. With 2
    samples every trial exists when the signal comes (Tune marks them all terminated as
    it stops them); with 4 some are still to be proposed."""
    spec = write_spec(tmp_path / "spec.yaml", scheduler="none", base=FAULT_BASE,
                      search_space=FAULT_SPACE, num_samples=num_samples)
    out, log = tmp_path / "out", tmp_path / "first.log"
    driver = start_sweep(ray_env, spec, out, log, pause="pause-once:checkpoint:2")
    pause_dir = tmp_path / "pause-first"
    wait_for(driver, log, "trial paused at checkpoint:2", lambda: any(pause_dir.glob("*.paused")))
    finished = {d.name: (d / "summary.json").stat().st_mtime for d in trial_dirs(out)
                if (d / "summary.json").is_file()}
    os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C sends: the terminal's whole foreground group
    try:
        rc = driver.wait(timeout=300)
    finally:
        _kill_ours(Path(ray_env["RAY_TMPDIR"]))
    text = log.read_text()
    assert rc == 130, text[-3000:]
    assert json.loads((out / "sweep.json").read_text())["status"] == "interrupted", text[-3000:]
    assert f"masksep sweep {spec} --out {out} --resume" in text, text[-3000:]
    assert not (out / "summary.md").exists()  # no report of a sweep that did not finish
    resumed = sweep(ray_env, spec, "--out", out, "--num-cpus", 2, "--no-wandb", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "already finished" not in resumed.stdout
    check_resumed(out, finished, num_samples)
    # Both driver runs recorded their time (Ctrl-C is caught), so the wall time is whole.
    drivers = json.loads((out / "sweep.json").read_text())["drivers"]
    assert len(drivers) == 2 and all(d["wall_s"] > 0 for d in drivers)
    assert "over 2 driver runs (resumed)" in (out / "summary.md").read_text()


def test_a_sweep_its_time_budget_ended_has_finished_not_been_interrupted(tmp_path, ray_env):
    """A time budget stops trials and leaves the rest unproposed, by design: that is
    the end of the sweep (exit 0, a report), not an interruption."""
    spec = write_spec(tmp_path / "spec.yaml", scheduler="none", base=FAULT_BASE,
                      search_space=FAULT_SPACE, num_samples=6, time_budget_s=1)
    out = tmp_path / "out"
    done = sweep(ray_env, spec, "--out", out, "--num-cpus", 2, "--no-wandb")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert json.loads((out / "sweep.json").read_text())["status"] == "finished"
    rows, _ = read_trials(out / "trials.csv")  # however many had started when the budget ran out
    assert len(rows) < 6 and (out / "summary.md").is_file()


def test_kill_resume_kill_resume_and_a_finished_sweep_resumes_to_nothing(tmp_path, ray_env):
    spec = write_spec(tmp_path / "spec.yaml", scheduler="none", base=FAULT_BASE,
                      search_space=FAULT_SPACE)
    out = tmp_path / "out"
    kill_at(ray_env, spec, out, tmp_path / "first.log", "optuna-export")
    finished = kill_at(ray_env, spec, out, tmp_path / "second.log", "checkpoint:3", "--resume")
    # A trial folder Tune's snapshot cannot know, as if it started after the last save.
    ghost = out / "ray" / "t" / "trial_deadbeef"
    (ghost / "checkpoints").mkdir(parents=True)
    (ghost / "metrics.jsonl").write_text("")
    resumed = sweep(ray_env, spec, "--out", out, "--num-cpus", 2, "--no-wandb", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "trial_deadbeef" in resumed.stdout and "orphaned" in resumed.stdout
    # (trials started after the second run's last snapshot are set aside too)
    orphaned = {p.name.split("-")[0] for p in (out / "orphaned").iterdir()}
    assert "trial_deadbeef" in orphaned and not orphaned & {d.name for d in trial_dirs(out)}
    check_resumed(out, finished)
    # The killed driver runs recorded no time: the report does not pretend to know it.
    assert [d["wall_s"] is None for d in json.loads((out / "sweep.json").read_text())["drivers"]
            ] == [True, True, False]
    assert "Sweep wall time not known in full" in (out / "summary.md").read_text()
    before = sorted(p.stat().st_mtime for p in out.rglob("*") if p.is_file())
    again = sweep(ray_env, spec, "--out", out, "--num-cpus", 2, "--no-wandb", "--resume")
    assert again.returncode == 0 and "already finished" in again.stdout, again.stderr[-2000:]
    assert sorted(p.stat().st_mtime for p in out.rglob("*") if p.is_file()) == before
    # a different spec cannot resume this sweep
    changed = write_spec(tmp_path / "spec.yaml", scheduler="none", search_space=FAULT_SPACE,
                         base={**FAULT_BASE, "train": {**FAULT_BASE["train"], "epochs": 4}})
    refused = sweep(ray_env, changed, "--out", out, "--resume")
    assert refused.returncode == 2 and "train.epochs" in refused.stderr, refused.stderr[-2000:]
    assert refused.stderr.count("\n") == 1


def test_retry_failed_runs_a_finished_sweeps_failed_trial_again_from_its_checkpoint(tmp_path, ray_env):
    # The trial fails half-way through epoch 2 (a test point, deterministic) with no retry
    # left: the sweep finishes with it failed, as the converged study's trials did on a full
    # disk. --retry-failed runs it again from its epoch-1 checkpoint, in the same folder.
    spec = write_spec(tmp_path / "spec.yaml", num_samples=1, scheduler="none", search="grid",
                      max_failures=0, base=FAULT_BASE, search_space={"head.kind": {"grid": ["deep"]}})
    out, pause_dir = tmp_path / "out", tmp_path / "pause"
    pause_dir.mkdir()
    env = {**ray_env, "MASKSEP_TEST_PAUSE": "fail-once:mid-epoch:2", "MASKSEP_TEST_PAUSE_DIR": str(pause_dir)}
    failed = sweep(env, spec, "--out", out, "--num-cpus", 2, "--no-wandb")
    assert failed.returncode == 0, failed.stderr[-3000:]
    assert [r["status"] for r in read_trials(out / "trials.csv")[0]] == ["failed"]
    assert json.loads((out / "sweep.json").read_text())["status"] == "finished"
    (trial,) = trial_dirs(out)
    epoch_1 = (trial / "metrics.jsonl").read_text().splitlines()[0]  # its epoch_s is a timing
    plain = sweep(env, spec, "--out", out, "--num-cpus", 2, "--no-wandb", "--resume")
    assert plain.returncode == 0 and "already finished" in plain.stdout, plain.stderr[-2000:]

    retried = sweep(env, spec, "--out", out, "--num-cpus", 2, "--no-wandb", "--retry-failed")
    assert retried.returncode == 0, retried.stdout[-2000:] + retried.stderr[-3000:]
    assert "finished with 1 failed trial(s); running them again" in retried.stdout
    rows, _ = read_trials(out / "trials.csv")
    assert [r["status"] for r in rows] == ["completed"] and rows[0]["test_si_snri"] is not None
    # epoch 1 was not trained again (the same line, timing and all): the retry went on
    # from its checkpoint
    lines = (trial / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3] and lines[0] == epoch_1
    state = json.loads((out / "sweep.json").read_text())
    assert state["status"] == "finished" and len(state["drivers"]) == 2
    assert all(d["wall_s"] is not None for d in state["drivers"])
    again = sweep(env, spec, "--out", out, "--num-cpus", 2, "--no-wandb", "--retry-failed")
    assert again.returncode == 0 and "none of its trials failed" in again.stdout, again.stderr[-2000:]


# --------------------------------------------------------------------------- W&B that fails

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # W&B keys are 40 characters


def files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_wandb_online_with_no_server_goes_offline_at_once_and_keeps_every_metric(tmp_path, ray_env):
    from raycluster import free_ports

    (port,) = free_ports(1)  # nothing listens there
    env = {**ray_env, "WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": f"http://127.0.0.1:{port}"}
    env.pop("WANDB_MODE")
    spec = write_spec(tmp_path / "spec.yaml", num_samples=2, scheduler="none",
                      search_space={"head.kind": {"choice": ["shallow", "deep"]}},
                      wandb={"mode": "online"})
    out = tmp_path / "out"
    done = sweep(env, spec, "--out", out, "--num-cpus", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"127.0.0.1:{port}" in done.stdout and "offline" in done.stdout
    assert "wandb sync" in done.stdout
    rows, _ = read_trials(out / "trials.csv")
    trials = [run_info(r) for r in sorted((out / "wandb").glob("offline-run-*"))
              if not r.name.endswith("-summary")]
    assert len(trials) == len(rows) == 2
    for info in trials:  # every epoch each trial reported is in its offline run
        trial_id = info["config"]["trial_id"]
        epochs = [h["epoch"] for h in info["history"] if "epoch" in h]
        on_disk = (out / "ray" / "t" / f"trial_{trial_id}" / "metrics.jsonl").read_text().splitlines()
        assert epochs == [json.loads(line)["epoch"] for line in on_disk] == [1, 2, 3]
        assert info["summary"]["status"] == "completed" and "test_si_snri" in info["summary"]
    assert not files_holding(out, FAKE_KEY)
    # and W&B's own sync finds every run to upload
    runs = sorted(str(p) for p in (out / "wandb").glob("offline-run-*"))
    dry = subprocess.run([str(Path(sys.executable).parent / "wandb"), "sync", "--dry-run", *runs],
                         env=env, capture_output=True, text=True, timeout=120)
    assert f"Would sync {len(runs)} run(s)" in dry.stdout + dry.stderr, dry.stdout + dry.stderr


def test_a_failed_and_retried_trial_keeps_every_metric_in_wandb(tmp_path, ray_env):
    # The trial fails once half-way through epoch 2 (a test point, deterministic) and Tune
    # retries it (max_failures 1; Tune recovers it without ending its logging run): the
    # retry's points reach the same W&B run, which holds every epoch the trial reported.
    spec = write_spec(tmp_path / "spec.yaml", num_samples=1, scheduler="none", search="grid",
                      max_failures=1, base={**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 3}},
                      search_space={"head.kind": {"grid": ["deep"]}})
    out = tmp_path / "out"
    pause_dir = tmp_path / "pause"
    pause_dir.mkdir()
    env = {**ray_env, "MASKSEP_TEST_PAUSE": "fail-once:mid-epoch:2", "MASKSEP_TEST_PAUSE_DIR": str(pause_dir)}
    done = sweep(env, spec, "--out", out, "--num-cpus", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(pause_dir.glob("*.paused"))) == 1  # it did fail once
    rows, _ = read_trials(out / "trials.csv")
    assert [r["status"] for r in rows] == ["completed"]
    runs = [run_info(r) for r in sorted((out / "wandb").glob("offline-run-*"))
            if not r.name.endswith("-summary")]
    epochs = sorted(h["epoch"] for info in runs for h in info["history"] if "epoch" in h)
    assert epochs == [1, 2, 3], [info["history"] for info in runs]
    assert "completed" in [info["summary"].get("status") for info in runs]


def test_a_refused_key_falls_back_offline_under_a_new_run_id(tmp_path, monkeypatch):
    import http.server
    import threading

    from masksep.sweep.tracking import init_run

    class Refuse(http.server.BaseHTTPRequestHandler):
        def _refuse(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"errors": [{"message": "invalid api key"}]}')

        do_GET = do_POST = _refuse

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    target = {"project": "p", "group": "g", "mode": "online", "dir": str(tmp_path)}
    start = time.monotonic()
    run = init_run(target, run_id="abc-t1", name="n", job_type="trial", config={"head.kind": "deep"})
    assert run is not None and time.monotonic() - start < 30
    assert run.id.startswith("abc-t1-offline-")  # not the id the refused attempt holds
    run.define_metric("*", step_metric="epoch")
    for epoch in (1, 2, 3):
        run.log({"epoch": epoch, "val_si_snri": float(epoch)})
    run.finish()
    server.shutdown()
    (offline,) = (tmp_path / "wandb").glob("offline-run-*")
    info = run_info(offline)
    assert [h["epoch"] for h in info["history"]] == [1, 2, 3]
    assert not files_holding(tmp_path, FAKE_KEY)


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
    # report; Tune, the searcher and ASHA (time attribute: epoch) still need it.
    from ray import tune

    from masksep.sweep.spec import FINAL_KEYS, METRIC
    from masksep.sweep.trial import TuneReporter

    sent = []
    monkeypatch.setattr(tune, "report", lambda metrics, **kwargs: sent.append(metrics))
    reporter = TuneReporter({"trial_id": "t1"})
    reporter.start({"complexity": {"params": 123, "head_macs_per_s": 4.0}})
    reporter.end({key: float(i) for i, key in enumerate(FINAL_KEYS, 1)} | {"seed": 0, "epochs": 7})
    assert len(sent) == 1 and sent[0]["final"] is True
    assert sent[0][METRIC] == 1.0 and sent[0]["params"] == 123 and sent[0]["trial_id"] == "t1"
    assert sent[0]["epoch"] == 7
