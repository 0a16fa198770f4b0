"""Speed and memory of ``masksep separate`` on CPU.

    python tests/benchmarks/bench_separate.py [--threads 1 2] [--seconds 60] [--memory-seconds 1 60 600]

1. Real-time factor (wall time of separation / audio duration; reading, the
   model, resampling-free 8 kHz, cross-fades and writing included; process
   start and checkpoint loading not) for the default config, the small
   sweeps/trials/tcn-deep.yaml and the paper-size Conv-TasNet
   (sweeps/trials/convtasnet-paper.yaml), with random weights (the
   cost does not depend on the weights), on a ``--seconds`` long input, for
   each ``--threads``. Median of ``--repeats`` after a one-chunk warm-up.
2. Peak resident memory (ru_maxrss) of a fresh ``masksep separate`` process
   (``--memory-threads``, one by default) on inputs of ``--memory-seconds``:
   chunked inference streams the input and the outputs, so it should not grow
   with the input length (the outputs, 32-bit float wav on disk, do). The
   wall time there includes the process start and the checkpoint loading.

Prints markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from masksep.config import load_config, to_dict
from masksep.data.synthetic import SyntheticMixtures
from masksep.models.separator import build_model
from masksep.separate import DEFAULT_CHUNK_S, DEFAULT_OVERLAP_S, separate_files
from masksep.train import CHECKPOINT_FORMAT

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "default": None,
    "tcn-deep": ROOT / "sweeps" / "trials" / "tcn-deep.yaml",
    "convtasnet-paper": ROOT / "sweeps" / "trials" / "convtasnet-paper.yaml",
}

# Peak RSS from VmHWM, this process image's own high-water mark: ru_maxrss of
# a child also counts its parent's RSS at fork time (Linux carries it across
# exec), which here would be this benchmark's models.
_MEMORY_RUNNER = """
import re, resource, sys, time
from masksep.cli import main
t0 = time.perf_counter()
rc = main(sys.argv[1:])
wall = time.perf_counter() - t0
try:
    kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
except (OSError, AttributeError):
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("BENCH", rc, kib, wall)
"""


def make_checkpoint(name: str, folder: Path) -> tuple[Path, int]:
    cfg = load_config(CONFIGS[name])
    torch.manual_seed(0)
    model = build_model(cfg)
    path = folder / f"{name}.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": to_dict(cfg), "model": model.state_dict()}, path)
    return path, sum(p.numel() for p in model.parameters())


def write_input(path: Path, seconds: float, rate: int = 8000) -> None:
    """A speech-like two-talker mixture; a long one is a minute tiled."""
    minute = SyntheticMixtures("test", 1, 2, rate, min(seconds, 60.0), seed=0)[0][0].numpy()
    reps = int(np.ceil(seconds * rate / minute.size))
    x = np.tile(minute, reps)[: int(seconds * rate)]
    sf.write(str(path), x, rate, subtype="PCM_16")


def rtf(ckpt: Path, inp: Path, warm: Path, out: Path, threads: int, repeats: int) -> float:
    separate_files(ckpt, [warm], out, device="cpu", threads=threads)  # one chunk, to warm up
    return statistics.median(
        separate_files(ckpt, [inp], out, device="cpu", threads=threads)[0]["rtf"]
        for _ in range(repeats)
    )


def peak_rss(ckpt: Path, inp: Path, out: Path, threads: int) -> tuple[float, float]:
    """(peak RSS MiB, wall s) of a fresh `masksep separate` process."""
    cmd = [sys.executable, "-c", _MEMORY_RUNNER, "separate", "--checkpoint", str(ckpt), str(inp),
           "--out-dir", str(out), "--device", "cpu", "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"separate failed: {proc.stderr.strip()[-500:]}")
    _, rc, kib, wall = line[0].split()
    return int(kib) / 1024, float(wall)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=60.0, help="input length for the RTF")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--memory-seconds", type=float, nargs="+", default=[1.0, 60.0, 600.0],
                        help="input lengths for peak memory (1 s: the process's own footprint)")
    parser.add_argument("--memory-configs", nargs="+", default=["default"], choices=list(CONFIGS))
    parser.add_argument("--memory-threads", type=int, default=1)
    args = parser.parse_args(argv)

    print(f"`python {' '.join(shlex.quote(a) for a in ['tests/benchmarks/bench_separate.py', *(argv or sys.argv[1:])])}`")
    print(f"torch {torch.__version__}, {platform.machine()} {platform.processor() or ''}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
          f"chunks {DEFAULT_CHUNK_S:g} s with {DEFAULT_OVERLAP_S:g} s overlap, 8 kHz input\n")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ckpts = {name: make_checkpoint(name, d) for name in set(args.configs) | set(args.memory_configs)}
        inp, warm = d / "input.wav", d / "warm.wav"
        write_input(inp, args.seconds)
        write_input(warm, DEFAULT_CHUNK_S)

        print("| model | parameters | threads | input | RTF | x real time |")
        print("|---|---:|---:|---:|---:|---:|")
        for name in args.configs:
            ckpt, n_params = ckpts[name]
            for threads in args.threads:
                value = rtf(ckpt, inp, warm, d / "out", threads, args.repeats)
                print(f"| {name} | {n_params:,} | {threads} | {args.seconds:g} s | {value:.3f} | "
                      f"{1 / value:.1f} |", flush=True)

        print("\n| model | input | peak RSS (fresh process) | output on disk | process wall |")
        print("|---|---:|---:|---:|---:|")
        for name in args.memory_configs:
            ckpt, _ = ckpts[name]
            for seconds in args.memory_seconds:
                long_inp = d / f"input-{seconds:g}s.wav"
                write_input(long_inp, seconds)
                out = d / f"out-{name}-{seconds:g}"
                rss, wall = peak_rss(ckpt, long_inp, out, args.memory_threads)
                size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
                print(f"| {name} | {seconds:g} s | {rss:.0f} MiB | {size:.1f} MiB | {wall:.1f} s |",
                      flush=True)
                for p in out.iterdir():
                    p.unlink()
                long_inp.unlink()
    print("\nRTF = separation wall time / audio duration (< 1: faster than real time).")


if __name__ == "__main__":
    main()
