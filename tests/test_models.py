"""Front ends, backbones, mask heads and the assembled separator."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

from masksep import config as config_mod
from masksep import models
from masksep.config import Config, HeadConfig, from_dict, load_config, set_dotted
from masksep.errors import ConfigError
from masksep.models import Separator, build_model
from masksep.models.dprnn import DPRNN
from masksep.models.encoders import ConvFrontEnd, STFTFrontEnd
from masksep.models.heads import MaskHead
from masksep.models.layers import GlobalLayerNorm
from masksep.models.registry import Registry
from masksep.models.tcn import TCN

REPO = Path(__file__).resolve().parents[1]

HEADS = {
    "shallow": {"head.kind": "shallow"},
    "deep": {"head.kind": "deep", "head.depth": 3, "head.width": 12},
    "og-learned": {"head.kind": "og", "head.oversep": 3, "head.grouping": "learned"},
    "og-oracle": {"head.kind": "og", "head.oversep": 3, "head.grouping": "oracle"},
}
ENCODERS = {
    "conv": {
        "encoder.kind": "conv",
        "encoder.n_filters": 16,
        "encoder.kernel_size": 8,
        "encoder.stride": 4,
    },
    "stft": {"encoder.kind": "stft", "encoder.kernel_size": 16, "encoder.stride": 4},
}


def tiny(overrides: dict | None = None) -> Config:
    """A config small enough to run forward and backward in milliseconds."""
    data: dict = {
        "n_src": 2,
        "backbone": {
            "tcn": {"bottleneck": 8, "hidden": 16, "layers": 2, "repeats": 1, "skip": 8},
            "dprnn": {"bottleneck": 8, "hidden": 8, "chunk_size": 10, "blocks": 1},
        },
    }
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return from_dict(data)


def _seeded(cfg: Config) -> Separator:
    torch.manual_seed(0)
    return build_model(cfg)


# --------------------------------------------------------------------------- whole separator


@pytest.mark.parametrize(
    "head,gated,backbone,encoder",
    list(itertools.product(HEADS, [False, True], ["tcn", "dprnn"], ENCODERS)),
)
def test_shapes_and_gradients(head, gated, backbone, encoder):
    cfg = tiny(
        {**HEADS[head], **ENCODERS[encoder], "backbone.kind": backbone, "head.gated_output": gated}
    )
    model = _seeded(cfg)
    expected_out = 3 if head == "og-oracle" else 2
    assert model.n_out == expected_out
    assert model.n_src == 2
    assert model.oracle_grouping == (head == "og-oracle")

    mix = torch.randn(2, 803)  # odd: not a multiple of any stride or chunk
    out = model(mix)
    assert out.shape == (2, expected_out, 803)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()

    target = torch.randn_like(out)
    ((out - target) ** 2).mean().backward()
    # With a skip path nothing reads the last TCN block's residual conv (kept,
    # as in Asteroid, for equal parameter counts).
    unused = (
        {
            f"backbone.blocks.{len(model.backbone.blocks) - 1}.res_conv.{p}"
            for p in ("weight", "bias")
        }
        if backbone == "tcn"
        else set()
    )
    for name, param in model.named_parameters():
        if name in unused:
            assert param.grad is None
            continue
        assert param.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("length", [1, 5, 8, 9, 63, 101])
@pytest.mark.parametrize("backbone", ["tcn", "dprnn"])
@pytest.mark.parametrize("encoder", list(ENCODERS))
def test_any_input_length_comes_back_at_that_length(length, backbone, encoder):
    cfg = tiny({**ENCODERS[encoder], "backbone.kind": backbone})
    out = _seeded(cfg)(torch.randn(1, length))
    assert out.shape == (1, 2, length)
    assert torch.isfinite(out).all()


def test_build_model_dispatches_on_the_config():
    tcn = build_model(tiny({"backbone.kind": "tcn"}))
    dprnn = build_model(tiny({"backbone.kind": "dprnn", **ENCODERS["stft"]}))
    assert isinstance(tcn.backbone, TCN) and isinstance(tcn.frontend, ConvFrontEnd)
    assert isinstance(dprnn.backbone, DPRNN) and isinstance(dprnn.frontend, STFTFrontEnd)
    assert dprnn.frontend.n_bins == 9 == dprnn.head.n_bins


def test_separator_rejects_a_mixture_without_a_batch_axis():
    with pytest.raises(ValueError, match="batch, time"):
        build_model(tiny())(torch.randn(100))


def test_masks_multiply_the_encoding_and_decode_sums_linearly():
    """With unit masks on every output, each output is the decoded mixture
    representation: all outputs equal, and (stft) equal to the mixture."""
    cfg = tiny(ENCODERS["stft"])
    model = build_model(cfg)
    mix = torch.randn(2, 301)
    rep, _ = model.encode(mix)
    masked = model.apply_masks(torch.ones(2, 3, *rep.shape[1:]), rep)
    out = model.decode(masked, 301)
    assert out.shape == (2, 3, 301)
    torch.testing.assert_close(out, mix.unsqueeze(1).expand(-1, 3, -1), atol=1e-5, rtol=0)


def test_each_step_of_the_separator_can_be_replaced_alone():
    """Unit masks from a replaced head step: the rest of the chain (encode,
    apply masks, decode) is untouched, so an STFT separator returns the mixture."""

    class UnitMasks(Separator):
        def estimate_masks(self, hidden):
            assert hidden.shape[1] == self.backbone.out_features
            return torch.ones(hidden.shape[0], self.n_out, self.head.n_bins, hidden.shape[-1])

    model = build_model(tiny(ENCODERS["stft"]))
    unit = UnitMasks(model.frontend, model.backbone, model.head, model.n_src)
    mix = torch.randn(2, 301)
    torch.testing.assert_close(unit(mix), mix.unsqueeze(1).expand(-1, 2, -1), atol=1e-5, rtol=0)
    assert not torch.allclose(model(mix), unit(mix), atol=1e-3)  # the real head does differ


def test_one_seed_gives_every_head_the_same_front_end_and_backbone():
    """Common random numbers: build_model draws the head's weights last."""
    from masksep.train import initial_model

    def parts(head: str, seed: int = 7, **extra) -> dict[str, torch.Tensor]:
        model = initial_model(tiny({**HEADS[head], "seed": seed, **extra}))
        return {
            f"{part}.{name}": value
            for part in ("frontend", "backbone")
            for name, value in getattr(model, part).state_dict().items()
        }

    reference = parts("shallow")
    variants = [parts(head) for head in ("deep", "og-learned", "og-oracle")]
    variants.append(parts("deep", **{"head.gated_output": True}))
    for variant in variants:
        assert variant.keys() == reference.keys()
        for name, value in reference.items():
            assert torch.equal(variant[name], value), name
    other_seed = parts("shallow", seed=8)
    assert not all(torch.equal(other_seed[name], value) for name, value in reference.items())


# --------------------------------------------------------------------------- registries


def test_config_choices_are_the_registries_names():
    hints = {
        "encoder.kind": typing.get_type_hints(config_mod.EncoderConfig)["kind"],
        "backbone.kind": typing.get_type_hints(config_mod.BackboneConfig)["kind"],
        "head.kind": typing.get_type_hints(HeadConfig)["kind"],
        "head.hidden_act": typing.get_type_hints(HeadConfig)["hidden_act"],
        "head.mask_act": typing.get_type_hints(HeadConfig)["mask_act"],
        "head.layout": typing.get_type_hints(HeadConfig)["layout"],
    }
    registries = [models.ENCODERS, models.BACKBONES, models.HEADS, models.HIDDEN_ACTIVATIONS,
                  models.MASK_ACTIVATIONS, models.HEAD_LAYOUTS]
    for registry in registries:
        assert typing.get_args(hints[registry.field]) == registry.names()
    assert models.HEADS.names() == ("shallow", "deep", "og")
    assert models.HEAD_LAYOUTS.names() == ("joint", "per_source")
    # Each default is one of its field's names.
    cfg = Config()
    defaults = [cfg.encoder.kind, cfg.backbone.kind, cfg.head.kind, cfg.head.hidden_act,
                cfg.head.mask_act, cfg.head.layout]
    assert all(d in r for d, r in zip(defaults, registries, strict=True))


def test_an_unknown_name_is_one_line_naming_the_field():
    registry = Registry("head.kind", {"a": int, "b": float})
    assert registry.names() == ("a", "b") and registry.get("b") is float
    with pytest.raises(ConfigError, match=r"^head\.kind: unknown name 'c' \(known: a, b\)$"):
        registry.get("c")
    with pytest.raises(ConfigError, match="head.kind"):
        registry.get(["a"])  # unhashable
    # A config that skipped validation (a dataclass edited by hand) is refused the same way.
    cfg = tiny()
    cfg.backbone.kind = "transformer"
    with pytest.raises(ConfigError, match=r"^backbone\.kind: unknown name 'transformer'"):
        build_model(cfg)


def _docs_head_example() -> tuple[str, str, str, str]:
    """(file text, import line, registry line, names line) of docs/extending.md's "Adding a mask head"."""
    page = (REPO / "docs" / "extending.md").read_text()
    section = page.split("## Adding a mask head", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 3, "the docs section should show the file, the registry and the name"
    head_file, registry_edit, spec_edit = blocks
    assert head_file.startswith("# masksep/models/context_head.py\n")
    assert registry_edit.startswith("# masksep/models/separator.py\n")
    assert spec_edit.startswith("# masksep/models/spec.py\n")
    import_line = registry_edit.splitlines()[1]
    (entry,) = [line for line in registry_edit.splitlines() if "# the new line" in line]
    (names,) = [line for line in spec_edit.splitlines() if line.startswith("HEAD_KINDS = ")]
    return head_file, import_line, entry, names


def test_the_docs_head_section_names_every_head_config_field():
    import dataclasses

    page = (REPO / "docs" / "extending.md").read_text()
    section = page.split("## Adding a mask head", 1)[1].split("\n## ", 1)[0]
    prose = section.split("```", 1)[0]
    missing = [f.name for f in dataclasses.fields(HeadConfig) if f"`{f.name}`" not in prose]
    assert not missing, f"docs/extending.md's 'Adding a mask head' does not name HeadConfig's {missing}"
    assert "`per_source`" in prose and "`joint`" in prose


def test_the_docs_head_example_is_one_file_a_registry_line_and_a_name(tmp_path):
    """docs/extending.md's example head, added to a copy of the package exactly as the
    page says, is accepted by the config and trained a step by build_model's model."""
    head_file, import_line, entry, names = _docs_head_example()
    package = tmp_path / "masksep"
    shutil.copytree(REPO / "masksep", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "models" / "context_head.py").write_text(head_file)
    separator = package / "models" / "separator.py"
    text = separator.read_text()
    for anchor in ("from masksep.models.heads import MaskHead\n", '        "og": MaskHead,\n'):
        assert text.count(anchor) == 1, f"separator.py no longer has {anchor!r}"
    text = text.replace("from masksep.models.heads import MaskHead\n",
                        f"from masksep.models.heads import MaskHead\n{import_line}\n")
    text = text.replace('        "og": MaskHead,\n', f'        "og": MaskHead,\n{entry}\n')
    separator.write_text(text)
    spec = package / "models" / "spec.py"
    spec_text = spec.read_text()
    (old,) = [line for line in spec_text.splitlines() if line.startswith("HEAD_KINDS = ")]
    spec.write_text(spec_text.replace(old, names))

    script = """
import json, sys, torch
import masksep
from masksep.config import load_config
from masksep.losses import separation_loss
from masksep.models import build_model
cfg = load_config(None, sys.argv[1:])
torch.manual_seed(0)
model = build_model(cfg)
mix, ref = torch.randn(2, 800), torch.randn(2, 2, 800)
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
losses = []
for _ in range(3):
    loss = separation_loss(model(mix), ref, model.oracle_grouping)
    opt.zero_grad(); loss.backward(); opt.step()
    losses.append(loss.item())
print(json.dumps({"package": masksep.__file__, "head": type(model.head).__name__,
                  "shape": list(model(mix).shape), "losses": losses}))
"""
    sets = ["head.kind=context", "encoder.n_filters=16", "backbone.tcn.bottleneck=8",
            "backbone.tcn.hidden=16", "backbone.tcn.layers=2", "backbone.tcn.repeats=1",
            "backbone.tcn.skip=8"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script, *sets], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["package"] == str(package / "__init__.py")  # the copy, not the checkout
    assert out["head"] == "ContextHead"
    assert out["shape"] == [2, 2, 800]
    assert all(math.isfinite(v) for v in out["losses"])
    assert out["losses"][-1] < out["losses"][0]  # it learns: fitting one batch
    # And in this checkout, without the two edits, the name is refused.
    with pytest.raises(ConfigError, match="head.kind"):
        load_config(None, ["head.kind=context"])


# --------------------------------------------------------------------------- paper models


@pytest.mark.parametrize(
    "name,params,head_params",
    [
        # Asteroid ConvTasNet(n_src=2) defaults; head = mask 1x1 conv 128 -> 2*512.
        ("convtasnet-paper", 5_050_545, 128 * 1024 + 1024),
        # Asteroid DPRNNTasNet(n_src=2, n_filters=64, kernel_size=2, stride=1, bn_chan=64,
        # hid_size=128, chunk_size=250, n_repeats=6); head = first_out conv
        # 64 -> 2*64 plus the gated output layer (3 convs 64 -> 64, two with bias).
        ("dprnn-paper", 2_608_065, 64 * 128 + 128 + 3 * 64 * 64 + 2 * 64),
    ],
)
def test_paper_parameter_counts(name, params, head_params):
    cfg = load_config(REPO / "sweeps" / "trials" / f"{name}.yaml")
    assert cfg.sample_rate == 8000
    model = build_model(cfg)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) <= 0.01 * params  # the acceptance bound
    assert count == params  # and exact, since the layout is Asteroid's
    assert sum(p.numel() for p in model.head.parameters()) == head_params


# --------------------------------------------------------------------------- front ends


@pytest.mark.parametrize("kernel_size,stride", [(8, 4), (8, 2), (6, 3), (2, 1), (16, 8)])
@pytest.mark.parametrize("length", [1, 7, 8, 33, 250])
def test_conv_frontend_trims_back_to_the_input(kernel_size, stride, length):
    """Unit-delta filters make encoder + decoder an exact identity only if the
    padding covers every sample equally and the decoder output is trimmed at
    the right offset; a shift of one sample fails."""
    frontend = ConvFrontEnd(n_filters=kernel_size, kernel_size=kernel_size, stride=stride)
    overlap = kernel_size // stride
    with torch.no_grad():
        eye = torch.eye(kernel_size).unsqueeze(1)  # filter n picks sample n of the frame
        frontend.encoder.weight.copy_(eye)
        frontend.decoder.weight.copy_(eye / overlap)
    mix = torch.rand(3, length) + 0.1  # positive, so the encoder's ReLU keeps it all
    rep, feats = frontend.encode(mix)
    assert feats is rep
    left, right = frontend.padding(length)
    assert rep.shape == (3, kernel_size, (left + length + right - kernel_size) // stride + 1)
    out = frontend.decode(rep.unsqueeze(1), length)
    assert out.shape == (3, 1, length)
    torch.testing.assert_close(out[:, 0], mix, atol=1e-6, rtol=0)


def test_conv_frontend_pads_both_ends_by_the_overlap():
    frontend = ConvFrontEnd(64, 16, 8)
    for length in range(1, 60):
        left, right = frontend.padding(length)
        assert left == 8
        assert right >= 8
        assert (left + length + right - 16) % 8 == 0
        assert right < 8 + 8  # never a whole frame more than needed


def test_conv_frontend_is_learned_filterbank_with_relu():
    frontend = build_model(tiny()).frontend
    assert isinstance(frontend, ConvFrontEnd) and frontend.n_bins == 64
    assert frontend.encoder.bias is None and frontend.decoder.bias is None
    rep, _ = frontend.encode(torch.randn(2, 100))
    assert (rep >= 0).all() and (rep == 0).any()


@pytest.mark.parametrize("n_fft,hop", [(16, 4), (32, 8), (16, 8), (256, 64)])
@pytest.mark.parametrize("length", [1, 9, 255, 1001])
def test_stft_round_trip_with_unit_masks(n_fft, hop, length):
    frontend = STFTFrontEnd(n_fft, hop)
    mix = torch.randn(2, length)
    rep, feats = frontend.encode(mix)
    assert rep.is_complex() and not feats.is_complex()
    assert rep.shape == (2, n_fft // 2 + 1, 1 + length // hop)
    torch.testing.assert_close(feats, rep.abs())
    out = frontend.decode(torch.ones(2, 2, *rep.shape[1:]) * rep.unsqueeze(1), length)
    assert out.shape == (2, 2, length)
    torch.testing.assert_close(out, mix.unsqueeze(1).expand(-1, 2, -1), atol=1e-5, rtol=0)


def test_stft_window_is_periodic_hann_and_not_in_the_state_dict():
    frontend = STFTFrontEnd(16, 4)
    torch.testing.assert_close(frontend.window, torch.hann_window(16, periodic=True))
    assert frontend.window[0] == 0 and frontend.window[8] == 1  # periodic, not symmetric
    assert "window" not in frontend.state_dict()


# --------------------------------------------------------------------------- backbones


def test_global_layer_norm_normalises_each_example_over_channels_and_time():
    norm = GlobalLayerNorm(6)
    assert sum(p.numel() for p in norm.parameters()) == 12
    x = torch.randn(3, 6, 50) * torch.tensor([1.0, 10.0, 100.0]).view(3, 1, 1) + 5
    y = norm(x)
    torch.testing.assert_close(y.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(1, 2), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    with torch.no_grad():
        norm.gamma.fill_(2.0)
        norm.beta.fill_(1.0)
    torch.testing.assert_close(norm(x).mean(dim=(1, 2)), torch.ones(3), atol=1e-5, rtol=0)
    z = norm(torch.randn(2, 6, 4, 5))  # DPRNN's (batch, C, K, S)
    assert z.shape == (2, 6, 4, 5)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("skip,kernel_size", [(8, 3), (0, 3), (8, 4)])
def test_tcn_keeps_frames_and_reports_its_width(skip, kernel_size):
    cfg = tiny({"backbone.tcn.skip": skip, "backbone.tcn.kernel_size": kernel_size}).backbone.tcn
    tcn = TCN(16, cfg)
    assert tcn.out_features == (skip or cfg.bottleneck)
    assert len(tcn.blocks) == cfg.layers * cfg.repeats
    dilations = [block.shared[3].dilation[0] for block in tcn.blocks]
    assert dilations == [2**x for _ in range(cfg.repeats) for x in range(cfg.layers)]
    assert all((block.skip_conv is None) == (skip == 0) for block in tcn.blocks)
    assert tcn(torch.randn(2, 16, 37)).shape == (2, tcn.out_features, 37)


@pytest.mark.parametrize("chunk_size", [10, 7, 3, 2])
@pytest.mark.parametrize("frames", [1, 4, 10, 33])
def test_dprnn_overlap_add_inverts_chunking(chunk_size, frames):
    cfg = tiny({"backbone.dprnn.chunk_size": chunk_size}).backbone.dprnn
    dprnn = DPRNN(16, cfg)
    x = torch.randn(2, 5, frames)
    chunks = dprnn.chunk(x)
    assert chunks.shape[:3] == (2, 5, chunk_size)
    torch.testing.assert_close(dprnn.overlap_add(chunks, frames), x)
    # Every frame, the first and last included, sits in at least two chunks.
    positions = dprnn.chunk((torch.arange(frames) + 1.0).view(1, 1, frames))
    cover = torch.bincount(positions.flatten().long(), minlength=frames + 1)[1:]
    assert cover.min() >= 2


@pytest.mark.parametrize("bidirectional", [True, False])
def test_dprnn_shapes_and_inter_direction(bidirectional):
    cfg = tiny({"backbone.dprnn.bidirectional": bidirectional}).backbone.dprnn
    dprnn = DPRNN(16, cfg)
    assert dprnn.out_features == cfg.bottleneck
    block = dprnn.blocks[0]
    assert block.intra_rnn.bidirectional
    assert block.inter_rnn.bidirectional == bidirectional
    assert block.inter_linear.in_features == cfg.hidden * (2 if bidirectional else 1)
    assert dprnn(torch.randn(2, 16, 45)).shape == (2, cfg.bottleneck, 45)


# --------------------------------------------------------------------------- heads


def _head(in_features=8, n_bins=5, n_src=2, **fields) -> MaskHead:
    return MaskHead(in_features, n_bins, n_src, HeadConfig(**fields))


@pytest.mark.parametrize("mask_act", ["sigmoid", "relu", "softmax", "linear"])
@pytest.mark.parametrize("gated", [False, True])
def test_deep_head_with_depth_one_is_the_shallow_head(mask_act, gated):
    torch.manual_seed(1)
    shallow = _head(kind="shallow", mask_act=mask_act, gated_output=gated)
    deep = _head(kind="deep", depth=1, width=99, mask_act=mask_act, gated_output=gated)
    deep.load_state_dict(shallow.state_dict())  # same parameter names and shapes
    feats = torch.randn(2, 8, 11)
    assert torch.equal(deep(feats), shallow(feats))
    assert sum(p.numel() for p in deep.parameters()) == 8 * 10 + 10 + (3 * 25 + 10) * gated


@pytest.mark.parametrize("mask_act", ["sigmoid", "softmax"])
@pytest.mark.parametrize("depth", [1, 3])
def test_og_with_p_equal_c_and_identity_grouping_is_the_plain_head(mask_act, depth):
    kind = "shallow" if depth == 1 else "deep"
    torch.manual_seed(2)
    plain = _head(kind=kind, depth=depth, width=6, mask_act=mask_act)
    og = _head(kind="og", depth=depth, width=6, mask_act=mask_act, oversep=2, grouping="learned")
    state = dict(plain.state_dict(), group_logits=1e4 * torch.eye(2))
    og.load_state_dict(state)
    feats = torch.randn(3, 8, 7)
    # softmax(1e4 * eye) is exactly the identity in float32, so this is exact.
    assert torch.equal(og(feats), plain(feats))


def test_learned_grouping_starts_round_robin_and_soft():
    head = _head(kind="og", oversep=5, n_src=2, mask_act="softmax")
    weights = head.grouping_weights()
    assert weights.shape == (2, 5)
    torch.testing.assert_close(weights.sum(dim=0), torch.ones(5))
    assert weights.argmax(dim=0).tolist() == [0, 1, 0, 1, 0]
    torch.testing.assert_close(weights.max(dim=0).values, torch.full((5,), 0.9))
    three = _head(kind="og", oversep=4, n_src=3).grouping_weights()
    assert three.argmax(dim=0).tolist() == [0, 1, 2, 0]
    torch.testing.assert_close(three.max(dim=0).values, torch.full((4,), 0.9))
    # Softmax over P, then columns that sum to one: the C grouped masks still
    # sum to one at every time-frequency point.
    masks = head(torch.randn(2, 8, 9))
    assert masks.shape == (2, 2, 5, 9)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, 5, 9))


def test_oracle_grouping_returns_p_masks_softmaxed_over_p():
    head = _head(kind="og", oversep=4, grouping="oracle", mask_act="softmax")
    assert head.n_out == 4 and head.oracle_grouping
    assert head.grouping_weights() is None
    assert not any("group" in name for name, _ in head.named_parameters())
    masks = head(torch.randn(2, 8, 9))
    assert masks.shape == (2, 4, 5, 9)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, 5, 9))


@pytest.mark.parametrize("mask_act", ["sigmoid", "relu", "softmax", "linear"])
def test_mask_activations(mask_act):
    torch.manual_seed(3)
    masks = _head(kind="shallow", mask_act=mask_act)(torch.randn(2, 8, 30) * 5)
    if mask_act == "sigmoid":
        assert ((masks > 0) & (masks < 1)).all()
    elif mask_act == "relu":
        assert (masks >= 0).all() and (masks == 0).any()
    elif mask_act == "softmax":
        torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, 5, 30))
    else:
        assert (masks < 0).any() and (masks > 1).any()


@pytest.mark.parametrize("hidden_act", ["tanh", "relu", "prelu", "sigmoid", "gelu"])
def test_deep_head_layout(hidden_act):
    head = _head(kind="deep", depth=3, width=12, hidden_act=hidden_act)
    convs = [m for m in head.trunk if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(8, 12), (12, 12), (12, 10)]
    assert len(head.trunk) == 5  # conv, act, conv, act, conv: no activation after the last
    acts = [type(head.trunk[i]).__name__.lower() for i in (1, 3)]
    assert acts == [hidden_act] * 2


def _joint_reference(in_features, n_bins, n_masks, depth, width, hidden_act):
    """The joint trunk as masksep built it before head.layout existed, layer by layer."""
    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "prelu": torch.nn.PReLU}
    layers, width_in = [], in_features
    for _ in range(depth - 1):
        layers += [torch.nn.Conv1d(width_in, width, 1), acts[hidden_act]()]
        width_in = width
    layers.append(torch.nn.Conv1d(width_in, n_masks * n_bins, 1))
    return torch.nn.Sequential(*layers)


@pytest.mark.parametrize("kind,oversep", [("deep", 2), ("og", 3)])
@pytest.mark.parametrize("hidden_act", ["tanh", "prelu"])
def test_joint_layout_is_the_default_and_builds_the_head_it_always_did(kind, oversep, hidden_act):
    assert HeadConfig().layout == "joint" and Config().head.layout == "joint"
    fields = dict(kind=kind, depth=3, width=12, oversep=oversep, hidden_act=hidden_act)
    torch.manual_seed(7)
    default = _head(**fields)
    torch.manual_seed(7)
    joint = _head(layout="joint", **fields)
    torch.manual_seed(7)
    reference = _joint_reference(8, 5, oversep, 3, 12, hidden_act)
    # An og head's learned grouping has a fixed start (no random draw); parameters before modules.
    expected = {"group_logits": default.group_logits.detach()} if kind == "og" else {}
    expected.update({f"trunk.{k}": v for k, v in reference.state_dict().items()})
    for head in (default, joint):
        state = head.state_dict()
        assert list(state) == list(expected)  # same names, same order
        assert all(torch.equal(state[k], expected[k]) for k in expected)  # same draws
    feats = torch.randn(2, 8, 7)
    assert torch.equal(default(feats), joint(feats))


def test_per_source_head_is_a_simo_layer_then_one_siso_mlp_shared_by_the_sources():
    torch.manual_seed(4)
    head = _head(kind="deep", depth=3, width=12, layout="per_source", hidden_act="tanh")
    assert head.layout == "per_source"
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "trunk.0.weight": (2 * 12, 8, 1), "trunk.0.bias": (2 * 12,),  # SIMO: F -> C*width
        "trunk.2.net.0.weight": (12, 12, 1), "trunk.2.net.0.bias": (12,),  # SISO, shared
        "trunk.2.net.2.weight": (5, 12, 1), "trunk.2.net.2.bias": (5,),  # width -> N
    }
    feats = torch.randn(3, 8, 7)
    masks = head(feats)
    assert masks.shape == (3, 2, 5, 7)
    # By hand: source c's feature is rows [12c, 12c + 12) of the SIMO conv, and the
    # same two SISO layers map every source's feature to its mask.
    simo, siso = head.trunk[0], head.trunk[2].net

    def conv(layer, x):
        return torch.einsum("oi,bit->bot", layer.weight[..., 0], x) + layer.bias[:, None]

    for c in range(2):
        feature = torch.tanh(conv(simo, feats)[:, 12 * c: 12 * (c + 1)])
        mask = torch.sigmoid(conv(siso[2], torch.tanh(conv(siso[0], feature))))
        torch.testing.assert_close(masks[:, c], mask)
    # Shared: swapping the two sources' SIMO rows swaps their masks, nothing else.
    with torch.no_grad():
        for p in (simo.weight, simo.bias):
            p.copy_(torch.cat([p[12:], p[:12]]))
    swapped = head(feats)
    torch.testing.assert_close(swapped[:, 0], masks[:, 1])
    torch.testing.assert_close(swapped[:, 1], masks[:, 0])


def test_per_source_at_depth_two_has_no_hidden_siso_layer():
    head = _head(kind="deep", depth=2, width=12, layout="per_source", hidden_act="prelu")
    assert [tuple(v.shape) for v in head.state_dict().values()] == [
        (24, 8, 1), (24,), (1,), (5, 12, 1), (5,)]  # SIMO, PReLU's slope, SISO 12 -> N
    assert head(torch.randn(2, 8, 3)).shape == (2, 2, 5, 3)


@pytest.mark.parametrize("mask_act", ["sigmoid", "softmax"])
@pytest.mark.parametrize("gated", [False, True])
def test_per_source_head_with_depth_one_is_the_shallow_head(mask_act, gated):
    torch.manual_seed(5)
    shallow = _head(kind="shallow", mask_act=mask_act, gated_output=gated)
    per_source = _head(kind="deep", depth=1, width=99, layout="per_source", mask_act=mask_act,
                       gated_output=gated)
    assert per_source.layout == "joint"  # what it computes: one conv F -> C*N
    assert ({k: v.shape for k, v in per_source.state_dict().items()}
            == {k: v.shape for k, v in shallow.state_dict().items()})
    per_source.load_state_dict(shallow.state_dict())
    feats = torch.randn(2, 8, 11)
    assert torch.equal(per_source(feats), shallow(feats))


@pytest.mark.parametrize("grouping", ["learned", "oracle"])
def test_per_source_og_head_makes_one_feature_per_overseparated_output(grouping):
    torch.manual_seed(6)
    head = _head(kind="og", depth=3, width=12, oversep=4, grouping=grouping, layout="per_source",
                 mask_act="softmax")
    assert head.trunk[0].weight.shape == (4 * 12, 8, 1)  # P features, not C
    assert head.trunk[2].net[-1].weight.shape == (5, 12, 1)
    masks = head(torch.randn(2, 8, 9))
    assert masks.shape == (2, 2 if grouping == "learned" else 4, 5, 9)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, 5, 9))  # grouping as for joint
    if grouping == "learned":
        assert head.grouping_weights().shape == (2, 4)
    # Depth 1: the shallow og head, the same parameters.
    torch.manual_seed(6)
    shallow_og = _head(kind="og", depth=1, oversep=4, grouping=grouping)
    torch.manual_seed(6)
    per_source_og = _head(kind="og", depth=1, oversep=4, grouping=grouping, layout="per_source")
    assert all(torch.equal(a, b) for a, b in zip(shallow_og.state_dict().values(),
                                                 per_source_og.state_dict().values(), strict=True))


def test_a_bad_layout_is_one_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"^head\.layout: must be one of 'joint' \| 'per_source'"):
        tiny({"head.layout": "per-source"})
    cfg = tiny({"head.kind": "deep", "head.depth": 3, "head.width": 6, "head.layout": "per_source"})
    model = _seeded(cfg)
    assert model.head.trunk[0].out_channels == 2 * 6
    assert model(torch.randn(2, 400)).shape == (2, 2, 400)


def test_gated_output_is_shared_across_outputs():
    head = _head(kind="og", oversep=4, grouping="oracle", gated_output=True, n_bins=6)
    gate = head.gate
    assert [tuple(c.weight.shape) for c in (gate.net_out, gate.net_gate, gate.end_conv)] == [
        (6, 6, 1)
    ] * 3
    assert gate.end_conv.bias is None
    # Same weights for every mask: a mask's output depends only on its own input.
    pre = torch.randn(1, 4, 6, 5)
    swapped = pre[:, [1, 0, 2, 3]]
    assert torch.equal(gate(swapped)[:, 0], gate(pre)[:, 1])


# --------------------------------------------------------------------------- fast layers


def _reference_gln(module, x):
    """gLN as Luo & Mesgarani write it (the formula masksep used before F.group_norm)."""
    dims = tuple(range(1, x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).pow(2).mean(dim=dims, keepdim=True)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean) * torch.rsqrt(var + module.eps) * module.gamma.view(shape) + module.beta.view(shape)


def test_fast_layers_compute_the_reference_formulas():
    from masksep.models.layers import DepthwiseConv1d, GlobalLayerNorm

    torch.manual_seed(0)
    for shape in [(3, 8, 50), (2, 8, 7, 9)]:
        norm = GlobalLayerNorm(8)
        with torch.no_grad():
            norm.gamma.uniform_(0.5, 1.5)
            norm.beta.uniform_(-1, 1)
        x = torch.randn(*shape) * 3 + 1
        assert torch.allclose(norm(x), _reference_gln(norm, x), atol=1e-5)
    for kernel, dilation in [(3, 1), (3, 8), (4, 2), (5, 3)]:
        conv = DepthwiseConv1d(6, kernel, dilation)
        x = torch.randn(2, 6, 40, requires_grad=True)
        fast = conv(x)  # gradients on: the shifted sums
        reference = torch.nn.functional.conv1d(x, conv.weight, conv.bias, dilation=dilation,
                                               groups=6, padding="same")
        assert fast.shape == reference.shape and torch.allclose(fast, reference, atol=1e-5)
        g_fast = torch.autograd.grad(fast.square().sum(), [x, conv.weight, conv.bias])
        g_ref = torch.autograd.grad(reference.square().sum(), [x, conv.weight, conv.bias])
        for a, b in zip(g_fast, g_ref, strict=True):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
        with torch.no_grad():  # without gradients: the convolution itself
            assert torch.equal(conv(x), reference.detach())


TINY_SETS = ["encoder.n_filters=16", "backbone.tcn.bottleneck=16", "backbone.tcn.hidden=32",
             "backbone.tcn.layers=2", "backbone.tcn.repeats=1", "backbone.tcn.skip=16"]


def test_the_fast_training_step_gives_the_reference_loss_curve():
    # The same seed, data and initial weights through (a) masksep's layers and
    # fused Adam and (b) the reference formulas, torch's own depthwise convolution
    # and the for-loop Adam: the same loss curve within float tolerance.
    import copy
    import types

    from masksep.data import build_dataset
    from masksep.losses import separation_loss
    from masksep.models.layers import DepthwiseConv1d, GlobalLayerNorm
    from masksep.parallel import Dist
    from masksep.train import initial_model

    cfg = load_config(None, TINY_SETS + [
        "head.kind=deep", "head.depth=3", "head.width=24", "data.segment_s=0.25",
        "data.train_items=32", "train.batch_size=4"])
    fast = initial_model(cfg)
    reference = copy.deepcopy(fast)
    for module in reference.modules():
        if isinstance(module, GlobalLayerNorm):
            module.forward = types.MethodType(_reference_gln, module)
        elif isinstance(module, DepthwiseConv1d):
            module.forward = types.MethodType(torch.nn.Conv1d.forward, module)
    data = build_dataset(cfg, "train")
    data.set_epoch(1)
    batches = list(Dist().train_loader(data, 4, cfg.seed, 1))
    curves = []
    for model, options in ((fast, {"fused": True}), (reference, {"foreach": False})):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **options)
        curve = []
        for mix, ref in batches:
            loss = separation_loss(model(mix), ref, model.oracle_grouping)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            curve.append(loss.item())
        curves.append(curve)
    assert len(curves[0]) == 8
    assert curves[0] == pytest.approx(curves[1], rel=1e-4, abs=1e-4)
    for a, b in zip(fast.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4)
