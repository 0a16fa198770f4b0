"""The GPU check: one command, within 8 minutes on one GPU, for the day a GPU is lent.

    python tests/benchmarks/gpu_check.py [--out gpu_check.json] [--quick]

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

Writes one JSON file (and prints it). Without CUDA it says so in one line and
exits 0 (the test suite runs that path).
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
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
# Dense (no sparsity) bf16/fp16 tensor-core peaks, TFLOP/s, from the vendors' data sheets.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0,
               "L4": 121.0, "V100": 125.0, "T4": 65.0, "RTX 4090": 165.0, "RTX 3090": 71.0}


def peak_for(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def amp_steps(config: str, seconds: float, batch: int, steps: int) -> dict:
    from masksep.complexity import complexity
    from masksep.config import load_config
    from masksep.losses import separation_loss
    from masksep.train import initial_model

    cfg = load_config(ROOT / "sweeps" / "trials" / config)
    macs = complexity(cfg)["macs_per_s"]
    device = torch.device("cuda")
    model = initial_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    n = int(seconds * cfg.sample_rate)
    gen = torch.Generator(device="cpu").manual_seed(0)
    ref = torch.randn(batch, cfg.n_src, n, generator=gen).to(device)
    mix = ref.sum(1)
    times = []
    for i in range(steps + 5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype):
            est = model(mix)
        loss = separation_loss(est.float(), ref, model.oracle_grouping)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        torch.cuda.synchronize()
        if i >= 5:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    flops = 3 * 2 * macs * seconds * batch
    name = torch.cuda.get_device_name()
    peak = peak_for(name)
    return {"config": config, "batch": batch, "seconds": seconds, "dtype": str(dtype),
            "step_ms": 1000 * step, "tflops": flops / step / 1e12, "peak_tflops": peak,
            "share_of_peak": (flops / step / 1e12) / peak if peak else None,
            "memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def run_sweep(tmp: Path, resources: dict, num_samples: int, name: str) -> dict:
    import yaml

    spec = {
        "name": name, "base": "trials/tcn-deep.yaml",
        "trial": {"data": {"train_items": 400, "valid_items": 20, "test_items": 20},
                  "train": {"epochs": 2, "early_stop": 0}},
        "search": "grid", "scheduler": "none", "num_samples": num_samples,
        "search_space": {"head.kind": {"grid": ["deep"]}},
        "max_concurrent_trials": num_samples, "resources": resources, "wandb": {"enabled": False},
    }
    path = ROOT / "sweeps" / f".gpu-check-{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp / name
    t0 = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "masksep", "sweep", str(path), "--out", str(out),
                               "--no-wandb"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        path.unlink(missing_ok=True)
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
    return {"returncode": done.returncode, "wall_s": wall, "trials": len(trials),
            "completed": len(spans), "all_at_once": overlap,
            "error": done.stderr[-600:] if done.returncode else ""}


def separate_rtf(tmp: Path) -> dict:
    import numpy as np
    import soundfile as sf

    from masksep.config import load_config, to_dict
    from masksep.separate import separate_files
    from masksep.train import CHECKPOINT_FORMAT, initial_model

    cfg = load_config(ROOT / "sweeps" / "trials" / "convtasnet-paper.yaml")
    ckpt = tmp / "paper.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": to_dict(cfg),
                "model": initial_model(cfg).state_dict()}, ckpt)
    wav = tmp / "mix.wav"
    sf.write(wav, np.random.default_rng(0).standard_normal(60 * 8000).astype(np.float32) * 0.1, 8000)
    separate_files(ckpt, [wav], tmp / "warm", device="cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    separate_files(ckpt, [wav], tmp / "sep", device="cuda")
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"seconds": 60.0, "wall_s": wall, "rtf": wall / 60.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke test)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; nothing measured (run it where a GPU is)")
        return 0
    steps = 5 if args.quick else 20
    result: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "cuda": torch.version.cuda, "started": time.time()}
    sections = {
        "amp_convtasnet": lambda tmp: amp_steps("convtasnet-paper.yaml", 4.0, 4, steps),
        "amp_dprnn": lambda tmp: amp_steps("dprnn-paper.yaml", 2.0, 4, steps),
        "sweep_quarter_gpus": lambda tmp: run_sweep(tmp, {"cpus": 2, "gpus": 0.25}, 4, "quarter"),
        "ray_train_nccl": lambda tmp: run_sweep(tmp, {"cpus": 2, "gpus": 1, "ray_train": True}, 1,
                                                "nccl"),
        "separate": separate_rtf,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, section in sections.items():
            t0 = time.perf_counter()
            try:
                result[name] = section(Path(tmp))
            except Exception as exc:  # noqa: BLE001 - one failed section must not hide the others
                result[name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
            result[name]["section_s"] = time.perf_counter() - t0
            print(f"gpu_check: {name}: {json.dumps(result[name])}", flush=True)
    result["total_s"] = time.time() - result["started"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
