"""Typed config tree for one trial: YAML in and out, dotted overrides, validation.

Every field lives in a dataclass below, with the paper's names where the paper
has one. A config file only needs the fields it changes. Loading is strict: an
unknown key, a value of the wrong type or an impossible value raises
:class:`~masksep.errors.ConfigError` naming the dotted field, before anything
is built or written.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from masksep.data.spec import DATA_KINDS, MADE_ON_THE_FLY
from masksep.errors import ConfigError

# The components' own configs (torch-free), composed into Config below and re-exported here.
from masksep.models.spec import (  # noqa: F401
    OG_MAX_ASSIGNMENTS,
    BackboneConfig,
    DPRNNConfig,
    EncoderConfig,
    HeadConfig,
    TCNConfig,
)


@dataclass
class DataRoot:
    """One corpus of a dynamic-mixing set (``data.roots``): its folder of utterances and
    its weight (each mixture comes from one corpus, chosen with probability weight / sum)."""

    root: str = ""  # may use $VARS, as data.root
    weight: float = 1.0


@dataclass
class DataConfig:
    """Where mixtures come from. ``synthetic`` is embedded and made on the fly.

    Real corpora (see :mod:`masksep.data`): ``librimix`` (metadata CSVs),
    ``wsj0mix`` (tr/cv/tt with mix/s1/s2[/s3]), ``wham`` (the same with
    mix_clean/mix_both and noise), ``dynamic`` (a folder of single-speaker
    utterances mixed on the fly). Training items are random ``segment_s``
    crops; validation and test items are whole utterances.
    """

    kind: Literal[DATA_KINDS] = "synthetic"
    root: str = ""  # data folder; may use $VARS, e.g. ${DATA_ROOT}/Libri2Mix
    # dynamic only, instead of root: several corpora of utterances at once, e.g.
    # [{root: .../espeak/utterances/wav8k, weight: 1}, {root: .../kokoro/utterances/wav8k, weight: 1}]
    roots: list[DataRoot] | None = None
    segment_s: float = 2.0  # training crop length
    train_items: int = 2000  # synthetic and dynamic: mixtures per epoch
    valid_items: int = 100  # synthetic and dynamic
    test_items: int = 100  # synthetic and dynamic
    eval_seconds: float = 4.0  # synthetic: length of validation and test mixtures
    # DataLoader worker processes for training data; -1 (auto): one when the run
    # has 2 or more CPUs (its torch threads then one fewer), none on one CPU.
    num_workers: int = -1
    # sep_clean: the mixture of the speakers; sep_noisy: speakers + noise
    # (LibriMix mix_both, WHAM! mix_both), the targets are the speakers alone.
    task: Literal["sep_clean", "sep_noisy"] = "sep_clean"
    # LibriMix / WSJ0-mix / WHAM! variant (wav8k/min ...), used when root is the
    # corpus folder rather than the wav8k/min folder itself.
    mode: Literal["min", "max"] = "min"
    librimix_train: Literal["train-360", "train-100"] = "train-360"  # LibriMix training subset
    # Files at another sample rate than ``sample_rate``: resample them
    # (scipy.signal.resample_poly) instead of refusing the data set.
    resample: bool = False
    # Items with a problem (see ``masksep data check``): leave them out and say
    # how many, instead of refusing the data set.
    skip_bad: bool = False
    # Checks when a data set is opened: "full" also reads every sample (NaN/Inf
    # in float files, mixture = sum of sources); "headers" reads file headers
    # only, for corpora too large to scan per run (a bad sample found later is
    # still one clear error, or a skipped item with skip_bad); "auto": full up
    # to 10 h of audio (validation and test sets), headers above, said on stderr.
    check: Literal["auto", "full", "headers"] = "auto"
    # dynamic: gain of each utterance (dB, after RMS normalisation), uniform
    # in [mix_gain_db_min, mix_gain_db_max]
    mix_gain_db_min: float = -2.5
    mix_gain_db_max: float = 2.5


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_grad: float = 5.0  # max gradient L2 norm; 0 = off
    plateau_patience: int = 2  # epochs without improvement before the LR is halved
    early_stop: int = 5  # epochs without improvement before stopping; 0 = off
    max_steps_per_epoch: int = 0  # 0 = the whole training set each epoch
    amp: bool = True  # mixed precision, used on CUDA only
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPUs the run uses (torch threads, plus a data worker from 2 CPUs); 0 = auto
    # (masksep/cpu.py): the CPUs it was given, fewer torch threads when others are busy
    threads: int = 0
    # Optimizer steps at which the best-on-validation weights so far are also scored on
    # the test split (a study's budget milestones); each a multiple of the steps per epoch.
    milestones: list[int] = field(default_factory=list)


@dataclass
class Config:
    name: str = "trial"
    seed: int = 0
    n_src: int = 2  # C
    sample_rate: int = 8000
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- typed loading


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, name: str, source: str | None) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float).
    A mismatch is a ConfigError naming ``name`` (and ``source``, the file)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(name, f"expected a mapping, got {value!r}", source)
        return _build(tp, value, name, source)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(name, f"must be one of {_type_name(tp)}, got {value!r}", source)
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], name, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"expected true or false, got {value!r}", source)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected an integer, got {value!r}", source)
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML reads 3e-4 (no dot) as a string; accept what float() reads.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, f"expected a number, got {value!r}", source)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"expected a string, got {value!r}", source)
        return value
    # Containers, for the sweep spec's sections (trial configs hold none).
    if tp is Any:
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(name, f"expected a mapping, got {value!r}", source)
        inner = typing.get_args(tp)[1] if origin is dict else Any
        return {str(k): coerce(v, inner, f"{name}.{k}", source) for k, v in value.items()}
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(name, f"expected a list, got {value!r}", source)
        inner = typing.get_args(tp)[0] if origin is list else Any
        return [coerce(v, inner, f"{name}[{i}]", source) for i, v in enumerate(value)]
    raise TypeError(f"unsupported config annotation {tp!r} for {name}")  # a bug, not user input


def build(cls: type, data: dict, prefix: str = "", source: str | None = None):
    """A dataclass from a (partial) mapping, every field type-checked: the one
    typed loader of trial configs and sweep specs. Unknown keys and wrong types
    are a ConfigError naming the dotted field."""
    return _build(cls, data, prefix, source)


def _build(cls: type, data: dict, prefix: str, source: str | None):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(dotted, f"unknown field (known: {', '.join(sorted(names))})", source)
    kwargs = {
        key: coerce(value, hints[key], f"{prefix}.{key}" if prefix else key, source)
        for key, value in data.items()
    }
    return cls(**kwargs)


def from_dict(data: dict | None, source: str | None = None) -> Config:
    """Build and validate a :class:`Config` from a (possibly partial) nested dict."""
    cfg = _build(Config, dict(data or {}), "", source)
    validate(cfg, source)
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flatten(data: dict | Config, prefix: str = "") -> dict[str, Any]:
    """``{"head": {"depth": 3}}`` -> ``{"head.depth": 3}``."""
    if isinstance(data, Config):
        data = to_dict(data)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def first_difference(old: dict | Config, new: dict | Config, ignore: tuple[str, ...] | set[str] = ()
                     ) -> tuple[str, Any, Any] | None:
    """The first dotted field (in sorted order) whose value differs between two
    configs or spec trees: ``(field, old value, new value)``, or None when they agree.

    ``ignore``: fields left out of the comparison; a section name (``"train"``)
    leaves out every field under it. A field missing on one side reads as None.
    The one comparison behind a run's resume check and a sweep's resume check."""
    old_flat, new_flat = flatten(old or {}), flatten(new or {})
    ignored = tuple(ignore)
    for key in sorted(set(old_flat) | set(new_flat)):
        if any(key == name or key.startswith(name + ".") for name in ignored):
            continue
        if old_flat.get(key) != new_flat.get(key):
            return key, old_flat.get(key), new_flat.get(key)
    return None


def set_dotted(data: dict, key: str, value: Any, source: str | None = None) -> None:
    """Set ``data["a"]["b"] = value`` for ``key = "a.b"``, creating mappings on the way."""
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(key, "not a dotted field name", source)
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is a value, not a section", source)
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"head.depth=3"`` -> ``("head.depth", 3)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(text, "an override must look like field.name=value", "--set")
    try:
        value = load_yaml_text(raw, "--set") if raw.strip() else ""
    except ConfigError as exc:
        if not isinstance(exc.__cause__, yaml.YAMLError):
            raise  # too large: refused, not read as a string
        value = raw
    return key.strip(), value


# --------------------------------------------------------------------------- bounded YAML

# YAML aliases let a few hundred bytes stand for billions of values: PyYAML builds
# each aliased node once, but every reader that walks the result (the typed loader,
# flatten, asdict, json) expands it again. So a document is measured as it will be
# walked, every alias counted as the whole node it repeats, before anything is built.
# Generous: the largest spec in sweeps/ has about 300 nodes, a trial config about 60.
MAX_YAML_NODES = 100_000
MAX_YAML_BYTES = 4 << 20  # a spec or config of 4 MiB is not one a person wrote


class _TooLarge(Exception):
    pass


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the document once every alias is expanded (at most MAX_YAML_NODES + 1);
    _TooLarge for an alias that contains itself."""
    def children(node):
        if isinstance(node, yaml.MappingNode):
            return [n for pair in node.value for n in pair]
        return node.value if isinstance(node, yaml.SequenceNode) else []

    sizes: dict[int, int] = {}
    path: set[int] = set()  # the nodes being expanded: the current node and its ancestors
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            path.discard(key)
            sizes[key] = min(MAX_YAML_NODES + 1, 1 + sum(sizes[id(c)] for c in children(node)))
            continue
        if key in sizes:
            continue
        path.add(key)
        stack.append((node, True))
        for child in children(node):
            if id(child) in path:
                raise _TooLarge("an alias refers to a node that contains it (a recursive alias)")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document whose aliases expand past
    MAX_YAML_NODES, after composing it and before constructing anything."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None and _expanded_size(node) > MAX_YAML_NODES:
            raise _TooLarge(f"expands to more than {MAX_YAML_NODES} values (YAML aliases "
                            f"repeat what they name); at most {MAX_YAML_NODES} are allowed")
        return node


def load_yaml_text(text: str, source: str | None = None) -> Any:
    """YAML as yaml.safe_load reads it, refused (one ConfigError naming ``source``)
    when malformed or when its aliases expand past MAX_YAML_NODES: the one YAML
    reader of specs, configs and the files in run folders."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError("file", f"is {len(text)} characters long; at most {MAX_YAML_BYTES} "
                                  "are allowed", source)
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader
    except _TooLarge as exc:
        raise ConfigError("file", str(exc), source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "file"
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(where, f"not valid YAML ({problem})", source) from exc


def read_yaml(path: str | Path, empty_hint: str = "") -> dict:
    """Read a YAML mapping; a missing, unreadable, empty or malformed file is a UserError
    (``empty_hint`` ends the message for an empty file)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_YAML_BYTES:  # before reading it
            raise ConfigError("file", f"is {path.stat().st_size} bytes long; at most "
                                      f"{MAX_YAML_BYTES} are allowed", str(path))
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("file", "not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("file", f"cannot be read ({exc.__class__.__name__})", str(path)) from None
    data = load_yaml_text(text, str(path))
    if data is None:
        # An empty file is a mistake (a half-saved config, the wrong path), not a
        # request for the defaults: those are what leaving the file out gives.
        raise ConfigError("file", f"is empty{empty_hint}", str(path))
    if not isinstance(data, dict):
        raise ConfigError("file", "must hold a YAML mapping at the top level", str(path))
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Load a trial config: defaults, then the YAML file, then ``--set`` overrides."""
    data = read_yaml(path, "; give a config or omit --config for the defaults") if path is not None else {}
    source = str(path) if path is not None else None
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(data, key, value, source or "--set")
    return from_dict(data, source)


def merge(cfg: Config, values: dict[str, Any], source: str | None = None) -> Config:
    """A copy of ``cfg`` with dotted ``values`` applied, validated."""
    data = to_dict(cfg)
    for key, value in values.items():
        set_dotted(data, key, value, source)
    return from_dict(data, source)


def expand_root(root: str, field_name: str = "data.root") -> str:
    """Expand ``$VARS`` and ``~`` in a data root; an unset variable is an error."""
    expanded = os.path.expanduser(os.path.expandvars(root))
    if "$" in expanded:
        missing = expanded[expanded.index("$") :].split("/")[0]
        raise ConfigError(field_name, f"environment variable {missing} is not set ({root!r})")
    return expanded


# --------------------------------------------------------------------------- semantic checks

# Learned grouping has no combinatorial limit; this one only catches typos that
# would build a head of millions of masks.
MAX_OVERSEP = 4096

# Bounds on every count that allocates or loops, checked before anything is built:
# a typo (an extra zero or three) or a hostile file is one line naming the field and
# the limit, never a MemoryError or a machine that swaps. Generous on purpose: each
# is far above the paper's models (N = 512, H = 512, X = 8, R = 3, 4 s crops) and
# anything in sweeps/; raise one here if a real experiment needs more.
MAX_SRC = 64  # n_src (C); the paper separates 2 or 3
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 16_384  # n_filters, bottleneck, hidden, skip, head.width
MAX_DEPTH = 64  # head.depth, tcn.repeats, dprnn.blocks
MAX_TCN_LAYERS = 16  # tcn.layers: dilation 2^(X-1), so 16 already sees 2^16 frames
MAX_KERNEL = 16_384  # encoder.kernel_size (the STFT's n_fft), tcn.kernel_size, dprnn.chunk_size
MAX_SECONDS = 600.0  # data.segment_s and data.eval_seconds: one item's length
MAX_ITEMS = 1_000_000  # data.train_items (per epoch), valid_items, test_items
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
MAX_THREADS = 4096  # train.threads, data.num_workers
MAX_ROOTS = 64  # data.roots: corpora read at once
MAX_MILESTONES = 1_000  # train.milestones: each scores the test set once


def _check(ok: bool, field_name: str, message: str, source: str | None) -> None:
    if not ok:
        raise ConfigError(field_name, message, source)


def _check_at_most(value: float, limit: float, field_name: str, source: str | None) -> None:
    _check(value <= limit, field_name, f"must be <= {limit}, got {value}", source)


def validate(cfg: Config, source: str | None = None) -> None:
    """Values that type-check but cannot work. Raises ConfigError naming the field."""
    c = _check
    c(cfg.n_src >= 1, "n_src", f"must be >= 1, got {cfg.n_src}", source)
    _check_at_most(cfg.n_src, MAX_SRC, "n_src", source)
    c(cfg.sample_rate >= 1000, "sample_rate", f"must be >= 1000 Hz, got {cfg.sample_rate}", source)
    _check_at_most(cfg.sample_rate, MAX_SAMPLE_RATE, "sample_rate", source)
    _check_encoder(cfg, source)
    _check_backbone(cfg, source)
    _check_head(cfg, source)
    _check_data(cfg, source)
    _check_train(cfg, source)


def _check_encoder(cfg: Config, source: str | None) -> None:
    c = _check
    e = cfg.encoder
    c(e.kernel_size >= 2, "encoder.kernel_size", f"must be >= 2, got {e.kernel_size}", source)
    c(e.n_filters >= 1, "encoder.n_filters", f"must be >= 1, got {e.n_filters}", source)
    _check_at_most(e.kernel_size, MAX_KERNEL, "encoder.kernel_size", source)
    _check_at_most(e.n_filters, MAX_CHANNELS, "encoder.n_filters", source)
    max_stride = e.kernel_size if e.kind == "conv" else e.kernel_size // 2
    c(
        1 <= e.stride <= max_stride,
        "encoder.stride",
        f"must be between 1 and {max_stride} for a {e.kind} encoder with kernel_size "
        f"{e.kernel_size}, got {e.stride}",
        source,
    )


def _check_backbone(cfg: Config, source: str | None) -> None:
    c = _check
    b = cfg.backbone
    t = b.tcn
    for name in ("bottleneck", "hidden", "layers", "repeats"):
        value = getattr(t, name)
        c(value >= 1, f"backbone.tcn.{name}", f"must be >= 1, got {value}", source)
    c(t.kernel_size >= 1, "backbone.tcn.kernel_size", f"must be >= 1, got {t.kernel_size}", source)
    c(t.skip >= 0, "backbone.tcn.skip", f"must be >= 0, got {t.skip}", source)
    d = b.dprnn
    for name in ("bottleneck", "hidden", "blocks"):
        value = getattr(d, name)
        c(value >= 1, f"backbone.dprnn.{name}", f"must be >= 1, got {value}", source)
    c(d.chunk_size >= 2, "backbone.dprnn.chunk_size", f"must be >= 2, got {d.chunk_size}", source)
    for name, value, limit in (
            ("tcn.bottleneck", t.bottleneck, MAX_CHANNELS), ("tcn.hidden", t.hidden, MAX_CHANNELS),
            ("tcn.skip", t.skip, MAX_CHANNELS), ("tcn.layers", t.layers, MAX_TCN_LAYERS),
            ("tcn.repeats", t.repeats, MAX_DEPTH), ("tcn.kernel_size", t.kernel_size, MAX_KERNEL),
            ("dprnn.bottleneck", d.bottleneck, MAX_CHANNELS), ("dprnn.hidden", d.hidden, MAX_CHANNELS),
            ("dprnn.blocks", d.blocks, MAX_DEPTH), ("dprnn.chunk_size", d.chunk_size, MAX_KERNEL)):
        _check_at_most(value, limit, f"backbone.{name}", source)


def _check_head(cfg: Config, source: str | None) -> None:
    c = _check
    h = cfg.head
    c(h.depth >= 1, "head.depth", f"must be >= 1, got {h.depth}", source)
    c(h.width >= 1, "head.width", f"must be >= 1, got {h.width}", source)
    _check_at_most(h.depth, MAX_DEPTH, "head.depth", source)
    _check_at_most(h.width, MAX_CHANNELS, "head.width", source)
    if h.kind == "og":
        c(
            h.oversep >= cfg.n_src,
            "head.oversep",
            f"must be >= n_src ({cfg.n_src}) for an og head, got {h.oversep}",
            source,
        )
        # Before the oracle's check: n_src ** oversep of a huge oversep never ends.
        c(h.oversep <= MAX_OVERSEP, "head.oversep", f"must be <= {MAX_OVERSEP}, got {h.oversep}", source)
        if h.grouping == "oracle":
            # The loss's own limit: og_assign scores all C^P assignments exactly.
            c(cfg.n_src**h.oversep <= OG_MAX_ASSIGNMENTS, "head.oversep",
              f"oracle grouping scores all n_src^oversep = {cfg.n_src}^{h.oversep} assignments; "
              f"at most {OG_MAX_ASSIGNMENTS} are allowed (use a smaller oversep or learned grouping)",
              source)


def _check_data(cfg: Config, source: str | None) -> None:
    c = _check
    dc = cfg.data
    c(dc.segment_s > 0, "data.segment_s", f"must be > 0, got {dc.segment_s}", source)
    c(dc.eval_seconds > 0, "data.eval_seconds", f"must be > 0, got {dc.eval_seconds}", source)
    _check_at_most(dc.segment_s, MAX_SECONDS, "data.segment_s", source)
    _check_at_most(dc.eval_seconds, MAX_SECONDS, "data.eval_seconds", source)
    for name in ("train_items", "valid_items", "test_items"):
        value = getattr(dc, name)
        c(value >= 1, f"data.{name}", f"must be >= 1, got {value}", source)
        _check_at_most(value, MAX_ITEMS, f"data.{name}", source)
    c(dc.num_workers >= -1, "data.num_workers", f"must be >= 0, or -1 for auto, got {dc.num_workers}", source)
    _check_at_most(dc.num_workers, MAX_THREADS, "data.num_workers", source)
    if dc.roots is not None:
        c(dc.kind == "dynamic", "data.roots", f"several corpora are for data.kind dynamic, not {dc.kind!r}",
          source)
        c(not dc.root, "data.roots", "give data.root (one corpus) or data.roots (several), not both", source)
        c(len(dc.roots) >= 1, "data.roots", "needs at least one corpus", source)
        _check_at_most(len(dc.roots), MAX_ROOTS, "data.roots (corpora)", source)
        for i, r in enumerate(dc.roots):
            c(bool(r.root), f"data.roots[{i}].root", "is required", source)
            c(math.isfinite(r.weight) and r.weight > 0, f"data.roots[{i}].weight",
              f"must be > 0, got {r.weight}", source)
    elif dc.kind != "synthetic":
        c(bool(dc.root), "data.root", f"is required for data.kind {dc.kind!r}", source)
    c(
        dc.task == "sep_clean" or dc.kind in ("librimix", "wham"),
        "data.task",
        f"sep_noisy needs a corpus with noise (librimix or wham), not {dc.kind!r}",
        source,
    )
    c(
        dc.mix_gain_db_min <= dc.mix_gain_db_max,
        "data.mix_gain_db_min",
        f"must be <= data.mix_gain_db_max ({dc.mix_gain_db_max}), got {dc.mix_gain_db_min}",
        source,
    )


def _check_train(cfg: Config, source: str | None) -> None:
    c = _check
    dc = cfg.data
    tr = cfg.train
    c(tr.epochs >= 1, "train.epochs", f"must be >= 1, got {tr.epochs}", source)
    c(tr.batch_size >= 1, "train.batch_size", f"must be >= 1, got {tr.batch_size}", source)
    _check_at_most(tr.epochs, MAX_EPOCHS, "train.epochs", source)
    _check_at_most(tr.batch_size, MAX_BATCH, "train.batch_size", source)
    _check_at_most(tr.threads, MAX_THREADS, "train.threads", source)
    c(tr.lr > 0, "train.lr", f"must be > 0, got {tr.lr}", source)
    c(tr.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {tr.weight_decay}", source)
    c(tr.clip_grad >= 0, "train.clip_grad", f"must be >= 0, got {tr.clip_grad}", source)
    for name in ("plateau_patience", "early_stop", "max_steps_per_epoch", "threads"):
        value = getattr(tr, name)
        c(value >= 0, f"train.{name}", f"must be >= 0, got {value}", source)
    ms = tr.milestones
    c(len(ms) <= MAX_MILESTONES, "train.milestones",
      f"at most {MAX_MILESTONES} milestones are allowed, got {len(ms)}", source)
    c(all(m >= 1 for m in ms), "train.milestones", f"must be optimizer steps >= 1, got {ms}", source)
    c(all(a < b for a, b in zip(ms, ms[1:], strict=False)), "train.milestones",
      f"must be strictly increasing, got {ms}", source)
    if dc.kind in MADE_ON_THE_FLY:  # items per epoch known now; corpora: at setup
        check_milestones(cfg, steps_per_epoch(cfg, dc.train_items), source)


def steps_per_epoch(cfg: Config, train_items: int) -> int:
    """Optimizer steps in one epoch over ``train_items`` (the loader drops the last
    partial batch; ``train.max_steps_per_epoch`` caps it)."""
    steps = train_items // cfg.train.batch_size
    return min(steps, cfg.train.max_steps_per_epoch) if cfg.train.max_steps_per_epoch else steps


def check_milestones(cfg: Config, per_epoch: int, source: str | None = None) -> None:
    """Milestones are scored after an epoch's validation, so each must fall on an
    epoch's end, within the budget (epochs x steps per epoch)."""
    ms, budget = cfg.train.milestones, cfg.train.epochs * per_epoch
    off = [m for m in ms if per_epoch < 1 or m % per_epoch]
    _check(not off, "train.milestones",
           f"{off[0] if off else ''} is not a multiple of the {per_epoch} steps per epoch", source)
    late = [m for m in ms if m > budget]
    _check(not late, "train.milestones",
           f"{late[0] if late else ''} is beyond the budget ({cfg.train.epochs} epochs x "
           f"{per_epoch} steps = {budget})", source)


# --------------------------------------------------------------------------- what a trial is


def head_summary(cfg: Config) -> dict[str, Any]:
    """The head in the study's coordinates: (kind, depth, width, P, grouping, layout).

    Fields a head kind does not use are reported as they act: a shallow head has
    depth 1 and no hidden width; shallow and deep heads estimate P = C masks; a
    head of depth 1 is joint whatever its layout (both are one conv F -> P*N).
    """
    h = cfg.head
    og = h.kind == "og"
    depth = 1 if h.kind == "shallow" else h.depth
    return {
        "head": h.kind,
        "depth": depth,
        "width": h.width if depth > 1 else 0,
        "oversep": h.oversep if og else cfg.n_src,
        "grouping": h.grouping if og else "none",
        "layout": h.layout if depth > 1 else "joint",
    }
