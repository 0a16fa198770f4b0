"""Trial throughput: training steps per second of train.fit, this tree against a baseline commit.

Both sides run their own ``masksep.train.fit`` (data generation, forward,
loss, backward, optimizer and the per-epoch validation included) in fresh
processes, interleaved round by round so that both see the same machine, and
each round's figure is its last epoch (the first one warms up). The baseline is
exported from git (default: the main of 2026-12-01, before the speed-ups).

    python tests/benchmarks/bench_throughput.py                       # tcn-deep, 2 threads
    python tests/benchmarks/bench_throughput.py --threads 1 --config sweeps/trials/study-tcn.yaml

Prints one JSON object: steps/s per side and round, medians and their ratio.
Run it alone on the machine: anything else running skews both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASELINE = "ce91375"  # main before issue 12

MEASURE = r"""
import json, sys, tempfile
import masksep
from masksep import config as C
from masksep.train import fit
cfg = C.load_config(sys.argv[1], sys.argv[3:])
with tempfile.TemporaryDirectory() as out:
    fit(cfg, out)
    rows = [json.loads(line) for line in open(out + "/metrics.jsonl")]
last = rows[-1]
print(json.dumps({"package": masksep.__file__, "steps": last["steps"], "epoch_s": last["epoch_s"],
                  "steps_per_s": last["steps"] / last["epoch_s"]}))
"""


def export(ref: str, into: Path) -> Path:
    """The masksep package of ``ref``, unpacked under ``into``."""
    data = subprocess.run(["git", "archive", ref, "masksep"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def run(side: Path, config: Path, sets: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(side)}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(config), "", *sets], env=env,
                         capture_output=True, text=True, timeout=3600, cwd=side)
    if out.returncode:
        raise SystemExit(f"{side}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--config", type=Path, default=ROOT / "sweeps" / "trials" / "tcn-deep.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-items", type=int, default=480)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sets = [f"train.threads={args.threads}", f"data.train_items={args.train_items}",
            "train.epochs=2", "train.early_stop=0"]
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"baseline": export(args.baseline, Path(tmp) / "baseline"), "this tree": ROOT}
        results: dict[str, list[dict]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, side in sides.items():
                results[name].append(run(side, args.config.resolve(), sets))
    medians = {name: statistics.median(r["steps_per_s"] for r in rows) for name, rows in results.items()}
    print(json.dumps({
        "config": str(args.config), "threads": args.threads, "baseline": args.baseline,
        "rounds": results, "median_steps_per_s": medians,
        "ratio": medians["this tree"] / medians["baseline"],
    }, indent=1))


if __name__ == "__main__":
    main()
