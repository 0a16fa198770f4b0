"""masksep submit: what a job carries, clear errors, and a sweep on a real
multi-node Ray cluster (loopback, token auth) that loses a node mid-sweep.

The cluster is tests/raycluster.py: a head (dashboard, token authentication)
and a worker node with its own custom resource ``w``, so that every trial lands
there. Its raylet is killed while the trials train; a replacement node with
the same resource joins, the trials are retried from their checkpoints, and the
job still succeeds. The fixture's teardown checks that none of the cluster's
processes is left.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from masksep.sweep import spec as spec_mod
from masksep.sweep import submit as C

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402
from raycluster import RAY, LoopbackCluster, free_ports  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    **tiny.MODEL,
    "data": {"segment_s": 0.25, "train_items": 16, "valid_items": 4, "test_items": 4,
             "eval_seconds": 0.5},
    "train": {"epochs": 3, "batch_size": 4},
}


def write_spec(path: Path, **fields) -> Path:
    data = {"name": "tiny", "search": "grid", "scheduler": "none", "base": TINY,
            "search_space": {"head.kind": {"grid": ["shallow", "deep"]}}, **fields}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def masksep(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "masksep", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line a refused submit prints (Ray's INFO lines about packaging aside)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("masksep:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("masksep: error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- what a job carries


def test_job_carries_project_spec_and_dependencies_but_no_wandb_key(tmp_path, monkeypatch):
    trial = tmp_path / "trial.yaml"
    trial.write_text(yaml.safe_dump({**TINY, "head": {"kind": "deep", "depth": 2}}))
    spec_path = write_spec(tmp_path / "s.yaml", base="trial.yaml", trial={"train.lr": 0.002})
    monkeypatch.setenv("WANDB_API_KEY", "secret-key-123")

    job = C.prepare_job(spec_path, "/abs/out", storage_path="s3://bucket/x", resume=True,
                        use_wandb=False, env=["WANDB_MODE=offline"])
    env = job.runtime_env
    assert env["working_dir"] == str(ROOT)
    assert {".venv", ".git", "runs", "wandb", "__pycache__", "results/*/ray"} <= set(env["excludes"])
    names = {C._requirement_name(r) for r in env["pip"]}
    assert {"torch", "optuna", "wandb", "numpy"} <= names and "ray" not in names
    assert env["env_vars"]["WANDB_MODE"] == "offline"
    assert "secret-key-123" not in json.dumps(env) + job.entrypoint
    assert job.shown.endswith("--out /abs/out --resume --no-wandb --storage-path s3://bucket/x")
    assert job.shown.startswith("python -m masksep sweep .masksep-jobs/")

    # The spec inside the entrypoint is self-contained: the base config it
    # named by path is inlined, and it loads to the same trial configs.
    inline = tmp_path / "elsewhere" / "inline.yaml"
    inline.parent.mkdir()
    inline.write_text(spec_mod.self_contained_yaml(spec_mod.load_spec(spec_path)))
    assert "trial.yaml" not in inline.read_text()
    a, b = spec_mod.load_spec(spec_path), spec_mod.load_spec(inline)
    assert a.bases == b.bases and a.name == b.name == "tiny"
    assert a.trial_config({"head.kind": "shallow"}) == b.trial_config({"head.kind": "shallow"})
    assert b.bases["default"].head.depth == 2 and b.bases["default"].train.lr == 0.002

    # The entrypoint's shell part writes exactly that spec (run here, sweep command left out).
    workdir = tmp_path / "job"
    workdir.mkdir()
    writer = job.entrypoint.rsplit("\n", 1)[0]
    subprocess.run(["sh", "-c", writer], cwd=workdir, check=True)
    written = workdir / job.shown.split()[4]
    assert spec_mod.load_spec(written).bases == a.bases

    forwarded = C.prepare_job(spec_path, "/abs/out", forward_wandb_key=True)
    assert forwarded.runtime_env["env_vars"]["WANDB_API_KEY"] == "secret-key-123"
    assert "pip" not in C.prepare_job(spec_path, "/abs/out", pip=False).runtime_env


def test_submit_refuses_bad_input_in_one_line(tmp_path):
    spec_path = write_spec(tmp_path / "s.yaml")
    (port,) = free_ports(1)  # nothing listens there
    cases = {
        "connection refused": ["--address", f"http://127.0.0.1:{port}", "--out", "/abs/out"],
        "cannot resolve": ["--address", "http://no-such-head.invalid:8265", "--out", "/abs/out"],
        "absolute path": ["--address", f"127.0.0.1:{port}", "--out", "relative/out"],
    }
    for expected, args in cases.items():
        line = one_error_line(masksep("submit", str(spec_path), *args))
        assert expected in line, line
    bad_spec = tmp_path / "bad.yaml"
    bad_spec.write_text("name: x\nsearch_space: {head.kind: {grid: [shallow]}}\nresources: {gpus: -1}\n")
    line = one_error_line(masksep("submit", str(bad_spec), "--address", "http://127.0.0.1:1",
                                  "--out", "/abs/out"))
    assert "resources.gpus" in line


# --------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def ray_cluster():
    cluster = LoopbackCluster()
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_node("w1", num_cpus=2, resources={"w": 2})
        cluster.wait_for_resource("w", 2)
        yield cluster
    finally:
        left = cluster.stop()
        assert not left, f"processes of the test's Ray cluster still running: {left}"


@pytest.mark.slow
def test_submit_names_token_and_address_problems(ray_cluster, tmp_path):
    spec_path = write_spec(tmp_path / "s.yaml")
    args = ["submit", str(spec_path), "--out", str(tmp_path / "out"), "--no-pip"]
    # RAY_AUTH_MODE=token forgotten: the client sends no token, 401.
    env = {k: v for k, v in ray_cluster.env.items() if not k.startswith("RAY_AUTH_")}
    line = one_error_line(masksep(*args, "--address", ray_cluster.dashboard, env=env))
    assert "needs a Ray auth token" in line and "RAY_AUTH_MODE=token" in line
    # A token, but not the cluster's: 403.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="f" * 64)
    line = one_error_line(masksep(*args, "--address", ray_cluster.dashboard, env=env))
    assert "refused the Ray auth token" in line
    # The GCS port is not the dashboard.
    line = one_error_line(masksep(*args, "--address", ray_cluster.gcs_address, env=ray_cluster.env))
    assert "not as a Ray dashboard" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_submit_ends_with_the_jobs_status(ray_cluster, tmp_path):
    spec_path = write_spec(tmp_path / "s.yaml")
    # --resume of a folder without a sweep: `masksep sweep` refuses it on the
    # head, the job FAILS, and submit says so last, with exit code 1.
    args = ["submit", str(spec_path), "--address", ray_cluster.dashboard, "--no-pip",
            "--out", str(tmp_path / "nothing"), "--resume"]
    proc = masksep(*args, env=ray_cluster.env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "no sweep here" in proc.stdout  # the job's own error, from its log
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith("masksep: job masksep-tiny-") and " FAILED" in last
    # --no-wait: the submission ID on stdout, and the job is the cluster's to run.
    proc = masksep(*args, "--no-wait", env=ray_cluster.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    submission_id = proc.stdout.strip()
    assert submission_id.startswith("masksep-tiny-")
    status = subprocess.run([RAY, "job", "status", "--address", ray_cluster.dashboard, submission_id],
                            env=ray_cluster.env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and submission_id in status.stdout + status.stderr


def _stored_epochs(trial_dir: Path) -> list[int]:
    """Epochs whose last.pt is in the trial folder (attempts.json lists them)."""
    try:
        return [e for a in json.loads((trial_dir / "attempts.json").read_text()) for e in a["epochs"]]
    except (OSError, ValueError):
        return []


def _results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # being written
            pass
    return rows


@pytest.mark.slow
def test_submitted_sweep_survives_losing_a_node(ray_cluster, tmp_path):
    epochs = 4
    base = {**TINY, "data": {**TINY["data"], "segment_s": 0.5, "train_items": 160},
            "train": {"epochs": epochs, "batch_size": 4}}
    spec_path = write_spec(tmp_path / "s.yaml", name="lossy", base=base, max_concurrent_trials=2,
                           max_failures=2, resources={"cpus": 1, "custom": {"w": 1}})
    out = tmp_path / "out"
    experiment = out / "ray" / "lossy"
    pause_dir = tmp_path / "pause"
    pause_dir.mkdir()
    log = open(tmp_path / "submit.log", "w")
    # Each trial's first attempt stops once epoch 1's last.pt is in storage (the job's
    # env reaches its trials), so the kill below finds both mid-run however loaded the
    # machine is; a retry passes the point.
    proc = subprocess.Popen(
        [sys.executable, "-m", "masksep", "submit", str(spec_path), "--address",
         ray_cluster.dashboard, "--out", str(out), "--no-pip", "--no-wandb",
         "--env", "MASKSEP_TEST_PAUSE=pause-once:checkpoint:1",
         "--env", f"MASKSEP_TEST_PAUSE_DIR={pause_dir}"],
        env=ray_cluster.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        # Kill node w1 once both trials are held there at the point (their markers).
        deadline = time.monotonic() + 240
        while len(list(pause_dir.glob("*.paused"))) < 2:
            assert proc.poll() is None, (tmp_path / "submit.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "trials did not reach epoch 1 on w1"
            time.sleep(0.05)
        trials = sorted(experiment.glob("trial_*"))
        stored = {t.name: _stored_epochs(t) for t in trials}
        assert len(stored) == 2 and all(stored.values()), stored
        w1 = next(n for n in ray_cluster.nodes if n.name == "w1")
        ray_cluster.kill_raylet(w1)
        killed_at = {name: max(epochs) for name, epochs in stored.items()}
        ray_cluster.add_node("w2", num_cpus=2, resources={"w": 2})
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "submit.log").read_text()
    assert proc.returncode == 0, output[-4000:]
    assert output.rstrip().splitlines()[-1].endswith("SUCCEEDED")
    assert "[" in output and "start" in output and "report:" in output  # the job's log, followed

    with open(out / "trials.csv") as f:
        table = {row["trial_id"]: row for row in csv.DictReader(f)}
    assert len(table) == 2 and all(r["status"] == "completed" for r in table.values()), table
    resumed = 0
    for trial_dir in sorted(experiment.glob("trial_*")):
        trial_id = trial_dir.name[len("trial_"):]
        assert json.loads((trial_dir / "summary.json").read_text())["epochs"] == epochs
        history = [json.loads(line)["epoch"] for line in (trial_dir / "metrics.jsonl").open()]
        assert history == list(range(1, epochs + 1))
        assert _results(trial_dir)[-1].get("final") is True
        # Every start of the trial, from its folder: a retry resumes after the last
        # epoch whose last.pt was stored, so no finished epoch is trained twice.
        # (A kill between storing last.pt and listing its epoch leaves that epoch
        # unlisted, and the retry starts after it: hence "at most one more".)
        attempts = json.loads((trial_dir / "attempts.json").read_text())
        trained = [e for a in attempts for e in a["epochs"]]
        assert len(trained) == len(set(trained)) and trained[-1] == epochs, attempts
        if len(attempts) == 1:
            continue
        resumed += 1
        assert int(table[trial_id]["retries"]) >= 1
        assert attempts[0]["epochs"][-1] >= killed_at[trial_dir.name]
        for before, after in zip(attempts, attempts[1:], strict=False):
            last = max(before["epochs"], default=before["start_epoch"] - 1)
            assert last + 1 <= after["start_epoch"] <= last + 2, attempts
    assert resumed == 2, "a trial was not retried after its node was killed"
    assert os.path.isfile(out / "summary.md")
