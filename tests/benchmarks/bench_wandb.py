"""What an unreachable W&B server costs a sweep: the same small sweep with
``--no-wandb``, with W&B offline (``WANDB_MODE=offline``: W&B's own cost, no
server involved) and with W&B online against a local port where nothing
listens (a fake API key), alternated, each a fresh ``masksep sweep`` with its
own Ray.

    python tests/benchmarks/bench_wandb.py [--rounds 2] [--trials 4]

Prints one JSON object: the sweeps' wall times, the medians, the ratios to
``--no-wandb`` (the goal for the unreachable server: at most 1.10) and of the
unreachable server to plain offline, and how many offline runs each W&B sweep
wrote.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spec(path: Path, trials: int) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "wb", "base": str(ROOT / "sweeps" / "trials" / "tcn-deep.yaml"),
        "trial": {"data": {"train_items": 240, "valid_items": 10, "test_items": 10},
                  "train": {"epochs": 3, "early_stop": 0}},
        "search": "grid", "scheduler": "none",
        "search_space": {"head.kind": {"grid": ["shallow", "deep"]}},
        "num_samples": trials // 2, "max_concurrent_trials": 2, "resources": {"cpus": 1},
        "wandb": {"mode": "online"},
    }))
    return path


def run(spec_path: Path, out: Path, arm: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="bw-", dir="/tmp")
    if arm == "unreachable":
        env.update(WANDB_API_KEY="0" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{free_port()}")
    elif arm == "offline":
        env["WANDB_MODE"] = "offline"
    cmd = [sys.executable, "-m", "masksep", "sweep", str(spec_path), "--out", str(out), "--num-cpus", "2"]
    if arm == "no-wandb":
        cmd.append("--no-wandb")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {"no-wandb": [], "offline": [], "unreachable": []}
    offline: dict[str, list[int]] = {"offline": [], "unreachable": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = spec(Path(tmp) / "spec.yaml", args.trials)
        for r in range(args.rounds):
            for name in walls:
                out = Path(tmp) / f"{name}-{r}"
                walls[name].append(run(path, out, name))
                if name in offline:
                    offline[name].append(len(list((out / "wandb").glob("offline-run-*"))))
    medians = {k: statistics.median(v) for k, v in walls.items()}
    print(json.dumps({"trials": args.trials, "walls_s": walls, "median_s": medians,
                      "ratio": medians["unreachable"] / medians["no-wandb"],
                      "offline_ratio": medians["offline"] / medians["no-wandb"],
                      "unreachable_over_offline": medians["unreachable"] / medians["offline"],
                      "offline_runs_written": offline}, indent=1))


if __name__ == "__main__":
    main()
