"""Does a sweep keep its CPUs busy, and do concurrent trials slow each other down?

    python tests/benchmarks/bench_sweep.py [--items 480] [--epochs 3] [--out DIR]

Runs two real sweeps with `masksep sweep` on a private local Ray of 2 CPUs
(W&B off), on the tcn-deep trial config with a short budget:

- *alone*: one 1-CPU trial, nothing else running;
- *pair*: two 1-CPU trials at the same time (seeds 0 and 1).

Prints the median training step time of each trial (from its metrics.jsonl,
epochs after the first, so start-up is not counted), the ratio alone /
concurrent (goal >= 0.9: a trial running beside another is at least 0.9x as
fast as alone) and the pair sweep's efficiency (sum of trial wall times /
2 slots / sweep wall time, as in the sweep report). Run it on a quiet machine:
any other load on the two cores shows up as slowdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def write_spec(path: Path, trials: int, items: int, epochs: int) -> Path:
    spec = {
        "name": path.stem,
        "base": str(ROOT / "sweeps" / "trials" / "tcn-deep.yaml"),
        "trial": {"data": {"train_items": items, "valid_items": 8, "test_items": 8},
                  "train": {"epochs": epochs, "early_stop": 0}},
        "search_space": {"head.kind": {"grid": ["deep"]}},
        "search": "grid",
        "repeats": trials,  # seeds 0, 1, ...
        "scheduler": "none",
        "max_concurrent_trials": trials,
        "resources": {"cpus": 1},
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(spec: Path, out: Path) -> dict:
    ray_tmp = Path(tempfile.mkdtemp(prefix="msb-", dir="/tmp"))  # Ray's socket paths stay short
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    try:
        subprocess.run([sys.executable, "-m", "masksep.cli", "sweep", str(spec), "--out", str(out),
                        "--no-wandb", "--num-cpus", "2"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    steps = []
    for metrics in sorted(out.rglob("metrics.jsonl")):
        epochs = [json.loads(line) for line in metrics.read_text().splitlines()]
        later = [e["epoch_s"] / e["steps"] for e in epochs if e["epoch"] > 1]
        steps.append(1000 * statistics.median(later))
    state = json.loads((out / "sweep.json").read_text())
    summary = dict(state)
    walls = [json.loads(p.read_text())["wall_s"] for p in out.rglob("summary.json")]
    summary["efficiency"] = sum(walls) / len(walls) / state["driver_wall_s"] if walls else None
    summary["step_ms"] = steps
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=480, help="training items per epoch (8 per step)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="keep the sweeps here (default: a temp dir)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")

    work = args.out or Path(tempfile.mkdtemp(prefix="masksep-bench-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    alone = run_sweep(write_spec(work / "alone.yaml", 1, args.items, args.epochs), work / "alone")
    pair = run_sweep(write_spec(work / "pair.yaml", 2, args.items, args.epochs), work / "pair")
    if len(alone["step_ms"]) != 1 or len(pair["step_ms"]) != 2:
        print(f"unexpected trial count: {alone['step_ms']} / {pair['step_ms']}", file=sys.stderr)
        return 1

    solo = alone["step_ms"][0]
    print(f"tcn-deep trial, batch 8 x 2 s, {args.items} items x {args.epochs} epochs, 1 CPU per trial, "
          f"Ray with 2 CPUs (median step time of epochs 2..{args.epochs})")
    print()
    print("| run | step time | alone / this |")
    print("|---|---|---|")
    print(f"| one trial alone | {solo:.1f} ms | 1.00 |")
    for i, ms in enumerate(pair["step_ms"]):
        print(f"| two concurrent trials, trial {i + 1} | {ms:.1f} ms | {solo / ms:.2f} |")
    print()
    print(f"pair sweep: efficiency {pair['efficiency']:.2f} "
          f"(trial wall times summed / 2 slots / sweep wall {pair['driver_wall_s']:.1f} s)")
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
