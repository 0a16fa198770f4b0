"""Cost of the oracle-grouping (OG) loss against plain PIT, forward + backward.

    python tests/benchmarks/bench_og_loss.py [--threads 2] [--repeats 20]

For P in {4, 8, 16} outputs grouped into C = 2 sources (4 s at 8 kHz, batch 4),
times ``separation_loss(..., oracle_grouping=True)`` plus its backward pass,
and the same for PIT with K = C = 2 outputs on the same batch. Prints a
markdown table (median over the repeats, after warm-up; the two losses are
timed alternately) for docs/benchmarks.md.

With ``--asteroid`` (Asteroid installed as in bench_asteroid.py, a
benchmark-only extra), it also times Asteroid's MixIT loss
(``MixITLossWrapper(multisrc_neg_sisdr, generalized=True)``, which scores
every grouping on grouped waveforms) against masksep's OG on the same batch,
interleaved, for P in ``--asteroid-oversep`` (default 4 and 8: at P = 16 one
Asteroid step takes minutes).

The process keeps freed memory as ``masksep train`` does (masksep/cpu.py;
every side gets it; ``MASKSEP_MALLOC=system`` runs on glibc's defaults).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import torch

from masksep.cpu import keep_freed_memory
from masksep.losses import separation_loss


def _time_pair_ms(first, second, warmup: int, repeats: int) -> tuple[float, float]:
    # Interleaved, so that load from other processes hits both sides alike.
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def _loss_step(est: torch.Tensor, ref: torch.Tensor, oracle_grouping: bool):
    def step() -> None:
        est.grad = None
        separation_loss(est, ref, oracle_grouping).backward()

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats, median reported")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--sample-rate", type=int, default=8000)
    parser.add_argument("--oversep", type=int, nargs="+", default=[4, 8, 16], help="P values")
    parser.add_argument("--asteroid", action="store_true", help="also time Asteroid's MixIT loss")
    parser.add_argument("--asteroid-oversep", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--asteroid-repeats", type=int, default=5)
    args = parser.parse_args(argv)

    kept = keep_freed_memory()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    n_src = 2
    T = int(args.seconds * args.sample_rate)
    ref = torch.randn(args.batch, n_src, T, generator=gen)

    pit_est = torch.randn(args.batch, n_src, T, generator=gen, requires_grad=True)
    pit_step = _loss_step(pit_est, ref, False)

    rows = []
    for P in args.oversep:
        og_est = torch.randn(args.batch, P, T, generator=gen, requires_grad=True)
        og_ms, pit_ms = _time_pair_ms(
            _loss_step(og_est, ref, True), pit_step, args.warmup, args.repeats
        )
        rows.append((P, og_ms, pit_ms))

    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}; "
        f"batch {args.batch}, C = {n_src}, T = {T} ({args.seconds:g} s at {args.sample_rate} Hz); "
        f"median of {args.repeats} after {args.warmup} warm-up, forward + backward, "
        f"OG and PIT interleaved; malloc {'kept' if kept else 'system'}; load average {os.getloadavg()[0]:.2f} at the end"
    )
    print()
    print("| P | OG ms | PIT ms | ratio |")
    print("|---:|---:|---:|---:|")
    for P, og_ms, pit_ms in rows:
        print(f"| {P} | {og_ms:.1f} | {pit_ms:.1f} | {og_ms / pit_ms:.1f}x |")
    if args.asteroid:
        from asteroid.losses import MixITLossWrapper, multisrc_neg_sisdr

        mixit = MixITLossWrapper(multisrc_neg_sisdr, generalized=True)
        print()
        print(f"Asteroid MixIT against masksep OG, same batch, median of {args.asteroid_repeats}:")
        print()
        print("| P | masksep OG ms | Asteroid MixIT ms | Asteroid / masksep |")
        print("|---:|---:|---:|---:|")
        for P in args.asteroid_oversep:
            est = torch.randn(args.batch, P, T, generator=gen, requires_grad=True)

            def asteroid_step(est: torch.Tensor = est) -> None:
                est.grad = None
                mixit(est, ref).backward()

            og_ms, ast_ms = _time_pair_ms(_loss_step(est, ref, True), asteroid_step, 1,
                                          args.asteroid_repeats)
            print(f"| {P} | {og_ms:.1f} | {ast_ms:.1f} | {ast_ms / og_ms:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
