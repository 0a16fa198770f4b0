"""Parameters and multiply-accumulates (MACs) of a separator, per second of audio.

MACs come from torch's own FlopCounterMode (MACs = FLOPs / 2) on one forward
pass; the head's share from the counter's per-module breakdown. Torch has no
FLOP formula for its fused RNN kernels (an ``nn.LSTM`` counts as 0), so this
module registers one for them on import. Not counted, because torch counts no
FLOPs for them: elementwise ops (activations, norms, the mask product) and the
FFTs of the STFT front end.
"""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

from masksep.config import Config
from masksep.models.separator import Separator, build_model

aten = torch.ops.aten


def rnn_matmul_flops(input_shape, weight_shapes) -> int:
    """FLOPs of the gate matmuls of a fused RNN kernel.

    Every 2-D weight (input-to-hidden (G*H, I), hidden-to-hidden (G*H, H), and
    a projection if any; G = 4 gates for an LSTM) is applied once per time step
    per sequence of every direction and layer: 2 FLOPs per weight entry.
    ``input_shape[:-1]`` holds the steps times sequences in any layout
    (seq-first, batch-first or packed).
    """
    steps = math.prod(input_shape[:-1])
    return 2 * steps * sum(s[0] * s[1] for s in weight_shapes if len(s) == 2)


def _mkldnn_rnn_layer_flop(input, weight0, weight1, *args, out_shape=None, **kwargs) -> int:
    # CPU: one call per layer and direction; weight0 is W_ih, weight1 is W_hh.
    return rnn_matmul_flops(input, [weight0, weight1])


def _cudnn_rnn_flop(input, weight, *args, out_shape=None, **kwargs) -> int:
    # CUDA / ROCm: one call for the whole stack; ``weight`` lists every layer
    # and direction (biases are 1-D and skipped).
    return rnn_matmul_flops(input, weight)


def _register_rnn_formulas() -> None:
    # Guarded: a second import (or a later torch that ships its own formula)
    # must not raise "duplicate registrations".
    formulas = {
        "mkldnn_rnn_layer": _mkldnn_rnn_layer_flop,
        "_cudnn_rnn": _cudnn_rnn_flop,
        "miopen_rnn": _cudnn_rnn_flop,
    }
    for name, formula in formulas.items():
        op = getattr(aten, name, None)
        if op is not None and op not in flop_registry:
            register_flop_formula(op)(formula)


_register_rnn_formulas()


def count_complexity(model: Separator, sample_rate: int, seconds: float = 1.0) -> dict:
    """Params and MACs of ``model`` on a ``seconds``-long mixture, MACs per second.

    Returns ``{"params", "head_params", "macs_per_s", "head_macs_per_s"}`` (ints).
    The model is run once in eval mode without gradients on its own device and
    left in the mode it was in.
    """
    n_samples = max(1, round(seconds * sample_rate))
    param = next(model.parameters())
    generator = torch.Generator().manual_seed(0)
    mix = torch.randn(1, n_samples, generator=generator).to(device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(mix)
    finally:
        model.train(was_training)
    # The counter names modules by their path from the root's class name.
    head_key = f"{type(model).__name__}.head"
    head_flops = sum(counter.get_flop_counts().get(head_key, {}).values())
    duration = n_samples / sample_rate
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "head_params": sum(p.numel() for p in model.head.parameters()),
        "macs_per_s": round(counter.get_total_flops() / 2 / duration),
        "head_macs_per_s": round(head_flops / 2 / duration),
    }


def complexity(cfg: Config, seconds: float = 1.0) -> dict:
    """:func:`count_complexity` of the model that ``cfg`` describes, built on the CPU."""
    return count_complexity(build_model(cfg), cfg.sample_rate, seconds)
