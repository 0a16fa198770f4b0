"""Training on a busy machine: a step's time alone and beside a process that keeps
2 BLAS threads busy, with masksep's default CPU plan (masksep/cpu.py).

The benchmark starts its own competitor (numpy matrix products on 2 threads, in
a loop) and stops it. Each measurement is a fresh process running train.fit for
a few short epochs; the figure is the last epoch's time per training step (the
first epochs give the thread governor time to see the load). ``--baseline REF``
runs the same measurements for a git commit too (exported, in its own process),
with fewer steps when loaded: it may be 50x slower there.

    python tests/benchmarks/bench_load.py
    python tests/benchmarks/bench_load.py --baseline ce91375

Prints one JSON object. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_throughput import ROOT, export  # noqa: E402

COMPETITOR = r"""
import numpy as np
a = np.random.default_rng(0).random((700, 700))
while True:
    a = a @ a
    a /= np.abs(a).max()
"""

MEASURE = r"""
import json, sys, tempfile
from masksep import config as C
from masksep.train import fit
cfg = C.load_config(sys.argv[1], sys.argv[3:])
with tempfile.TemporaryDirectory() as out:
    summary = fit(cfg, out)
    rows = [json.loads(line) for line in open(out + "/metrics.jsonl")]
last = rows[-1]
print(json.dumps({"step_ms": 1000 * last["epoch_s"] / last["steps"], "steps": last["steps"],
                  "threads": summary.get("threads"), "data_workers": summary.get("data_workers"),
                  "thread_changes": summary.get("thread_changes")}))
"""


def measure(side: Path, config: Path, sets: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(side)}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", MEASURE, str(config), "", *sets], env=env,
                         capture_output=True, text=True, timeout=3600, cwd=side)
    if out.returncode:
        raise SystemExit(f"{side}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Competitor:
    def __enter__(self):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
        self.proc = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env)
        time.sleep(2.0)  # numpy imported and multiplying
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "sweeps" / "trials" / "tcn-deep.yaml")
    parser.add_argument("--baseline", help="a git commit to measure too")
    parser.add_argument("--train-items", type=int, default=480)
    args = parser.parse_args()
    base_sets = [f"data.train_items={args.train_items}", "data.valid_items=4", "train.epochs=3",
                 "train.early_stop=0"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"this tree": ROOT}
        if args.baseline:
            sides[f"baseline {args.baseline}"] = export(args.baseline, Path(tmp) / "baseline")
        for name, side in sides.items():
            alone = measure(side, args.config.resolve(), base_sets)
            loaded_sets = base_sets
            if name != "this tree":  # the collapse: a few steps are enough to see it
                loaded_sets = base_sets + ["train.max_steps_per_epoch=8"]
            with Competitor():
                loaded = measure(side, args.config.resolve(), loaded_sets)
            results[name] = {"alone": alone, "loaded": loaded,
                             "slowdown": loaded["step_ms"] / alone["step_ms"]}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
