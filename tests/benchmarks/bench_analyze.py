"""Seconds per checkpoint of ``masksep analyze`` on CPU.

    python tests/benchmarks/bench_analyze.py [--configs tcn-deep tcn-og] [--threads 1] [--repeats 3]
    python tests/benchmarks/bench_analyze.py --sweep results-folder-with-checkpoints

1. For each trial config (sweeps/trials/NAME.yaml, or a path), a checkpoint
   with the config's initial weights (the analysis does the same work
   whatever the weights are: fixed budgets, fixed item count), analysed with
   ``--items`` test items on ``--threads`` torch threads: the whole
   analyze_checkpoint (loading, test items, both models' views, the figure)
   per checkpoint, and its parts. Median of ``--repeats`` after one warm-up.
2. With ``--sweep DIR`` (a sweep or study folder whose trials still have their
   checkpoints): the real ``masksep analyze DIR`` into a temporary folder, its
   wall time, and its ratio to the trials' own training time (the sum of
   their summary.json wall_s, every trial, shallow ones too): the issue's
   budget is 10 %.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from masksep.analyze import views as V
from masksep.analyze.run import DEFAULT_ITEMS, Target, _Datasets, analyze, analyze_checkpoint
from masksep.config import load_config, to_dict
from masksep.train import CHECKPOINT_FORMAT, initial_model, setup_threads

ROOT = Path(__file__).resolve().parents[2]


def config_path(name: str) -> Path:
    path = Path(name)
    return path if path.suffix in (".yaml", ".yml") else ROOT / "sweeps" / "trials" / f"{name}.yaml"


def time_parts(cfg, items: int, settings: V.Settings) -> dict[str, float]:
    """Seconds of each view for the trained side alone (here: the same weights)."""
    _, test_items, _, _ = _Datasets(None, items).get(cfg)
    model = initial_model(cfg).eval()
    half = len(test_items) // 2
    out: dict[str, float] = {}
    t = time.perf_counter()
    fit, held = V.probe(model, test_items[:half]), V.probe(model, test_items[half:])
    out["probe_s"] = time.perf_counter() - t
    og = cfg.head.kind == "og"
    t = time.perf_counter()
    if og and cfg.head.grouping == "oracle":
        V.assignment_view(model, fit + held, settings)
        out["assignment_s"] = time.perf_counter() - t
        return out
    weight = (V.weight_view_grouping if og else V.weight_view_deep)(model.head, settings)
    out["weight_s"] = time.perf_counter() - t
    t = time.perf_counter()
    V.ablation_view(model, fit + held, weight["dominant_source"], settings, og_outputs=og)
    out["ablation_s"] = time.perf_counter() - t
    if not og:
        t = time.perf_counter()
        V.function_view(model, fit, held, cfg.head.width, settings)
        out["function_s"] = time.perf_counter() - t
    return out


def bench_config(name: str, items: int, repeats: int, settings: V.Settings) -> dict:
    cfg = load_config(config_path(name), [f"data.test_items={max(items, 2)}"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "best.pt"
        torch.save({"format": CHECKPOINT_FORMAT, "config": to_dict(cfg),
                    "model": initial_model(cfg).state_dict()}, path)
        totals = []
        for i in range(repeats + 1):
            t = time.perf_counter()
            analyze_checkpoint(Target(name, path), _Datasets(None, items), settings)
            if i:  # the first run warms up
                totals.append(time.perf_counter() - t)
    parts = time_parts(cfg, items, settings)
    head = cfg.head
    return {"config": name, "head": head.kind, "depth": head.depth, "width": head.width,
            "oversep": head.oversep if head.kind == "og" else None,
            "grouping": head.grouping if head.kind == "og" else None,
            "n_bins": initial_model(cfg).head.n_bins,
            "s_per_checkpoint": round(statistics.median(totals), 2),
            "runs": [round(x, 2) for x in totals],
            "one_side_parts_s": {k: round(v, 2) for k, v in parts.items()}}


def bench_sweep(sweep: Path, items: int, threads: int) -> dict:
    trials = sorted(p for p in sweep.rglob("trial_*") if p.is_dir())
    train_s = 0.0
    for trial in trials:
        try:
            train_s += float(json.loads((trial / "summary.json").read_text()).get("wall_s", 0))
        except (OSError, ValueError):
            pass
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        summary = analyze([sweep], Path(tmp) / "analysis", items=items, threads=threads)
        wall = time.perf_counter() - t
    return {"sweep": str(sweep), "trials": len(trials), "training_s": round(train_s, 1),
            "analyzed": summary["analysed"], "analyze_s": round(wall, 1),
            "ratio": round(wall / train_s, 4) if train_s else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tcn-deep", "tcn-og"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", type=Path, help="also time masksep analyze on this sweep folder")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    threads = setup_threads(args.threads)
    settings = V.Settings()
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": threads, "items": args.items, "settings": settings.as_dict(),
        "configs": [bench_config(name, args.items, args.repeats, settings) for name in args.configs],
    }
    if args.sweep is not None:
        result["sweep"] = bench_sweep(args.sweep, args.items, args.threads)
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
