"""A tuned study (issue 26): the search feeds the study.

A study spec with ``study.tuning`` runs in two stages, each an ordinary sweep:

1. **tuning**, one search per variant (``OUT/tuning/VARIANT/``): Optuna TPE with
   ASHA on validation SI-SNRi, the variant's fields fixed and the tuning space
   searched (``search_space`` for every variant, ``by_head`` for one head kind, e.g.
   the deep head's width), the same number of trials per variant, on the tuning
   seeds (never the study's test seeds: the spec refuses an overlap). The
   variant's own study setting is the first point tried. A variant's tuned
   setting is the point with the best mean validation SI-SNRi over the tuning
   trials that trained to the end (ASHA's stopped trials were compared on fewer
   epochs). Test scores are never looked at.
2. **the study** (``OUT``), every variant at its tuned setting, paired seeds as
   in any study, with ``study.tuned`` recording what was chosen (the report shows it).

``OUT/tuned.json`` holds the chosen settings. Each stage is resumable: a
finished stage is read back, an unfinished one resumed (``--resume``) or run.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from masksep import rundir
from masksep.config import set_dotted
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


def tuning_spec(spec: spec_mod.SweepSpec, raw: dict[str, Any], variant: str) -> dict[str, Any]:
    """The search sweep that tunes ``variant`` (a spec mapping, bases inlined)."""
    tuning = spec.study.tuning
    dims = tuning_dims(spec, variant)
    cfg = spec.trial_config({spec_mod.VARIANT_KEY: variant})
    start = {name: config_value(cfg, name) for name in dims}
    trial = copy.deepcopy(raw.get("trial") or {})
    for key, value in {**spec.study.variants[variant], "seed": tuning.seed}.items():
        set_dotted(trial, key, value)
    sub = {k: copy.deepcopy(raw[k]) for k in ("base", "max_concurrent_trials", "resources",
                                               "max_failures", "wandb", "data_cache") if k in raw}
    sub.update(name=f"{spec.name}-tune-{variant}", trial=trial, search_space=copy.deepcopy(dims),
               search="optuna-tpe", scheduler="asha",
               asha={"grace_period": tuning.asha.grace_period,
                     "reduction_factor": tuning.asha.reduction_factor},
               num_samples=tuning.trials, repeats=tuning.repeats, seed=spec.seed,
               initial_points=[start])
    return sub


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
    raw = yaml.safe_load(spec_mod.self_contained_yaml(spec))
    stage = out / TUNING_DIR
    # Every stage's spec is written and checked before anything trains.
    paths = {}
    for variant in spec.study.variants:
        path = stage / f"{variant}.yaml"
        text = yaml.safe_dump(tuning_spec(spec, raw, variant), sort_keys=False)
        if not path.is_file() or path.read_text() != text:
            stage.mkdir(parents=True, exist_ok=True)
            atomic_write(path, text)
        spec_mod.load_spec(path)
        paths[variant] = path

    chosen: dict[str, dict[str, Any]] = {}
    for i, (variant, path) in enumerate(paths.items(), start=1):
        folder = stage / variant
        if not _finished(folder):
            _line(f"tuning {variant} ({i}/{len(paths)}): {spec.study.tuning.trials} trials on seed "
                  f"{spec.study.tuning.seed}" + (f"+{spec.study.tuning.repeats - 1}"
                                                 if spec.study.tuning.repeats > 1 else ""))
            sweep_and_report(path, folder, resume=(folder / STATE_FILE).is_file(), **sweep_kwargs)
        chosen[variant] = best_setting(folder, list(tuning_dims(spec, variant)))
        _line(f"tuned  {variant}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in chosen[variant].items()))
    atomic_write(out / TUNED_FILE, json.dumps(chosen, indent=2) + "\n")

    study_raw = copy.deepcopy(raw)
    block = study_raw["study"]
    block.pop("tuning", None)
    for variant, values in chosen.items():
        block["variants"][variant] = {**(block["variants"][variant] or {}), **values}
    block["tuned"] = chosen
    path = stage / "study.yaml"
    text = yaml.safe_dump(study_raw, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        atomic_write(path, text)
    return sweep_and_report(path, out, resume=(out / STATE_FILE).is_file(), **sweep_kwargs)
