"""The paper models' step time in masksep against Asteroid's own implementations, on CPU.

    pip install --no-deps asteroid==0.7.0 asteroid-filterbanks==0.4.0 huggingface_hub
    python tests/benchmarks/bench_asteroid.py [--threads 2] [--steps 12] [--warmup 3] [--model NAME]

Asteroid is a benchmark-only extra (never a masksep dependency; ``--no-deps``
keeps its torchaudio and lightning requirements out of the venv: the models
need neither). Both sides build the same published model with the same
parameter count: Conv-TasNet (Asteroid ``ConvTasNet(n_src=2)``, masksep
``sweeps/trials/convtasnet-paper.yaml``) and DPRNN (``DPRNNTasNet(n_src=2,
n_filters=64, kernel_size=2, stride=1, bn_chan=64, hid_size=128, chunk_size=250,
n_repeats=6)``, ``dprnn-paper.yaml``). A training step is forward,
permutation-invariant negative SI-SNR, backward and an Adam step, on batch 2 of
2 s at 8 kHz (DPRNN 0.5 s); the two sides' steps alternate, ``--steps`` of
each are timed after ``--warmup`` warm-up steps, and the medians and their ratio
are printed, with inference on 10 s of audio the same way. Each model is
measured in a fresh process of its own.

For a model with LSTMs (DPRNN), torch.profiler then records 2 more steps of each
side, and the share of their CPU time spent in oneDNN's LSTM kernels
(``mkldnn_rnn_layer`` and its backward, torch's default CPU path) is reported,
alone ("lstm") and with the matrix products ("lstm+mm": in DPRNN, the Linear
layer after each LSTM). Both sides run the same ``nn.LSTM`` and ``nn.Linear`` on
the same shapes, so that share of masksep's step is a floor no rewrite of the
rest can go under: ``best_ratio_*`` (the floor over Asteroid's median step) is
the best ratio masksep could reach without changing those layers. The process keeps freed
memory as ``masksep train`` does (masksep/cpu.py; process-wide, so both sides get
it; ``MASKSEP_MALLOC=system`` runs both on glibc's defaults).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def masksep_model(name: str):
    from masksep.config import load_config
    from masksep.losses import separation_loss
    from masksep.train import initial_model

    model = initial_model(load_config(ROOT / "sweeps" / "trials" / f"{name}.yaml"))
    return model, lambda est, ref: separation_loss(est, ref, False)


def asteroid_model(name: str):
    from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr
    from asteroid.models import ConvTasNet, DPRNNTasNet

    torch.manual_seed(0)
    if name == "convtasnet-paper":
        model = ConvTasNet(n_src=2)
    else:
        model = DPRNNTasNet(n_src=2, n_filters=64, kernel_size=2, stride=1, bn_chan=64, hid_size=128,
                            chunk_size=250, n_repeats=6)
    pit = PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")
    return model, lambda est, ref: pit(est, ref)


def timed_pair(sides: dict, make_step, steps: int, warmup: int) -> dict[str, float]:
    times = {name: [] for name in sides}
    for i in range(steps + warmup):
        for name, side in sides.items():
            t0 = time.perf_counter()
            make_step(*side)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: 1000 * statistics.median(v) for name, v in times.items()}


def shared_shares(step, steps: int = 2) -> dict[str, float]:
    """Fractions of the CPU time of ``steps`` calls of ``step`` spent in oneDNN's
    LSTM kernels ("lstm") and in those plus the matrix products ("lstm+mm")."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    lstm = sum(e.self_cpu_time_total for e in events if "mkldnn_rnn" in e.key)
    mm = sum(e.self_cpu_time_total for e in events if e.key == "aten::mm")
    return {"lstm": lstm / total, "lstm+mm": (lstm + mm) / total}


MODELS = {"convtasnet-paper": 2.0, "dprnn-paper": 0.5}  # name: seconds of audio a training item


def measure(name: str, steps: int, warmup: int) -> dict:
    """Both sides' training step and 10 s inference for one model, interleaved."""
    seconds = MODELS[name]
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(2, 2, int(seconds * 8000), generator=gen)
    mix = ref.sum(1)
    long_mix = torch.randn(1, 10 * 8000, generator=gen)
    sides = {}
    for side, build in (("masksep", masksep_model), ("asteroid", asteroid_model)):
        model, loss_fn = build(name)
        sides[side] = (model, loss_fn, torch.optim.Adam(model.parameters(), lr=1e-3))
    params = {s: sum(p.numel() for p in v[0].parameters()) for s, v in sides.items()}

    def train_step(model, loss_fn, optimizer):
        model.train()
        loss = loss_fn(model(mix), ref)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer(model, loss_fn, optimizer):
        model.eval()
        with torch.inference_mode():
            model(long_mix)

    train = timed_pair(sides, train_step, steps, warmup)
    inference = timed_pair(sides, infer, max(3, steps // 3), warmup)
    out = {"params": params, "train_step_ms": train,
           "train_ratio": train["masksep"] / train["asteroid"],
           "inference_10s_ms": inference,
           "inference_ratio": inference["masksep"] / inference["asteroid"]}
    if any(isinstance(m, torch.nn.LSTM) for m in sides["masksep"][0].modules()):
        shares = {s: shared_shares(lambda v=v: train_step(*v)) for s, v in sides.items()}
        out["time_share"] = shares
        for kind in ("lstm", "lstm+mm"):
            floor = shares["masksep"][kind] * train["masksep"]
            out[f"floor_ms_{kind}"] = floor
            out[f"best_ratio_{kind}"] = floor / train["asteroid"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--model", choices=sorted(MODELS),
                        help="measure one model in this process (default: each in its own)")
    args = parser.parse_args()
    if args.model is None:
        # One process a model: a paper DPRNN step measured after Conv-TasNet in
        # the same process ran 1.1-1.5x slower on both sides than in a fresh one
        # (two pairs of runs here: masksep 4,257 and 4,659 ms against 3,757 and
        # 3,253), as if the first model's kept heap weighed on the second.
        out = {}
        for name in MODELS:
            cmd = [sys.executable, __file__, "--model", name, "--threads", str(args.threads),
                   "--steps", str(args.steps), "--warmup", str(args.warmup)]
            run = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
            one = json.loads(run.stdout.strip().splitlines()[-1])
            out.update(one)  # the same header keys each time, one model's entry
            print(json.dumps({name: one[name]}), flush=True)
        print(json.dumps(out, indent=1))
        return
    from masksep.cpu import keep_freed_memory

    kept = keep_freed_memory()
    torch.set_num_threads(args.threads)
    out = {"threads": args.threads, "steps": args.steps, "warmup": args.warmup,
           "torch": torch.__version__, "malloc": "kept" if kept else "system",
           args.model: measure(args.model, args.steps, args.warmup)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
