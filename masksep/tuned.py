"""A tuned study: the search feeds the study.

A study spec with ``study.tuning`` runs in two stages, each an ordinary sweep:

1. **tuning**, one search per variant (``OUT/tuning/VARIANT/``) on validation
   SI-SNRi, the variant's fields fixed and the tuning space searched
   (``search_space`` for every variant, ``by_head`` for one head kind), the same
   points per variant, on the tuning seeds (never the study's test seeds: the spec
   refuses an overlap). By default a grid (every point with every tuning seed, no
   pruning); with ``search: optuna-tpe``, Optuna TPE whose random start-up stays
   below the trials it is given (the spec refuses one that would never model), the
   variant's own study setting the first point tried. A variant's tuned setting is
   the point with the best mean validation SI-SNRi over its tuning trials that
   trained to the end. Test scores are never looked at.
2. **the study** (``OUT``), every variant at its tuned setting, paired seeds as
   in any study, with ``study.tuned`` recording what was chosen (the report shows it).

Each stage's spec is derived from the loaded spec (dataclasses.replace, written
with spec.spec_to_dict), so a stage runs on exactly the base config the study
names. ``OUT/tuned.json`` holds the chosen settings. Each stage is resumable: a
finished stage is read back, an unfinished one resumed (``--resume``) or run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from masksep import config as config_mod
from masksep import rundir
from masksep.errors import UserError
from masksep.files import atomic_write
from masksep.rundir import STATE as STATE_FILE
from masksep.rundir import read_state
from masksep.sweep import spec as spec_mod

TUNED_FILE, TUNING_DIR = rundir.TUNED, rundir.TUNING


def _line(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def tuning_dims(spec: spec_mod.SweepSpec, variant: str) -> dict[str, Any]:
    """The dimensions searched for ``variant``: the common space and its head kind's."""
    tuning = spec.study.tuning
    kind = spec.trial_config({spec_mod.VARIANT_KEY: variant}).head.kind
    return {**tuning.search_space, **tuning.by_head.get(kind, {})}


def variant_base(spec: spec_mod.SweepSpec, variant: str, seed: int) -> config_mod.Config:
    """The study's base config with ``variant``'s fields, at ``seed``."""
    base = next(iter(spec.bases.values()))
    return config_mod.merge(base, {**spec.study.variants[variant], "seed": seed}, str(spec.path))


def tuning_spec(spec: spec_mod.SweepSpec, variant: str) -> spec_mod.SweepSpec:
    """The search sweep that tunes ``variant``: the study's spec, its base config
    with the variant's fields at the tuning seed, the tuning space searched."""
    tuning = spec.study.tuning
    dims = tuning_dims(spec, variant)
    parsed = tuple(spec_mod._parse_dim(name, raw, spec.path) for name, raw in dims.items())
    base = variant_base(spec, variant, tuning.seed)
    common = dict(name=f"{spec.name}-tune-{variant}", bases={"default": base}, study=None,
                  repeats=tuning.repeats,
                  scheduler="asha" if tuning.asha is not None else "none",
                  asha=tuning.asha or spec_mod.AshaSpec())
    if tuning.search == "grid":
        grid = tuple(dataclasses.replace(d, kind="grid", values=tuple(d.grid_values()))
                     for d in parsed)
        return dataclasses.replace(spec, dims=grid, search="grid", num_samples=1,
                                   initial_points=(), **common)
    start = {d.name: config_value(base, d.name) for d in parsed}
    return dataclasses.replace(spec, dims=parsed, search="optuna-tpe",
                               num_samples=tuning.points * tuning.repeats,
                               startup_trials=spec_mod.tuning_startup(tuning),
                               initial_points=(start,), **common)


def study_spec(spec: spec_mod.SweepSpec, chosen: dict[str, dict[str, Any]]) -> spec_mod.SweepSpec:
    """The study at the tuned settings: the same spec, each variant's fields
    updated with what its search chose, ``study.tuned`` recording it."""
    study = dataclasses.replace(
        spec.study, tuning=None, tuned=chosen,
        variants={v: {**fields, **chosen.get(v, {})} for v, fields in spec.study.variants.items()})
    return dataclasses.replace(spec, study=study)


def config_value(cfg: Any, dotted: str) -> Any:
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def best_setting(folder: Path, dims: list[str]) -> dict[str, Any]:
    """The tuned values: the searched point with the best mean validation SI-SNRi
    over its tuning trials that trained to the end (trials.csv of the tuning sweep)."""
    from masksep.report import load_trials

    trials = load_trials(folder / rundir.TRIALS)
    done = trials[(trials["status"] == "completed") & trials["best_val_si_snri"].map(math.isfinite)]
    columns = [f"searched.{d}" for d in dims]
    missing = [c for c in columns if c not in done.columns]
    if done.empty or missing:
        raise UserError(f"{folder}: no completed tuning trial to take a setting from")
    means = done.groupby(columns, dropna=False)["best_val_si_snri"].mean()
    best = means.idxmax()
    best = best if isinstance(best, tuple) else (best,)
    return {d: _plain(v) for d, v in zip(dims, best, strict=True)}


def _plain(value: Any) -> Any:
    """A value of trials.csv as the config reads it: numpy to Python, 128.0 to 128."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _finished(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file() and read_state(folder).get("status") == "finished"


def _write_spec(path: Path, spec: spec_mod.SweepSpec) -> Path:
    """Write a derived spec (once; unchanged on a resume) and load it back, so a
    stage's spec error surfaces before anything trains."""
    text = yaml.safe_dump(spec_mod.spec_to_dict(spec), sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    spec_mod.load_spec(path)
    return path


def run_tuned_study(spec_path: str | Path, out: str | Path, *, resume: bool = False,
                    **sweep_kwargs: Any) -> dict[str, Any] | None:
    """Tune every variant, then run the study at the tuned settings into ``out``."""
    from masksep.pipeline import sweep_and_report  # each stage gets its report

    spec = spec_mod.load_spec(spec_path)
    if spec.study is None or spec.study.tuning is None:
        raise UserError(f"{spec_path}: study.tuning: not a tuned study")
    out = Path(out).resolve()
    if (out / STATE_FILE).exists() and not resume:
        raise UserError(f"{out}: already holds a sweep; pass --resume to continue it or pick another --out")
    stage = out / TUNING_DIR
    tuning = spec.study.tuning
    # Every stage's spec is written and checked before anything trains.
    subs = {v: tuning_spec(spec, v) for v in spec.study.variants}
    paths = {v: _write_spec(stage / f"{v}.yaml", sub) for v, sub in subs.items()}

    chosen: dict[str, dict[str, Any]] = {}
    for i, (variant, path) in enumerate(paths.items(), start=1):
        folder = stage / variant
        if not _finished(folder):
            seeds = f"{tuning.seed}" + (f"-{tuning.seed + tuning.repeats - 1}" if tuning.repeats > 1 else "")
            _line(f"tuning {variant} ({i}/{len(paths)}): {spec_mod.count_trials(subs[variant])} "
                  f"trials ({tuning.search}) on seed {seeds}")
            sweep_and_report(path, folder, resume=(folder / STATE_FILE).is_file(), **sweep_kwargs)
        chosen[variant] = best_setting(folder, list(tuning_dims(spec, variant)))
        _line(f"tuned  {variant}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in chosen[variant].items()))
    atomic_write(out / TUNED_FILE, json.dumps(chosen, indent=2) + "\n")
    path = _write_spec(stage / "study.yaml", study_spec(spec, chosen))
    return sweep_and_report(path, out, resume=(out / STATE_FILE).is_file(), **sweep_kwargs)
