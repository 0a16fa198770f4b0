"""Sweep spec: a base trial config + a search space (or a study's design) + how to search.

A spec is YAML (see sweeps/quick.yaml, sweeps/study.yaml). It is read by the
same typed loader as trial configs (:func:`masksep.config.build`) and validated
completely before Ray starts: every searched field must exist in the trial
config and every value it can take must make a valid trial config. Errors name
the spec file and the field, in one line.

A *study* (a ``study:`` block) is a designed experiment rather than a search:
every head variant it lists runs with each of ``repeats`` seeds, and for one
seed every variant sees the same backbone initialisation, training data and
evaluation set (common random numbers), so differences between variants at a
seed are paired. It is a grid over the variants, with no early stopping.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from masksep import config as config_mod
from masksep.config import Config
from masksep.design import StudyDesign, default_deep, default_reference
from masksep.errors import ConfigError

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
VARIANT_KEY = "variant"  # a study's dimension: one of its head variants
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
    ray_train: bool = False  # run even one worker through Ray Train (on by itself above 1)
    custom: dict[str, float] = field(default_factory=dict)  # Ray custom resources per worker, e.g. {a100: 1}


@dataclass
class AshaSpec:
    grace_period: int = 1  # epochs every trial gets
    reduction_factor: int = 2


@dataclass
class WandbSpec:
    enabled: bool = True
    project: str | None = ""  # default: WANDB_PROJECT, else "masksep"
    entity: str | None = ""
    sweep_id: str | None = ""  # attach trial runs to this W&B sweep (or WANDB_SWEEP_ID)
    mode: Literal["auto", "online", "offline"] = "auto"  # auto: online with an API key, else offline


@dataclass
class TuningSpec:
    """A tuned study (``study.tuning``): before the study, each variant's own setting
    is searched on validation, on tuning seeds ``seed``, ``seed + 1``, ... that the
    study's test seeds never use; the study then runs every variant at its tuned
    setting (masksep/tuned.py).

    ``search: grid`` (the default) tries every point of a discrete space with each
    tuning seed: for one or two searched fields the honest design, since every
    variant sees the same points. ``search: optuna-tpe`` samples ``trials`` points;
    its first ``startup_trials`` are random, so they must stay well below ``trials``
    or TPE never runs (Optuna's default of 10 start-up trials against 8 tuning trials
    once made every variant draw the same seeded points). No pruning unless ``asha``
    is given: an ASHA rung earlier than the study's own ASHA check supports stops
    trials that would have caught up."""

    search_space: dict[str, Any] = field(default_factory=dict)  # searched for every variant
    by_head: dict[str, dict[str, Any]] = field(default_factory=dict)  # head kind -> its own dims
    search: Literal["grid", "optuna-tpe"] = "grid"
    trials: int | None = None  # optuna-tpe: points per variant (default 8); grid: every point
    startup_trials: int | None = None  # optuna-tpe: random points first (default: half of trials)
    seed: int = 1000  # the first tuning seed
    repeats: int = 1  # tuning seeds per point
    asha: AshaSpec | None = None  # ASHA over the tuning trials; none by default

    @property
    def points(self) -> int:
        """Searched points per variant (each run with ``repeats`` seeds); grid: unknown here."""
        return self.trials if self.trials is not None else 8


@dataclass
class StudySpec(StudyDesign):
    """A spec's ``study:`` block: the design (masksep/design.py, what sweep.json
    stores and the report reads) and, for a tuned study, how to tune it."""

    # A tuned study: masksep/tuned.py runs it. Not part of the design: to_dict leaves it out.
    tuning: TuningSpec | None = None


@dataclass
class SpecFile:
    """The top level of a spec file, as the typed loader reads it."""

    name: str | None = None  # default: the file's stem
    base: Any = None  # a trial config path (relative to the spec) or an inline mapping
    bases: dict[str, Any] = field(default_factory=dict)  # several, picked by the `base` dimension
    trial: dict[str, Any] = field(default_factory=dict)  # overrides laid over every base
    search_space: dict[str, Any] = field(default_factory=dict)
    study: StudySpec | None = None
    search: Literal["optuna-tpe", "optuna-multi", "grid"] | None = None
    scheduler: Literal["asha", "none"] | None = None
    asha: AshaSpec = field(default_factory=AshaSpec)
    num_samples: int | None = None
    max_concurrent_trials: int = 2
    resources: Resources = field(default_factory=Resources)
    time_budget_s: float = 0.0
    repeats: int = 1
    max_failures: int = 1
    seed: int = 0
    storage_path: str | None = ""
    wandb: WandbSpec = field(default_factory=WandbSpec)
    gpu_hours: str | None = ""
    initial_points: list[dict[str, Any]] = field(default_factory=list)
    data_cache: bool = True
    startup_trials: int | None = None  # optuna: random configurations before TPE models


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
    study: StudySpec | None = None
    # Trials on the same data and seed share the data made on the fly (masksep/data/cache.py):
    # made once into the experiment's data-cache folder, read by the others.
    data_cache: bool = True
    # Optuna searches: the TPE sampler's random start-up, in configurations (each run
    # with ``repeats`` seeds). Below the configurations the search gets, or TPE never runs.
    startup_trials: int = 10

    @property
    def configurations(self) -> int:
        """Distinct points an optuna search tries (num_samples over the seeds of each)."""
        return self.num_samples // max(self.repeats, 1)

    @property
    def multi_objective(self) -> bool:
        return self.search == "optuna-multi"

    @property
    def max_epochs(self) -> int:
        return max(cfg.train.epochs for cfg in self.bases.values())

    def searched(self, config: dict[str, Any]) -> dict[str, Any]:
        """What this trial's point sets: the searched values, a study's variant
        with the fields it overrides (what searched.json and the report show)."""
        values = searched_params(config)
        if self.study is not None and VARIANT_KEY in values:
            values.update(self.study.variants[values[VARIANT_KEY]])
        return values

    def trial_config(self, config: dict[str, Any]) -> Config:
        """The trial config for one point of the space (as Ray hands it to the trial)."""
        values = self.searched(config)
        values.pop(VARIANT_KEY, None)
        base = self.bases[values.pop(BASE_KEY, next(iter(self.bases)))]
        # The seed is the repeat index alone, never the point: common random numbers.
        values["seed"] = base.seed + int(config.get(TRIAL_INDEX, 0))
        # Threads = the CPUs Ray gives each trial (or DDP worker): two 1-CPU trials
        # on two cores must not each start two threads (that made a step 15x slower).
        values["train.threads"] = max(1, math.floor(self.resources.cpus))
        if self.study is not None and self.study.milestones:
            values["train.milestones"] = list(self.study.milestones)
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
    if not isinstance(raw, dict):
        _fail(path, where, f"expected a mapping, got {raw!r}")
    kinds = [k for k in raw if k in DIM_KINDS]
    extra = [k for k in raw if k not in DIM_KINDS and k != "when"]
    if extra:
        _fail(path, f"{where}.{extra[0]}", f"unknown key (a dimension is one of {', '.join(DIM_KINDS)}, plus when)")
    if len(kinds) != 1:
        _fail(path, where, f"needs exactly one of {', '.join(DIM_KINDS)}")
    kind = kinds[0]
    spec = raw[kind]
    when = []
    for key, allowed in config_mod.coerce(raw.get("when") or {}, dict, f"{where}.when", str(path)).items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        when.append((key, tuple(allowed)))
    if kind in ("choice", "grid"):
        if not isinstance(spec, list) or not spec:
            _fail(path, f"{where}.{kind}", "expected a non-empty list of values")
        return Dimension(name, kind, values=tuple(spec), when=tuple(when))
    if not (isinstance(spec, list) and len(spec) == 2):
        _fail(path, f"{where}.{kind}", f"expected [low, high], got {spec!r}")
    low, high = (config_mod.coerce(v, float, f"{where}.{kind}", str(path)) for v in spec)
    if kind in ("int", "logint") and not all(float(v).is_integer() for v in (low, high)):
        _fail(path, f"{where}.{kind}", f"bounds must be integers, got {spec!r}")
    if not low < high:
        _fail(path, f"{where}.{kind}", f"low must be below high, got {spec!r}")
    if kind in ("loguniform", "logint") and low <= 0:
        _fail(path, f"{where}.{kind}", f"a log range must be positive, got {spec!r}")
    return Dimension(name, kind, low=low, high=high, when=tuple(when))


def _folder_name(name: object) -> bool:
    """A name that is one folder name (a sweep's experiment, a variant's tuning
    folder): no separator, and not "." or ".." (the folder itself, its parent)."""
    return (isinstance(name, str) and bool(name) and name.strip(".") != ""
            and all(ch.isalnum() or ch in "-_." for ch in name))


def load_spec(path: str | Path) -> SweepSpec:
    """Read and fully validate a sweep spec. Raises UserError naming file and field."""
    path = Path(path)
    raw = config_mod.read_yaml(path, "; a sweep spec needs at least a search_space (see sweeps/quick.yaml)")
    top: SpecFile = config_mod.build(SpecFile, raw, "", str(path))

    name = top.name if top.name is not None else path.stem
    if not _folder_name(name):
        _fail(path, "name", f"use letters, digits, '-', '_' or '.' (not only dots), got {name!r}")

    # Base configs: `base` (one) or `bases` (several, picked by the `base` dimension),
    # each with the spec's `trial` overrides laid over it.
    if "base" in raw and "bases" in raw:
        _fail(path, "bases", "give either base or bases, not both")
    if "bases" in raw and not top.bases:
        _fail(path, "bases", "must name at least one base config")
    refs = top.bases or {"default": top.base if top.base is not None else {}}
    overrides = config_mod.flatten(top.trial)
    bases = {}
    for key, ref in refs.items():
        where = f"bases.{key}" if top.bases else "base"
        cfg = _load_base(ref, path, where)
        try:
            bases[key] = config_mod.merge(cfg, overrides)
        except ConfigError as exc:
            _fail(path, f"trial.{exc.field}", exc.message)

    study = top.study
    if study is not None:
        if top.search_space:
            _fail(path, "search_space", "a study's design is its variants; leave search_space out "
                                        "(or drop the study block to search)")
        dims: tuple[Dimension, ...] = (Dimension(VARIANT_KEY, "grid", values=tuple(study.variants)),)
    else:
        dims = tuple(_parse_dim(str(k), v, path) for k, v in top.search_space.items())
    search = top.search or ("grid" if study is not None else "optuna-tpe")
    scheduler = top.scheduler or ("none" if study is not None else "asha")
    spec = SweepSpec(
        name=name, path=path, bases=bases, dims=dims, search=search, scheduler=scheduler,
        asha=top.asha,
        num_samples=top.num_samples if top.num_samples is not None else (1 if search == "grid" else 8),
        max_concurrent_trials=top.max_concurrent_trials, resources=top.resources,
        time_budget_s=top.time_budget_s, repeats=top.repeats, max_failures=top.max_failures,
        seed=top.seed, storage_path=top.storage_path or "", wandb=top.wandb,
        gpu_hours=top.gpu_hours or "", initial_points=tuple(top.initial_points), study=study,
        data_cache=top.data_cache,
    )
    # Every default filled here, once; the validators below only read.
    spec.startup_trials = (top.startup_trials if top.startup_trials is not None
                           else default_startup(spec.configurations))
    _validate_bounds(spec)  # before any rule that loops over what the spec counts
    if study is not None:  # first: a study's own rules explain its errors best
        _complete_study(spec, study)
        _validate_study(spec, study)
    _validate(spec)
    return spec


def default_startup(configurations: int) -> int:
    """Optuna's 10 random start-up points, but never more than half of what the
    search gets: TPE must model at least as many points as it drew at random."""
    return max(1, min(10, configurations // 2))


def _validate(spec: SweepSpec) -> None:
    """Every rule of a spec, in the order its errors are best read."""
    _validate_counts(spec)
    _validate_resources(spec)
    _validate_asha(spec)
    _validate_dims(spec)
    _validate_values(spec)
    _validate_initial_points(spec)
    if spec.search == "grid":
        n = len(spec.grid_points())
        if n == 0 or n * spec.repeats * spec.num_samples > 100_000:
            _fail(spec.path, "search_space", f"the grid has {n} points; that is not a sweep to run")


def _validate_counts(spec: SweepSpec) -> None:
    path = spec.path
    if spec.scheduler == "asha" and spec.multi_objective:
        _fail(path, "scheduler", "asha needs a single objective; use scheduler: none with optuna-multi")
    for name, least in (("num_samples", 1), ("max_concurrent_trials", 1), ("repeats", 1),
                        ("max_failures", 0)):
        if getattr(spec, name) < least:
            _fail(path, name, f"must be >= {least}, got {getattr(spec, name)}")
    if spec.search != "grid" and spec.num_samples % spec.repeats:
        _fail(path, "num_samples", f"must be a multiple of repeats ({spec.repeats}): every configuration runs with each seed")
    if spec.time_budget_s < 0:
        _fail(path, "time_budget_s", f"must be >= 0, got {spec.time_budget_s}")
    if spec.search.startswith("optuna") and not 1 <= spec.startup_trials < spec.configurations:
        _fail(path, "startup_trials", f"{spec.startup_trials} random start-up configurations leave "
                                      f"TPE nothing to model among the {spec.configurations} this "
                                      "search tries (num_samples / repeats); use fewer")


# Bounds on what a spec counts, checked before anything loops over them or allocates
# (a tuned study builds its seed sets, a grid its points, validation a trial config
# per pair of values). Generous: the specs in sweeps/ run at most a few hundred
# trials and validate a few hundred configs; raise one here if a real sweep needs more.
MAX_TRIALS = 100_000  # num_samples, study.tuning.trials, and a grid's points x repeats x num_samples
MAX_REPEATS = 10_000  # seeds per point: repeats, study.tuning.repeats
MAX_VALUES = 10_000  # values of one dimension (a grid's integer range too), variants, initial points
MAX_CHECKS = 20_000  # trial configs validation builds (about 1 ms each)


def _validate_bounds(spec: SweepSpec) -> None:
    path = spec.path

    def at_most(name: str, value: float, limit: int) -> None:
        if value > limit:
            _fail(path, name, f"must be <= {limit}, got {value:.0f}")

    at_most("num_samples", spec.num_samples, MAX_TRIALS)
    at_most("repeats", spec.repeats, MAX_REPEATS)
    at_most("initial_points", len(spec.initial_points), MAX_VALUES)
    if spec.study is not None:
        at_most("study.variants", len(spec.study.variants), MAX_VALUES)
        at_most("study.milestones", len(spec.study.milestones), config_mod.MAX_MILESTONES)
        if spec.study.tuning is not None:
            at_most("study.tuning.repeats", spec.study.tuning.repeats, MAX_REPEATS)
            at_most("study.tuning.trials", spec.study.tuning.points, MAX_TRIALS)
    sizes = {}
    for dim in spec.dims:
        if dim.kind not in ("choice", "grid", "int", "logint") or (
                dim.kind in ("int", "logint") and spec.search != "grid"):
            continue  # a range lists nothing, unless a grid lists its integers
        n = len(dim.values) if dim.kind in ("choice", "grid") else dim.high - dim.low + 1
        if n > MAX_VALUES:
            _fail(path, f"search_space.{dim.name}", f"has {n:.0f} values; at most {MAX_VALUES} are allowed")
        sizes[dim.name] = n
    if spec.search == "grid":  # counted (an upper bound, `when` aside) before grid_points lists them
        points = math.prod(float(n) for n in sizes.values())
        if points * spec.repeats * spec.num_samples > MAX_TRIALS:
            _fail(path, "search_space", f"the grid has up to {points:.3g} points x {spec.repeats} "
                                        f"repeats x {spec.num_samples} samples; at most {MAX_TRIALS} "
                                        "trials are allowed")
    # _validate_values: each value of a dimension beside each value of every other
    # (corners only for ranges), for every combination of the values its `when` allows.
    corners = {d.name: len(d.corner_values()) for d in spec.dims}
    checks = sum(
        math.prod(float(len(allowed)) for _, allowed in dim.when) * corners[dim.name]
        * (1 + sum(n for other, n in corners.items() if other != dim.name))
        for dim in spec.dims if dim.name not in (BASE_KEY, VARIANT_KEY)) * len(spec.bases)
    if checks > MAX_CHECKS:
        _fail(path, "search_space", f"checking each value beside every other takes {checks:.3g} "
                                    f"trial configs; at most {MAX_CHECKS} are allowed (fewer values)")


def _validate_resources(spec: SweepSpec) -> None:
    path = spec.path
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


def _validate_asha(spec: SweepSpec) -> None:
    path = spec.path
    if spec.asha.grace_period < 1:
        _fail(path, "asha.grace_period", f"must be >= 1, got {spec.asha.grace_period}")
    if spec.scheduler == "asha" and spec.asha.grace_period > spec.max_epochs:
        _fail(path, "asha.grace_period", f"must be at most the trials' train.epochs ({spec.max_epochs}), got {spec.asha.grace_period}")
    if spec.asha.reduction_factor < 2:
        _fail(path, "asha.reduction_factor", f"must be >= 2, got {spec.asha.reduction_factor}")


def _validate_dims(spec: SweepSpec) -> None:
    """Each searched field exists, once, after the dimensions its ``when`` names."""
    path = spec.path
    fields = set(config_mod.flatten(next(iter(spec.bases.values()))))
    seen: list[str] = []
    for dim in spec.dims:
        where = f"search_space.{dim.name}"
        if dim.name == BASE_KEY:
            unknown = [v for v in dim.values if v not in spec.bases]
            if dim.kind not in ("choice", "grid") or unknown:
                _fail(path, where, f"must choose among the names under bases ({', '.join(spec.bases)})")
        elif dim.name == VARIANT_KEY and spec.study is not None:
            pass  # checked by _validate_study
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
    if not spec.dims:
        _fail(path, "search_space", "is empty: nothing to sweep")


def _validate_values(spec: SweepSpec) -> None:
    # Every value of each dimension, alone and beside every value of each other
    # dimension that can be active with it, must give a valid trial config.
    for dim in spec.dims:
        if dim.name in (BASE_KEY, VARIANT_KEY):
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


def _validate_initial_points(spec: SweepSpec) -> None:
    path = spec.path
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


def head_kind(cfg: Config) -> dict[str, Any]:
    """What the design's rules need of a variant's head (design.py's head rows)."""
    return {"head": cfg.head.kind, "depth": cfg.head.depth, "oversep": cfg.head.oversep,
            "grouping": cfg.head.grouping, "n_src": cfg.n_src}


def _complete_study(spec: SweepSpec, study: StudySpec) -> None:
    """Fill the study's defaults: variants as dotted overrides, the seeds, and the
    reference and deep variant the trial configs give (design.default_reference,
    design.default_deep: the report uses the same rules for an old folder)."""
    path = spec.path
    for name, overrides in study.variants.items():
        study.variants[name] = config_mod.flatten(
            config_mod.coerce(overrides, dict, f"study.variants.{name}", str(path)))
    if study.repeats is not None:
        _fail(path, "study.repeats", "seeds per variant are the spec's top-level repeats")
    study.repeats = spec.repeats
    heads = {}
    for name in study.variants:
        try:
            heads[name] = head_kind(spec.trial_config({VARIANT_KEY: name}))
        except ConfigError:
            return  # _validate_study names the variant
    if not study.reference:
        study.reference = default_reference(heads)
    if not study.claims.deep:
        study.claims.deep = default_deep(heads) or ""


def _validate_study(spec: SweepSpec, study: StudySpec) -> None:
    path = spec.path
    if spec.search != "grid":
        _fail(path, "search", f"a study runs every variant with every seed (a grid), not {spec.search}")
    if spec.scheduler != "none":
        _fail(path, "scheduler", "a study compares heads at equal budget: no early stopping (scheduler: none)")
    if len(spec.bases) != 1:
        _fail(path, "bases", "a study compares heads on one base config")
    if len(study.variants) < 2:
        _fail(path, "study.variants", "a study needs at least two variants to compare")
    fields = set(config_mod.flatten(next(iter(spec.bases.values()))))
    if study.milestones:
        try:
            config_mod.merge(next(iter(spec.bases.values())),
                             {"train.milestones": list(study.milestones)}, str(path))
        except ConfigError as exc:
            _fail(path, "study.milestones", exc.message)
    for name in study.variants:
        where = f"study.variants.{name}"
        if not _folder_name(name):
            _fail(path, where, "use letters, digits, '-', '_' or '.' (not only dots) in variant names")
        for key in study.variants[name]:
            if key not in fields:
                _fail(path, f"{where}.{key}", "is not a trial config field (use dotted names like head.depth)")
            if key == "seed" or key.startswith("data."):
                _fail(path, f"{where}.{key}", "variants share the seed and the data (common random numbers)")
        _check_trial(spec, {VARIANT_KEY: name}, where, name)
    heads = {name: head_kind(spec.trial_config({VARIANT_KEY: name})) for name in study.variants}
    study.check(str(path))
    study.check_heads(heads, str(path))
    if study.tuning is not None:
        _validate_tuning(spec, study.tuning, fields, {h["head"] for h in heads.values()})


def _validate_tuning(spec: SweepSpec, tuning: TuningSpec, fields: set[str], kinds: set[str]) -> None:
    path = spec.path
    where = "study.tuning"
    if not tuning.search_space and not any(tuning.by_head.values()):
        _fail(path, f"{where}.search_space", "a tuned study needs a search space (e.g. train.lr)")
    spaces = [("search_space", tuning.search_space),
              *((f"by_head.{kind}", dims) for kind, dims in tuning.by_head.items())]
    for kind in tuning.by_head:
        if kind not in kinds:
            _fail(path, f"{where}.by_head.{kind}", f"no variant has head kind {kind!r} "
                                                   f"(the study's: {', '.join(sorted(kinds))})")
    for prefix, dims in spaces:
        for name, raw in dims.items():
            at = f"{where}.{prefix}.{name}"
            if name not in fields:
                _fail(path, at, "is not a trial config field (use dotted names like train.lr)")
            if name == "seed" or name.startswith("data."):
                _fail(path, at, "variants share the seed and the data (common random numbers)")
            try:
                dim = _parse_dim(name, raw, path)
            except ConfigError as exc:
                _fail(path, at, exc.message)
            if tuning.search == "grid" and dim.kind not in ("choice", "grid", "int", "logint"):
                _fail(path, at, f"a grid search needs discrete values, not {dim.kind} "
                                "(list them with choice, or use search: optuna-tpe)")
    if tuning.repeats < 1:
        _fail(path, f"{where}.repeats", f"must be >= 1, got {tuning.repeats}")
    if tuning.search == "grid":
        for key in ("trials", "startup_trials"):
            if getattr(tuning, key) is not None:
                _fail(path, f"{where}.{key}", "a grid tries every point with each tuning seed; "
                                             f"leave {key} out (or use search: optuna-tpe)")
    else:
        if tuning.points < 2:
            _fail(path, f"{where}.trials", f"a search needs at least 2 trials per variant, got {tuning.points}")
        startup = tuning_startup(tuning)
        if not 1 <= startup < tuning.points:
            _fail(path, f"{where}.startup_trials",
                  f"{startup} random start-up trials leave TPE nothing to model among the "
                  f"{tuning.points} tuning trials per variant; use fewer start-up trials or more trials")
    if tuning.asha is not None:
        if tuning.asha.grace_period < 1 or tuning.asha.reduction_factor < 2:
            _fail(path, f"{where}.asha", "grace_period must be >= 1 and reduction_factor >= 2")
        if tuning.asha.grace_period >= spec.max_epochs:
            _fail(path, f"{where}.asha.grace_period", f"must be below the trials' train.epochs "
                                                      f"({spec.max_epochs}), got {tuning.asha.grace_period}")
    first = next(iter(spec.bases.values())).seed
    test = set(range(first, first + spec.repeats))
    tune_seeds = set(range(tuning.seed, tuning.seed + tuning.repeats))
    if test & tune_seeds:
        _fail(path, f"{where}.seed", f"the tuning seeds {tuning.seed}-{tuning.seed + tuning.repeats - 1} "
                                     f"overlap the study's test seeds {first}-{first + spec.repeats - 1}: "
                                     "tune on seeds the study never tests on")


def tuning_startup(tuning: TuningSpec) -> int:
    """The random start-up trials of a TPE tuning search (each with ``repeats`` seeds)."""
    return tuning.startup_trials if tuning.startup_trials is not None else max(1, tuning.points // 2)


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
        if exc.field in params:  # blame the dimension whose value the check refused
            name, value = exc.field, params[exc.field]
        others = ", ".join(f"{k}={v!r}" for k, v in params.items() if k not in (name, BASE_KEY))
        beside = f" beside {others}" if others else ""
        where = name if name.startswith(("study.", "initial_points")) else f"search_space.{name}"
        _fail(spec.path, where, f"value {value!r}{beside} gives an invalid trial ({exc.field}: {exc.message})")


def _dim_to_dict(dim: Dimension) -> dict[str, Any]:
    out: dict[str, Any] = ({dim.kind: list(dim.values)} if dim.kind in ("choice", "grid")
                           else {dim.kind: [dim.low, dim.high]})
    if dim.when:
        out["when"] = {key: list(allowed) for key, allowed in dim.when}
    return out


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    """A loaded spec as the mapping that loads back to it (base configs inlined,
    every default filled): how masksep writes the specs it derives from a spec
    (a tuned study's stages) without re-reading the user's YAML."""
    import dataclasses

    out: dict[str, Any] = {"name": spec.name}
    if len(spec.bases) == 1 and not any(d.name == BASE_KEY for d in spec.dims):
        out["base"] = config_mod.to_dict(next(iter(spec.bases.values())))
    else:
        out["bases"] = {k: config_mod.to_dict(cfg) for k, cfg in spec.bases.items()}
    if spec.study is not None:
        study = spec.study.to_dict()
        study.pop("repeats", None)  # the top-level repeats
        if spec.study.tuning is not None:
            study["tuning"] = {k: v for k, v in dataclasses.asdict(spec.study.tuning).items()
                               if v is not None}
        out["study"] = study
    else:
        out["search_space"] = {d.name: _dim_to_dict(d) for d in spec.dims}
    out.update(
        search=spec.search, scheduler=spec.scheduler, asha=dataclasses.asdict(spec.asha),
        num_samples=spec.num_samples, max_concurrent_trials=spec.max_concurrent_trials,
        resources=dataclasses.asdict(spec.resources), time_budget_s=spec.time_budget_s,
        repeats=spec.repeats, max_failures=spec.max_failures, seed=spec.seed,
        storage_path=spec.storage_path, wandb=dataclasses.asdict(spec.wandb),
        gpu_hours=spec.gpu_hours, initial_points=[dict(p) for p in spec.initial_points],
        data_cache=spec.data_cache, startup_trials=spec.startup_trials)
    return out


def self_contained_yaml(spec: SweepSpec) -> str:
    """The spec as one YAML that needs no other file: its base trial configs
    inlined (for a job on a cluster head, and OUT/spec.yaml)."""
    import yaml

    raw = config_mod.read_yaml(spec.path)
    raw["name"] = spec.name
    if "bases" in raw:
        raw["bases"] = {key: config_mod.to_dict(cfg) for key, cfg in spec.bases.items()}
    else:
        raw["base"] = config_mod.to_dict(next(iter(spec.bases.values())))
    return yaml.safe_dump(raw, sort_keys=False)


def spec_summary(spec: SweepSpec) -> str:
    """One line for the terminal."""
    budget = f", budget {spec.time_budget_s:.0f} s" if spec.time_budget_s else ""
    gpus = f" {spec.resources.gpus:g} GPU" if spec.resources.gpus else ""
    what = (f"study of {len(spec.study.variants)} variants x {spec.repeats} seeds"
            if spec.study is not None else f"{spec.search}, scheduler {spec.scheduler}")
    return (f"sweep {spec.name!r}: {count_trials(spec)} trials, {what}, "
            f"{spec.max_concurrent_trials} at a time, "
            f"{spec.resources.cpus:g} CPU{gpus} per trial{budget}")
