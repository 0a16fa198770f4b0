"""The GPU check: one command, within 8 minutes on one GPU, for the day a GPU is lent.

    python tests/benchmarks/gpu_check.py [--out gpu_check.json] [--quick] [--sections a,b]
    python tests/benchmarks/gpu_check.py --rehearse      # every section on the CPU, tiny sizes

Measures, on the first CUDA device:

1. AMP training steps of the paper Conv-TasNet and DPRNN (batch 4 of 4 s at
   8 kHz; DPRNN 2 s): median step time, and the achieved TFLOP/s (training is
   counted as 3x the forward MACs of ``masksep complexity``, 2 FLOPs a MAC)
   against the device's dense 16-bit peak where this file knows it;
2. a 4-trial sweep with ``resources.gpus: 0.25`` (four trials on one GPU at
   once): wall time, and whether all four trained at the same time;
3. a 1-GPU Ray Train trial (``resources.ray_train``) with the NCCL backend;
4. the real-time factor of ``masksep separate`` on the GPU (60 s input, paper
   Conv-TasNet, random weights).

Writes one JSON file (and prints each section as it ends). Without CUDA it
says so in one line and exits 0. ``--rehearse`` runs the same sections on the
CPU at the smallest sizes (bf16 autocast, fractional CPUs for the quarter-GPU
sweep, gloo for NCCL), so that a missing package or a broken code path shows
here, not in the minutes of a lent GPU; the test suite rehearses the model
and separate sections.

The device machine has PyTorch but not Ray, Optuna, W&B or soundfile:
``python tests/benchmarks/gpu_bundle.py`` packs them into ``.gpu/`` (ignored by
git, carried with the run); its docstring has the command that unpacks it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
TRIALS = ROOT / "sweeps" / "trials"
# Dense (no sparsity) bf16/fp16 tensor-core peaks, TFLOP/s, from the vendors' data sheets.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0,
               "L4": 121.0, "V100": 125.0, "T4": 65.0, "RTX 4090": 165.0, "RTX 3090": 71.0}


@dataclass(frozen=True)
class Plan:
    """Sizes of one check: the real one on a GPU, or the rehearsal on the CPU."""

    device: str
    warmup: int
    steps: int
    batch: int
    convtasnet_s: float
    dprnn_s: float
    sweep_items: int
    sweep_epochs: int
    quarter: dict  # resources of each of the 4 concurrent trials
    ray_train: dict  # resources of the Ray Train trial
    separate_s: float

    @property
    def backend(self) -> str:
        return "nccl" if self.ray_train.get("gpus") else "gloo"


def plan(rehearse: bool, quick: bool) -> Plan:
    if rehearse:
        return Plan("cpu", warmup=1, steps=1, batch=1, convtasnet_s=0.5, dprnn_s=0.25,
                    sweep_items=8, sweep_epochs=1, quarter={"cpus": 0.5},
                    ray_train={"cpus": 1, "ray_train": True}, separate_s=4.0)
    return Plan("cuda", warmup=5, steps=5 if quick else 20, batch=4, convtasnet_s=4.0, dprnn_s=2.0,
                sweep_items=400, sweep_epochs=2, quarter={"cpus": 2, "gpus": 0.25},
                ray_train={"cpus": 2, "gpus": 1, "ray_train": True}, separate_s=60.0)


def peak_for(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def amp_steps(p: Plan, config: str, seconds: float) -> dict:
    from masksep.complexity import complexity
    from masksep.config import load_config
    from masksep.losses import separation_loss
    from masksep.train import initial_model

    cfg = load_config(TRIALS / config)
    macs = complexity(cfg)["macs_per_s"]
    device = torch.device(p.device)
    model = initial_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    dtype = torch.float16 if fp16 else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    n = int(seconds * cfg.sample_rate)
    gen = torch.Generator(device="cpu").manual_seed(0)
    ref = torch.randn(p.batch, cfg.n_src, n, generator=gen).to(device)
    mix = ref.sum(1)
    times = []
    for i in range(p.warmup + p.steps):
        synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype):
            est = model(mix)
        loss = separation_loss(est.float(), ref, model.oracle_grouping)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        synchronize(device)
        if i >= p.warmup:
            times.append(time.perf_counter() - t0)
    if not torch.isfinite(loss):
        raise RuntimeError(f"{config}: the AMP loss is {loss.item()}")
    step = statistics.median(times)
    tflops = 3 * 2 * macs * seconds * p.batch / step / 1e12
    peak = peak_for(torch.cuda.get_device_name()) if device.type == "cuda" else None
    return {"config": config, "batch": p.batch, "seconds": seconds, "dtype": str(dtype),
            "steps": len(times), "step_ms": 1000 * step, "loss": loss.item(), "tflops": tflops,
            "peak_tflops": peak, "share_of_peak": tflops / peak if peak else None,
            "memory_gib": (torch.cuda.max_memory_allocated() / 2**30
                           if device.type == "cuda" else None)}


def sweep_spec(p: Plan, resources: dict, num_samples: int, name: str) -> dict:
    """``num_samples`` tcn-deep trials at once, each with ``resources``."""
    items = {"train_items": p.sweep_items, "valid_items": max(4, p.sweep_items // 20),
             "test_items": max(4, p.sweep_items // 20)}
    return {
        "name": name, "base": str(TRIALS / "tcn-deep.yaml"),
        "trial": {"data": items, "train": {"epochs": p.sweep_epochs, "early_stop": 0}},
        "search": "grid", "scheduler": "none", "num_samples": num_samples,
        "search_space": {"head.kind": {"grid": ["deep"]}},
        "max_concurrent_trials": num_samples, "resources": resources, "wandb": {"enabled": False},
    }


def run_sweep(p: Plan, tmp: Path, resources: dict, num_samples: int, name: str) -> dict:
    import yaml

    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep_spec(p, resources, num_samples, name)))
    out = tmp / name
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "masksep", "sweep", str(path), "--out", str(out),
                           "--no-wandb"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    wall = time.perf_counter() - t0
    trials = sorted((out / "ray" / name).glob("trial_*"))
    spans = []
    for trial in trials:
        try:
            attempts = json.loads((trial / "attempts.json").read_text())
            summary = json.loads((trial / "summary.json").read_text())
            spans.append((attempts[0]["started"], attempts[0]["started"] + summary["wall_s"]))
        except (OSError, ValueError, KeyError, IndexError):
            pass
    overlap = bool(spans) and max(s for s, _ in spans) < min(e for _, e in spans)
    result = {"resources": resources, "returncode": done.returncode, "wall_s": wall,
              "trials": len(trials), "completed": len(spans), "all_at_once": overlap}
    if done.returncode or len(spans) < num_samples:
        result["error"] = (done.stderr or done.stdout)[-600:]
    return result


def separate_rtf(p: Plan, tmp: Path) -> dict:
    import numpy as np
    import soundfile as sf

    from masksep.config import load_config, to_dict
    from masksep.separate import separate_files
    from masksep.train import CHECKPOINT_FORMAT, initial_model

    cfg = load_config(TRIALS / "convtasnet-paper.yaml")
    ckpt = tmp / "paper.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": to_dict(cfg),
                "model": initial_model(cfg).state_dict()}, ckpt)
    wav = tmp / "mix.wav"
    n = int(p.separate_s * cfg.sample_rate)
    sf.write(wav, np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1,
             cfg.sample_rate)
    device = torch.device(p.device)
    separate_files(ckpt, [wav], tmp / "warm", device=p.device)
    synchronize(device)
    t0 = time.perf_counter()
    (row,) = separate_files(ckpt, [wav], tmp / "sep", device=p.device)
    synchronize(device)
    wall = time.perf_counter() - t0
    written = [Path(f) for f in row["outputs"] if Path(f).is_file()]
    if len(written) != cfg.n_src:
        raise RuntimeError(f"separate wrote {len(written)} of {cfg.n_src} sources")
    return {"seconds": p.separate_s, "wall_s": wall, "rtf": wall / p.separate_s,
            "device": row["device"], "chunks": row["chunks"]}


SECTIONS = {
    "amp_convtasnet": lambda p, tmp: amp_steps(p, "convtasnet-paper.yaml", p.convtasnet_s),
    "amp_dprnn": lambda p, tmp: amp_steps(p, "dprnn-paper.yaml", p.dprnn_s),
    "sweep_quarter_gpus": lambda p, tmp: run_sweep(p, tmp, p.quarter, 4, "quarter"),
    "ray_train_nccl": lambda p, tmp: {**run_sweep(p, tmp, p.ray_train, 1, "raytrain"),
                                      "backend": p.backend},
    "separate": separate_rtf,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    parser.add_argument("--quick", action="store_true", help="5 timed steps instead of 20")
    parser.add_argument("--rehearse", action="store_true",
                        help="run every section on the CPU at the smallest sizes")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    names = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        print(f"gpu_check: --sections: unknown {', '.join(unknown)} "
              f"(choose from {', '.join(SECTIONS)})", file=sys.stderr)
        return 2
    if not args.rehearse and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing measured "
              "(run it where a GPU is, or --rehearse to try every section on the CPU)")
        return 0
    p = plan(args.rehearse, args.quick)
    result: dict = {"device": torch.cuda.get_device_name() if p.device == "cuda" else "cpu",
                    "rehearsal": args.rehearse, "torch": torch.__version__,
                    "cuda": torch.version.cuda, "python": sys.version.split()[0],
                    "started": time.time()}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            t0 = time.perf_counter()
            folder = Path(tmp) / name
            folder.mkdir()
            try:
                result[name] = SECTIONS[name](p, folder)
            except Exception as exc:  # noqa: BLE001 - one failed section must not hide the others
                result[name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            result[name]["section_s"] = time.perf_counter() - t0
            print(f"gpu_check: {name}: {json.dumps(result[name])}", flush=True)
    result["total_s"] = time.time() - result["started"]
    result["failed"] = [name for name in names if "error" in result[name]]
    from masksep.files import atomic_write

    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, json.dumps(result, indent=1) + "\n")
    print(f"gpu_check: {len(names) - len(result['failed'])} of {len(names)} sections ran "
          f"in {result['total_s']:.0f} s; {args.out}")
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
