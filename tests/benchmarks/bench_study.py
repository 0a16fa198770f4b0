"""Study throughput: one 1-CPU study trial, this tree against the commit before the data cache.

A study trial is ``sweeps/study.yaml``'s trial config (the study's own
backbone, data and batch) on one thread, as a study runs it. Three sides, each
in a fresh process, interleaved round by round so that all see the same machine:

- ``baseline``: the commit before this work (exported from git), data made in line;
- ``maker``: this tree, an empty cache: the first variant at a seed, which
  makes the data (and writes it) as it trains;
- ``reader``: this tree, the cache the maker left: every other variant at that seed.

Each figure is optimizer steps over the seconds of the epochs (training and
validation), over all epochs. A study with V variants has one maker and V - 1
readers per seed, so its expected gain is printed too.

``--profile`` instead profiles a reader's steps with torch.profiler and prints
the share of a step spent waiting for the next batch (and the top operators).

    python tests/benchmarks/bench_study.py                 # 3 rounds, 2 epochs of 150 steps
    python tests/benchmarks/bench_study.py --profile

Prints one JSON object. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_throughput import ROOT, export  # noqa: E402

BASELINE = "56be66b"  # main before issue 23 (the data cache)
STUDY = ROOT / "sweeps" / "study.yaml"

MEASURE = r"""
import json, sys, tempfile
import masksep
from masksep import config as C
from masksep.train import fit
cfg = C.load_config(sys.argv[1], sys.argv[3:])
extra = {"data_cache": sys.argv[2]} if sys.argv[2] else {}
with tempfile.TemporaryDirectory() as out:
    summary = fit(cfg, out, **extra)
    rows = [json.loads(line) for line in open(out + "/metrics.jsonl")]
steps = sum(r["steps"] for r in rows)
seconds = sum(r["epoch_s"] for r in rows)
print(json.dumps({"package": masksep.__file__, "steps": steps, "epochs_s": seconds,
                  "steps_per_s": steps / seconds, "wall_s": summary["wall_s"],
                  "test_si_snri": summary["test_si_snri"]}))
"""

PROFILE = r"""
import json, sys, tempfile
from pathlib import Path
import torch
from torch.profiler import ProfilerActivity, profile, record_function
from masksep import config as C
from masksep import train
from masksep.losses import separation_loss
from masksep.parallel import SINGLE
cfg = C.load_config(sys.argv[1], sys.argv[3:])
with tempfile.TemporaryDirectory() as out:
    run = train.setup(cfg, Path(out), SINGLE, Path(sys.argv[2]))
    run.governor.tick = lambda: None
    torch.set_num_threads(1)
    run.train_set.set_epoch(1)
    loader = SINGLE.train_loader(run.train_set, cfg.train.batch_size, cfg.seed, 1, run.workers)
    it = iter(loader)
    def step(mix, ref):
        est = run.net(mix)
        loss = separation_loss(est.float(), ref, run.model.oracle_grouping)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.clip_grad)
        run.optimizer.step()
    for _ in range(5):
        step(*next(it))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(40):
            with record_function("wait_for_data"):
                batch = next(it)
            with record_function("train_step"):
                step(*batch)
    ev = {e.key: e.cpu_time_total for e in prof.key_averages()}
    wait, compute = ev["wait_for_data"], ev["train_step"]
    top = sorted((e for e in prof.key_averages() if not e.key.startswith(("wait_for", "train_step"))),
                 key=lambda e: -e.self_cpu_time_total)[:12]
    print(json.dumps({"steps": 40, "wait_ms_per_step": wait / 40 / 1e3,
                      "compute_ms_per_step": compute / 40 / 1e3,
                      "wait_share": wait / (wait + compute),
                      "top_self_cpu_ms_per_step": {e.key: round(e.self_cpu_time_total / 40 / 1e3, 2) for e in top}}))
"""


def study_sets(epochs: int) -> list[str]:
    """The study's trial overrides (sweeps/study.yaml), one thread, ``epochs`` epochs."""
    import yaml

    spec = yaml.safe_load(STUDY.read_text())
    sets = [f"{section}.{k}={v}" for section, fields in spec["trial"].items() for k, v in fields.items()]
    return sets + ["train.threads=1", f"train.epochs={epochs}"]


def run(side: Path, script: str, cache: str, sets: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(side), "MASKSEP_THREADS": "1"}
    config = STUDY.parent / "trials" / "study-tcn.yaml"
    out = subprocess.run([sys.executable, "-c", script, str(config), cache, *sets], env=env,
                         capture_output=True, text=True, timeout=3600, cwd=side)
    if out.returncode:
        raise SystemExit(f"{side}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", type=int, default=8, help="variants per seed in the study")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    sets = study_sets(args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        if args.profile:
            cache = str(Path(tmp) / "cache")
            run(ROOT, MEASURE, cache, sets[:-1] + ["train.epochs=1"])  # fill the cache
            print(json.dumps(run(ROOT, PROFILE, cache, sets), indent=1))
            return
        baseline = export(args.baseline, Path(tmp) / "baseline")
        results: dict[str, list[dict]] = {"baseline": [], "maker": [], "reader": []}
        for r in range(args.rounds):
            cache = str(Path(tmp) / f"cache-{r}")
            results["baseline"].append(run(baseline, MEASURE, "", sets))
            results["maker"].append(run(ROOT, MEASURE, cache, sets))
            results["reader"].append(run(ROOT, MEASURE, cache, sets))
    med = {k: statistics.median(x["steps_per_s"] for x in v) for k, v in results.items()}
    v = args.variants
    # a seed's trials: one maker and v - 1 readers, all the same number of steps
    study = v / (1 / med["maker"] + (v - 1) / med["reader"])
    print(json.dumps({
        "config": "sweeps/study.yaml trial, 1 thread", "epochs": args.epochs, "baseline": args.baseline,
        "rounds": results, "median_steps_per_s": med,
        "ratio_reader": med["reader"] / med["baseline"], "ratio_maker": med["maker"] / med["baseline"],
        f"ratio_study_mean_of_{v}_variants": study / med["baseline"],
    }, indent=1))


if __name__ == "__main__":
    main()
