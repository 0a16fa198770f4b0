"""Sweep spec: a base trial config + a search space + how to search.

A spec is YAML (see sweeps/quick.yaml). It is validated completely before Ray
starts: every searched field must exist in the trial config and every value
it can take must make a valid trial config. Errors name the spec file and the
field, in one line.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from masksep import config as config_mod
from masksep.config import Config
from masksep.errors import ConfigError

SEARCHES = ("optuna-tpe", "optuna-multi", "grid")
SCHEDULERS = ("asha", "none")
DIM_KINDS = ("choice", "grid", "int", "uniform", "loguniform", "logint")
# Objectives. best_val_si_snri is the running best, so a trial's last report
# carries its best epoch, which is what the searcher should be told.
METRIC = "best_val_si_snri"
COST = "head_macs_per_s"
# What a trial's final report carries from fit's summary besides its last
# epoch's metrics. The objective is among them: a trial resumed after its last
# epoch reports no epoch before the final one, and Tune wants the metric there.
FINAL_KEYS = (METRIC, "best_epoch", "test_si_snr", "test_si_snri", "test_sdri", "wall_s",
              "stopped_early")
BASE_KEY = "base"  # search dimension that picks one of several base configs
TRIAL_INDEX = "__trial_index__"  # set by ray.tune.search.Repeater; the seed offset
GRID_KEY = "__point__"  # a grid search hands each trial one whole point under this key


def searched_params(config: dict[str, Any]) -> dict[str, Any]:
    """The searched values in a trial's Ray config: a grid point (kept under
    GRID_KEY) unpacked, Ray's and the Repeater's bookkeeping keys dropped."""
    values = dict(config.get(GRID_KEY, {}))
    values.update({k: v for k, v in config.items() if not k.startswith("__")})
    return values


@dataclass(frozen=True)
class Dimension:
    """One searched field. ``when`` restricts it to trials whose earlier
    dimensions took the given values, e.g. oversep only for og heads."""

    name: str
    kind: str
    values: tuple = ()  # choice / grid
    low: float = 0.0
    high: float = 0.0
    when: tuple[tuple[str, tuple], ...] = ()

    def active(self, params: dict[str, Any]) -> bool:
        return all(params.get(key) in allowed for key, allowed in self.when)

    def suggest(self, trial) -> Any:
        """Ask an optuna.Trial for a value."""
        if self.kind in ("choice", "grid"):
            return trial.suggest_categorical(self.name, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        if self.kind == "logint":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=True)
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "loguniform")

    def grid_values(self) -> list:
        if self.kind in ("choice", "grid"):
            return list(self.values)
        if self.kind in ("int", "logint"):
            return list(range(int(self.low), int(self.high) + 1))
        raise ValueError(self.kind)  # excluded by validation

    def contains(self, value: Any) -> bool:
        if self.kind in ("choice", "grid"):
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind in ("int", "logint") and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def corner_values(self) -> list:
        """Values that validation tries: every choice, or the two ends of a range."""
        if self.kind in ("choice", "grid"):
            return list(self.values)
        if self.kind in ("int", "logint"):
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


class DefineByRun:
    """Optuna define-by-run search space (a picklable object, because Ray
    checkpoints the searcher with pickle)."""

    def __init__(self, dims: tuple[Dimension, ...]):
        self.dims = dims

    def __call__(self, trial) -> None:
        params: dict[str, Any] = {}
        for dim in self.dims:
            if dim.active(params):
                params[dim.name] = dim.suggest(trial)


@dataclass
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
    workers_per_trial: int = 1  # > 1: Ray Train DDP workers, each with cpus/gpus
    custom: dict = field(default_factory=dict)  # Ray custom resources per worker, e.g. {a100: 1}


@dataclass
class AshaSpec:
    grace_period: int = 1  # epochs every trial gets
    reduction_factor: int = 2


@dataclass
class WandbSpec:
    enabled: bool = True
    project: str = ""  # default: WANDB_PROJECT, else "masksep"
    entity: str = ""
    sweep_id: str = ""  # attach trial runs to this W&B sweep (or WANDB_SWEEP_ID)
    mode: str = "auto"  # auto (online with an API key, else offline) | online | offline


@dataclass
class SweepSpec:
    name: str
    path: Path
    bases: dict[str, Config]
    dims: tuple[Dimension, ...]
    search: str = "optuna-tpe"
    scheduler: str = "asha"
    asha: AshaSpec = field(default_factory=AshaSpec)
    num_samples: int = 8
    max_concurrent_trials: int = 2
    resources: Resources = field(default_factory=Resources)
    time_budget_s: float = 0.0  # 0 = none
    repeats: int = 1  # seeds per configuration
    max_failures: int = 1  # retries of a failed trial, from its last checkpoint
    seed: int = 0  # the searcher's seed
    storage_path: str = ""  # Ray Tune storage; default: OUT/ray
    wandb: WandbSpec = field(default_factory=WandbSpec)
    gpu_hours: str = ""  # the spec author's estimate, shown in reports
    initial_points: tuple[dict[str, Any], ...] = ()  # tried first, so every head kind is seen

    @property
    def multi_objective(self) -> bool:
        return self.search == "optuna-multi"

    @property
    def max_epochs(self) -> int:
        return max(cfg.train.epochs for cfg in self.bases.values())

    def trial_config(self, config: dict[str, Any]) -> Config:
        """The trial config for one point of the space (as Ray hands it to the trial)."""
        values = searched_params(config)
        base = self.bases[values.pop(BASE_KEY, next(iter(self.bases)))]
        values["seed"] = base.seed + int(config.get(TRIAL_INDEX, 0))
        # Threads = the CPUs Ray gives each trial (or DDP worker): two 1-CPU trials
        # on two cores must not each start two threads (that made a step 15x slower).
        values["train.threads"] = max(1, math.floor(self.resources.cpus))
        return config_mod.merge(base, values, str(self.path))

    def grid_points(self) -> list[dict[str, Any]]:
        """Every point of a grid search, with ``when`` applied and duplicates removed."""
        points: list[dict[str, Any]] = [{}]
        for dim in self.dims:
            grown = []
            for point in points:
                if dim.active(point):
                    grown.extend({**point, dim.name: v} for v in dim.grid_values())
                else:
                    grown.append(point)
            points = grown
        return points


# --------------------------------------------------------------------------- loading


def _fail(path: Path, field_name: str, message: str):
    raise ConfigError(field_name, message, str(path))


def _mapping(value: Any, path: Path, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(path, name, f"expected a mapping, got {value!r}")
    return value


def _list(value: Any, path: Path, name: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(path, name, f"expected a list, got {value!r}")
    return value


def _section(cls: type, value: Any, path: Path, name: str):
    """A small dataclass section (resources, asha, wandb) with type checks."""
    data = _mapping(value, path, name)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, item in data.items():
        if key not in known:
            _fail(path, f"{name}.{key}", f"unknown field (known: {', '.join(sorted(known))})")
        default = getattr(cls(), key)
        kwargs[key] = _typed(item, type(default), path, f"{name}.{key}")
    return cls(**kwargs)


def _typed(value: Any, tp: type, path: Path, name: str):
    if tp is dict:
        value = _mapping(value, path, name)
        return {str(k): _typed(v, float, path, f"{name}.{k}") for k, v in value.items()}
    if tp is str and value is None:
        value = ""  # `field:` left empty in YAML
    if tp in (bool, int, float, str):  # the same checks, and messages, as trial configs
        return config_mod.coerce(value, tp, name, str(path))
    return value


def _load_base(ref: Any, path: Path, name: str) -> Config:
    """A base trial config: a path (relative to the spec) or an inline mapping."""
    if isinstance(ref, str):
        base_path = (path.parent / ref).resolve()
        if not base_path.is_file():
            _fail(path, name, f"trial config {ref!r} not found (looked at {base_path})")
        return config_mod.load_config(base_path)
    if isinstance(ref, dict):
        return config_mod.from_dict(ref, f"{path}: {name}")
    _fail(path, name, f"expected a trial config path or mapping, got {ref!r}")


def _parse_dim(name: str, raw: Any, path: Path) -> Dimension:
    where = f"search_space.{name}"
    raw = _mapping(raw, path, where)
    kinds = [k for k in raw if k in DIM_KINDS]
    extra = [k for k in raw if k not in DIM_KINDS and k != "when"]
    if extra:
        _fail(path, f"{where}.{extra[0]}", f"unknown key (a dimension is one of {', '.join(DIM_KINDS)}, plus when)")
    if len(kinds) != 1:
        _fail(path, where, f"needs exactly one of {', '.join(DIM_KINDS)}")
    kind = kinds[0]
    spec = raw[kind]
    when = []
    for key, allowed in _mapping(raw.get("when"), path, f"{where}.when").items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        when.append((key, tuple(allowed)))
    if kind in ("choice", "grid"):
        if not isinstance(spec, list) or not spec:
            _fail(path, f"{where}.{kind}", "expected a non-empty list of values")
        return Dimension(name, kind, values=tuple(spec), when=tuple(when))
    if not (isinstance(spec, list) and len(spec) == 2):
        _fail(path, f"{where}.{kind}", f"expected [low, high], got {spec!r}")
    low, high = (_typed(v, float, path, f"{where}.{kind}") for v in spec)
    if kind in ("int", "logint") and not all(float(v).is_integer() for v in (low, high)):
        _fail(path, f"{where}.{kind}", f"bounds must be integers, got {spec!r}")
    if not low < high:
        _fail(path, f"{where}.{kind}", f"low must be below high, got {spec!r}")
    if kind in ("loguniform", "logint") and low <= 0:
        _fail(path, f"{where}.{kind}", f"a log range must be positive, got {spec!r}")
    return Dimension(name, kind, low=low, high=high, when=tuple(when))


TOP_KEYS = {
    "name", "base", "bases", "trial", "search_space", "search", "scheduler", "asha",
    "num_samples", "max_concurrent_trials", "resources", "time_budget_s", "repeats",
    "max_failures", "seed", "storage_path", "wandb", "gpu_hours", "initial_points",
}


def load_spec(path: str | Path) -> SweepSpec:
    """Read and fully validate a sweep spec. Raises UserError naming file and field."""
    path = Path(path)
    raw = config_mod.read_yaml(path)
    for key in raw:
        if key not in TOP_KEYS:
            _fail(path, str(key), f"unknown field (known: {', '.join(sorted(TOP_KEYS))})")

    name = _typed(raw.get("name", path.stem), str, path, "name")
    if not name or not all(ch.isalnum() or ch in "-_." for ch in name):
        _fail(path, "name", f"use letters, digits, '-', '_' or '.', got {name!r}")

    # Base configs: `base` (one) or `bases` (several, picked by the `base` dimension),
    # each with the spec's `trial` overrides laid over it.
    if "base" in raw and "bases" in raw:
        _fail(path, "bases", "give either base or bases, not both")
    if "bases" in raw:
        refs = _mapping(raw["bases"], path, "bases")
        if not refs:
            _fail(path, "bases", "must name at least one base config")
    else:
        refs = {"default": raw.get("base", {})}
    overrides = config_mod.flatten(_mapping(raw.get("trial"), path, "trial"))
    bases = {}
    for key, ref in refs.items():
        where = f"bases.{key}" if "bases" in raw else "base"
        cfg = _load_base(ref, path, where)
        try:
            bases[str(key)] = config_mod.merge(cfg, overrides)
        except ConfigError as exc:
            _fail(path, f"trial.{exc.field}", str(exc).split(": ", 1)[-1])

    space = _mapping(raw.get("search_space"), path, "search_space")
    dims = tuple(_parse_dim(str(k), v, path) for k, v in space.items())
    spec = SweepSpec(
        name=name,
        path=path,
        bases=bases,
        dims=dims,
        search=_typed(raw.get("search", "optuna-tpe"), str, path, "search"),
        scheduler=_typed(raw.get("scheduler", "asha"), str, path, "scheduler"),
        asha=_section(AshaSpec, raw.get("asha"), path, "asha"),
        num_samples=_typed(raw.get("num_samples", 1 if raw.get("search") == "grid" else 8), int, path, "num_samples"),
        max_concurrent_trials=_typed(raw.get("max_concurrent_trials", 2), int, path, "max_concurrent_trials"),
        resources=_section(Resources, raw.get("resources"), path, "resources"),
        time_budget_s=_typed(raw.get("time_budget_s", 0.0), float, path, "time_budget_s"),
        repeats=_typed(raw.get("repeats", 1), int, path, "repeats"),
        max_failures=_typed(raw.get("max_failures", 1), int, path, "max_failures"),
        seed=_typed(raw.get("seed", 0), int, path, "seed"),
        storage_path=_typed(raw.get("storage_path", ""), str, path, "storage_path"),
        wandb=_section(WandbSpec, raw.get("wandb"), path, "wandb"),
        gpu_hours=str(raw.get("gpu_hours", "")),
        initial_points=tuple(_mapping(p, path, "initial_points") for p in _list(raw.get("initial_points"), path, "initial_points")),
    )
    _validate(spec)
    return spec


def _validate(spec: SweepSpec) -> None:
    path = spec.path
    if spec.search not in SEARCHES:
        _fail(path, "search", f"must be one of {', '.join(SEARCHES)}, got {spec.search!r}")
    if spec.scheduler not in SCHEDULERS:
        _fail(path, "scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {spec.scheduler!r}")
    if spec.scheduler == "asha" and spec.multi_objective:
        _fail(path, "scheduler", "asha needs a single objective; use scheduler: none with optuna-multi")
    if spec.num_samples < 1:
        _fail(path, "num_samples", f"must be >= 1, got {spec.num_samples}")
    if spec.max_concurrent_trials < 1:
        _fail(path, "max_concurrent_trials", f"must be >= 1, got {spec.max_concurrent_trials}")
    if spec.repeats < 1:
        _fail(path, "repeats", f"must be >= 1, got {spec.repeats}")
    if spec.search != "grid" and spec.num_samples % spec.repeats:
        _fail(path, "num_samples", f"must be a multiple of repeats ({spec.repeats}): every configuration runs with each seed")
    if spec.max_failures < 0:
        _fail(path, "max_failures", f"must be >= 0, got {spec.max_failures}")
    if spec.time_budget_s < 0:
        _fail(path, "time_budget_s", f"must be >= 0, got {spec.time_budget_s}")
    r = spec.resources
    if r.cpus <= 0:
        _fail(path, "resources.cpus", f"must be > 0, got {r.cpus}")
    if r.gpus < 0:
        _fail(path, "resources.gpus", f"must be >= 0, got {r.gpus}")
    if r.gpus > 1 and not float(r.gpus).is_integer():
        _fail(path, "resources.gpus", f"a fraction of a GPU must be below 1, got {r.gpus}")
    for key, amount in r.custom.items():
        if amount <= 0 or key in ("CPU", "GPU", "memory"):
            _fail(path, f"resources.custom.{key}", "must be a positive amount of a custom Ray resource")
    if r.workers_per_trial < 1:
        _fail(path, "resources.workers_per_trial", f"must be >= 1, got {r.workers_per_trial}")
    if spec.asha.grace_period < 1:
        _fail(path, "asha.grace_period", f"must be >= 1, got {spec.asha.grace_period}")
    if spec.scheduler == "asha" and spec.asha.grace_period > spec.max_epochs:
        _fail(path, "asha.grace_period", f"must be at most the trials' train.epochs ({spec.max_epochs}), got {spec.asha.grace_period}")
    if spec.asha.reduction_factor < 2:
        _fail(path, "asha.reduction_factor", f"must be >= 2, got {spec.asha.reduction_factor}")
    if spec.wandb.mode not in ("auto", "online", "offline"):
        _fail(path, "wandb.mode", f"must be auto, online or offline, got {spec.wandb.mode!r}")

    fields = set(config_mod.flatten(next(iter(spec.bases.values()))))
    seen: list[str] = []
    for dim in spec.dims:
        where = f"search_space.{dim.name}"
        if dim.name == BASE_KEY:
            unknown = [v for v in dim.values if v not in spec.bases]
            if dim.kind not in ("choice", "grid") or unknown:
                _fail(path, where, f"must choose among the names under bases ({', '.join(spec.bases)})")
        elif dim.name not in fields:
            _fail(path, where, "is not a trial config field (use dotted names like head.depth)")
        elif dim.name == "seed":
            _fail(path, where, "seeds come from repeats, not from the search space")
        for key, _ in dim.when:
            if key not in seen:
                _fail(path, f"{where}.when", f"{key!r} must be a dimension listed before {dim.name}")
        seen.append(dim.name)
        if spec.search == "grid" and dim.kind not in ("choice", "grid", "int", "logint"):
            _fail(path, where, f"a grid search needs discrete values, not {dim.kind}")
    if len(set(seen)) != len(seen):
        _fail(path, "search_space", "a field is listed twice")

    # Every value of each dimension, alone and beside every value of each other
    # dimension that can be active with it, must give a valid trial config.
    for dim in spec.dims:
        if dim.name == BASE_KEY:
            continue
        deps = [k for k, _ in dim.when]
        for combo in itertools.product(*[allowed for _, allowed in dim.when]):
            context = dict(zip(deps, combo, strict=True))
            partners = [(None, None)] + [
                (other.name, value) for other in spec.dims
                if other is not dim and other.name not in context and other.active(context)
                for value in other.corner_values()
            ]
            for value in dim.corner_values():
                for partner, partner_value in partners:
                    params = {**context, dim.name: _as_kind(dim, value)}
                    if partner is not None:
                        other = next(d for d in spec.dims if d.name == partner)
                        params[partner] = _as_kind(other, partner_value)
                    for base_name in spec.bases:
                        if BASE_KEY not in params or params[BASE_KEY] == base_name:
                            _check_trial(spec, {BASE_KEY: base_name, **params}, dim.name, value)
    by_name = {d.name: d for d in spec.dims}
    for i, point in enumerate(spec.initial_points):
        where = f"initial_points[{i}]"
        if spec.search == "grid":
            _fail(path, where, "initial points are for optuna searches; a grid tries every point")
        for key, value in point.items():
            dim = by_name.get(key)
            if dim is None:
                _fail(path, f"{where}.{key}", "is not a dimension of search_space")
            if not dim.contains(value):
                _fail(path, f"{where}.{key}", f"{value!r} is outside its search space")
        _check_trial(spec, dict(point), where, point)
    if spec.search == "grid":
        n = len(spec.grid_points())
        if n == 0 or n * spec.repeats * spec.num_samples > 100_000:
            _fail(path, "search_space", f"the grid has {n} points; that is not a sweep to run")
    if not spec.dims:
        _fail(path, "search_space", "is empty: nothing to sweep")


def count_trials(spec: SweepSpec) -> int:
    if spec.search == "grid":
        return len(spec.grid_points()) * spec.num_samples * spec.repeats
    return spec.num_samples


def _as_kind(dim: Dimension, value: Any) -> Any:
    return int(value) if dim.kind in ("int", "logint") else value


def _check_trial(spec: SweepSpec, params: dict[str, Any], name: str, value: Any) -> None:
    try:
        spec.trial_config(params)
    except ConfigError as exc:
        reason = str(exc).split(": ")[-1]
        if exc.field in params:  # blame the dimension whose value the check refused
            name, value = exc.field, params[exc.field]
        others = ", ".join(f"{k}={v!r}" for k, v in params.items() if k not in (name, BASE_KEY))
        beside = f" beside {others}" if others else ""
        _fail(spec.path, f"search_space.{name}",
              f"value {value!r}{beside} gives an invalid trial ({exc.field}: {reason})")


def spec_summary(spec: SweepSpec) -> str:
    """One line for the terminal."""
    budget = f", budget {spec.time_budget_s:.0f} s" if spec.time_budget_s else ""
    gpus = f" {spec.resources.gpus:g} GPU" if spec.resources.gpus else ""
    return (f"sweep {spec.name!r}: {count_trials(spec)} trials, {spec.search}, "
            f"scheduler {spec.scheduler}, {spec.max_concurrent_trials} at a time, "
            f"{spec.resources.cpus:g} CPU{gpus} per trial{budget}")
