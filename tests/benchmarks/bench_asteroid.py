"""The paper models' step time in masksep against Asteroid's own implementations, on CPU.

    pip install --no-deps asteroid==0.7.0 asteroid-filterbanks==0.4.0 huggingface_hub
    python tests/benchmarks/bench_asteroid.py [--threads 2] [--steps 12]

Asteroid is a benchmark-only extra (never a masksep dependency; ``--no-deps``
keeps its torchaudio and lightning requirements out of the venv: the models
need neither). Both sides build the same published model with the same
parameter count: Conv-TasNet (Asteroid ``ConvTasNet(n_src=2)``, masksep
``sweeps/trials/convtasnet-paper.yaml``) and DPRNN (``DPRNNTasNet(n_src=2,
n_filters=64, kernel_size=2, stride=1, bn_chan=64, hid_size=128, chunk_size=250,
n_repeats=6)``, ``dprnn-paper.yaml``). A training step is forward,
permutation-invariant negative SI-SNR, backward and an Adam step, on batch 2 of
2 s at 8 kHz (DPRNN 0.5 s); the two sides' steps alternate, ``--steps`` of
each are timed after 2 warm-up steps, and the medians and their ratio are
printed, with inference on 10 s of audio the same way. The process keeps freed
memory as ``masksep train`` does (masksep/cpu.py; process-wide, so both sides get
it; ``MASKSEP_MALLOC=system`` runs both on glibc's defaults).
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def timed_pair(sides: dict, make_step, steps: int) -> dict[str, float]:
    times = {name: [] for name in sides}
    for i in range(steps + 2):
        for name, side in sides.items():
            t0 = time.perf_counter()
            make_step(*side)
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
    return {name: 1000 * statistics.median(v) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    from masksep.cpu import keep_freed_memory

    kept = keep_freed_memory()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    out = {"threads": args.threads, "steps": args.steps, "torch": torch.__version__,
           "malloc": "kept" if kept else "system"}
    for name, seconds in (("convtasnet-paper", 2.0), ("dprnn-paper", 0.5)):
        ref = torch.randn(2, 2, int(seconds * 8000), generator=gen)
        mix = ref.sum(1)
        long_mix = torch.randn(1, 10 * 8000, generator=gen)
        sides = {}
        for side, build in (("masksep", masksep_model), ("asteroid", asteroid_model)):
            model, loss_fn = build(name)
            sides[side] = (model, loss_fn, torch.optim.Adam(model.parameters(), lr=1e-3))
        params = {s: sum(p.numel() for p in v[0].parameters()) for s, v in sides.items()}

        def train_step(model, loss_fn, optimizer, mix=mix, ref=ref):
            model.train()
            loss = loss_fn(model(mix), ref)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        def infer(model, loss_fn, optimizer, long_mix=long_mix):
            model.eval()
            with torch.inference_mode():
                model(long_mix)

        train = timed_pair(sides, train_step, args.steps)
        inference = timed_pair(sides, infer, max(3, args.steps // 3))
        out[name] = {"params": params, "train_step_ms": train,
                     "train_ratio": train["masksep"] / train["asteroid"],
                     "inference_10s_ms": inference,
                     "inference_ratio": inference["masksep"] / inference["asteroid"]}
        print(json.dumps({name: out[name]}), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
