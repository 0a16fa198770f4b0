"""Parameter and MAC counts: torch's flop counter, our LSTM formula, per-second scaling."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from masksep.complexity import complexity, count_complexity
from masksep.config import DPRNNConfig, from_dict, set_dotted
from masksep.models import build_model
from masksep.models.dprnn import DPRNN

aten = torch.ops.aten
SR = 8000


def tiny(overrides: dict | None = None):
    data: dict = {
        "n_src": 2,
        "sample_rate": SR,
        "encoder": {"n_filters": 16, "kernel_size": 8, "stride": 4},
        "backbone": {
            "tcn": {"bottleneck": 8, "hidden": 16, "layers": 2, "repeats": 1, "skip": 8},
            "dprnn": {"bottleneck": 8, "hidden": 8, "chunk_size": 10, "blocks": 1},
        },
    }
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return from_dict(data)


def _frames(model, seconds=1.0) -> int:
    rep, _ = model.frontend.encode(torch.zeros(1, round(seconds * SR)))
    return rep.shape[-1]


def test_keys_types_and_parameter_counts():
    model = build_model(tiny({"head.kind": "deep", "head.depth": 2, "head.width": 4}))
    stats = count_complexity(model, SR)
    assert set(stats) == {"params", "head_params", "macs_per_s", "head_macs_per_s"}
    assert all(type(v) is int for v in stats.values())
    assert stats["params"] == sum(p.numel() for p in model.parameters())
    # F=8 -> 4 -> tanh -> C*N = 32
    assert stats["head_params"] == (8 * 4 + 4) + (4 * 32 + 32)
    assert 0 < stats["head_macs_per_s"] < stats["macs_per_s"]


def test_complexity_builds_the_model_from_the_config():
    cfg = tiny({"backbone.kind": "dprnn"})
    assert complexity(cfg) == count_complexity(build_model(cfg), SR)


def test_counting_leaves_the_training_mode_and_weights_alone():
    model = build_model(tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    count_complexity(model, SR)
    assert model.training
    model.eval()
    count_complexity(model, SR)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("grouping", ["learned", "oracle"])
def test_shallow_og_head_macs_are_linear_in_p(grouping):
    macs = {}
    for p in (2, 4, 8):
        cfg = tiny(
            {"head.kind": "og", "head.depth": 1, "head.oversep": p, "head.grouping": grouping}
        )
        model = build_model(cfg)
        macs[p] = count_complexity(model, SR)["head_macs_per_s"]
        # Trunk: a 1x1 conv F=8 -> P*N per frame; learned grouping adds the
        # (C, P) x (P, N) product per frame.
        per_frame = 8 * p * 16 + (2 * p * 16 if grouping == "learned" else 0)
        assert macs[p] == per_frame * _frames(model)
    assert macs[4] == 2 * macs[2] and macs[8] == 4 * macs[2]


def test_deep_head_macs_grow_with_width_and_depth_one_matches_shallow():
    shallow = build_model(tiny({"head.kind": "shallow"}))
    deep1 = build_model(tiny({"head.kind": "deep", "head.depth": 1, "head.width": 64}))
    frames = _frames(shallow)
    assert count_complexity(shallow, SR)["head_macs_per_s"] == 8 * 32 * frames
    assert count_complexity(deep1, SR)["head_macs_per_s"] == 8 * 32 * frames

    previous = 0
    for width in (8, 16, 32, 64):
        cfg = tiny({"head.kind": "deep", "head.depth": 3, "head.width": width})
        head_macs = count_complexity(build_model(cfg), SR)["head_macs_per_s"]
        assert head_macs == (8 * width + width * width + width * 32) * frames
        assert head_macs > previous
        previous = head_macs


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_per_source_head_params_and_macs_match_a_hand_count(depth):
    # F = 8 features, N = 16 bins, C = 2 sources, width 6.
    f, n, c, w = 8, 16, 2, 6
    per_source = build_model(tiny({"head.kind": "deep", "head.depth": depth, "head.width": w,
                                   "head.layout": "per_source"}))
    joint = build_model(tiny({"head.kind": "deep", "head.depth": depth, "head.width": w}))
    frames = _frames(per_source)
    stats = count_complexity(per_source, SR)
    # SIMO F -> C*w, then the shared SISO: (depth - 2) layers w -> w and one w -> N,
    # whose weights are counted once but applied once per source.
    assert stats["head_params"] == (f * c * w + c * w) + (depth - 2) * (w * w + w) + (w * n + n)
    assert stats["head_macs_per_s"] == (f * c * w + c * ((depth - 2) * w * w + w * n)) * frames
    assert stats["params"] == sum(p.numel() for p in per_source.parameters())
    stats_joint = count_complexity(joint, SR)
    assert stats_joint["head_params"] == (f * w + w) + (depth - 2) * (w * w + w) + (w * c * n + c * n)
    assert stats_joint["head_macs_per_s"] == (f * w + (depth - 2) * w * w + w * c * n) * frames
    # Same backbone and front end: only the head differs.
    assert (stats["params"] - stats["head_params"]
            == stats_joint["params"] - stats_joint["head_params"])


def test_per_source_og_head_counts_p_siso_applications():
    f, n, p, w = 8, 16, 4, 6
    model = build_model(tiny({"head.kind": "og", "head.depth": 2, "head.width": w, "head.oversep": p,
                              "head.layout": "per_source"}))
    stats = count_complexity(model, SR)
    # SIMO F -> P*w, SISO w -> N per output, the (C, P) grouping logits and product.
    assert stats["head_params"] == (f * p * w + p * w) + (w * n + n) + 2 * p
    assert stats["head_macs_per_s"] == (f * p * w + p * w * n + 2 * p * n) * _frames(model)


def test_gated_output_adds_three_n_by_n_convs_per_mask():
    plain = count_complexity(build_model(tiny()), SR)["head_macs_per_s"]
    gated_model = build_model(tiny({"head.gated_output": True}))
    gated = count_complexity(gated_model, SR)["head_macs_per_s"]
    assert gated - plain == 2 * 3 * 16 * 16 * _frames(gated_model)


def test_macs_are_per_second_of_audio():
    model = build_model(tiny())
    one = count_complexity(model, SR, seconds=1.0)["macs_per_s"]
    two = count_complexity(model, SR, seconds=2.0)["macs_per_s"]
    # Equal up to the few padded frames at the edges.
    assert abs(one - two) / one < 0.01
    assert count_complexity(model, 2 * SR, seconds=1.0)["macs_per_s"] > 1.9 * one


# --------------------------------------------------------------------------- LSTM


def _lstm_flops(steps: int, inp: int, hidden: int, directions: int) -> int:
    # 4 gates x (input + hidden) x hidden multiply-adds, 2 FLOPs each, per step and direction
    return 2 * 4 * (inp + hidden) * hidden * steps * directions


@pytest.mark.parametrize("bidirectional", [True, False])
def test_lstm_flops_are_counted_and_match_the_analytic_count(bidirectional):
    cfg = DPRNNConfig(bottleneck=8, hidden=8, chunk_size=10, blocks=1, bidirectional=bidirectional)
    dprnn = DPRNN(16, cfg).eval()
    frames = 45
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        dprnn(torch.randn(2, 16, frames))
    counts = counter.get_flop_counts()
    intra = sum(counts["DPRNN.blocks.0.intra_rnn"].values())
    inter = sum(counts["DPRNN.blocks.0.inter_rnn"].values())
    left, right = dprnn.padding(frames)
    n_chunks = (left + frames + right - cfg.chunk_size) // dprnn.hop + 1
    positions = 2 * cfg.chunk_size * n_chunks  # batch x K x S: every (chunk, offset) pair
    assert intra == _lstm_flops(positions, 8, 8, 2) > 0
    assert inter == _lstm_flops(positions, 8, 8, 2 if bidirectional else 1) > 0


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_lstm_formula_agrees_with_torchs_own_count_of_the_unfused_lstm():
    """Without oneDNN the CPU LSTM runs as plain matmuls that torch counts
    itself; our formula for the fused kernel must give the same number."""
    lstm = torch.nn.LSTM(6, 5, num_layers=2, batch_first=True, bidirectional=True).eval()
    x = torch.randn(3, 7, 6)
    with torch.no_grad(), FlopCounterMode(display=False) as fused:
        lstm(x)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        with FlopCounterMode(display=False) as unfused:
            lstm(x)
    assert aten.mkldnn_rnn_layer in fused.get_flop_counts()["Global"]
    assert aten.mkldnn_rnn_layer not in unfused.get_flop_counts()["Global"]
    expected = _lstm_flops(21, 6, 5, 2) + _lstm_flops(21, 10, 5, 2)
    assert fused.get_total_flops() == unfused.get_total_flops() == expected


def test_cudnn_lstm_formula():
    """The CUDA kernel gets every layer's weights in one call (checked on
    shapes alone: there is no GPU here)."""
    formula = flop_registry[aten._cudnn_rnn]
    hidden, inp, steps, batch = 5, 6, 7, 3
    meta = {"device": "meta"}
    weights = []
    for layer_in in (inp, 2 * hidden):  # 2 layers, bidirectional
        for _ in range(2):
            weights += [
                torch.empty(4 * hidden, layer_in, **meta),
                torch.empty(4 * hidden, hidden, **meta),
                torch.empty(4 * hidden, **meta),
                torch.empty(4 * hidden, **meta),
            ]
    x = torch.empty(batch, steps, inp, **meta)
    hx = torch.empty(4, batch, hidden, **meta)
    flops = formula(
        x, weights, 4, None, hx, hx, 2, hidden, 0, 2, True, 0.0, False, True, [], None, out_val=None
    )
    assert flops == _lstm_flops(steps * batch, inp, hidden, 2) + _lstm_flops(
        steps * batch, 2 * hidden, hidden, 2
    )


def test_dprnn_separator_macs_include_the_lstms():
    model = build_model(tiny({"backbone.kind": "dprnn"}))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.randn(1, SR // 4))
    lstm_flops = sum(
        v for op, v in counter.get_flop_counts()["Global"].items() if op is aten.mkldnn_rnn_layer
    )
    stats = count_complexity(model, SR, seconds=0.25)
    assert lstm_flops > 0
    assert stats["macs_per_s"] == counter.get_total_flops() // 2 * 4
    assert stats["macs_per_s"] > lstm_flops // 2 * 4
