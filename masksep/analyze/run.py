"""``masksep analyze``: checkpoints or a sweep folder in, DIR/analysis.json,
one PNG per checkpoint and DIR/summary.md out.

Everything is computed and rendered before the first file is written, so bad
input (a shallow head, a deep head of ``head.layout`` per_source, a missing
or corrupt checkpoint, a sweep without deep or og trials) leaves nothing
behind; in a sweep folder such trials are left out, each with its reason. A sweep folder without checkpoints (a
committed results folder) but with its analysis.json gets summary.md rendered
again from that file.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from masksep import rundir
from masksep.errors import UserError
from masksep.files import atomic_write

FORMAT = "masksep-analysis-1"
ANALYSIS_FILE = PurePosixPath(rundir.ANALYSIS).name
SUMMARY_FILE = rundir.REPORT
DEFAULT_ITEMS = 16


@dataclass
class Target:
    """One checkpoint to analyse, with what its sweep says about it."""

    name: str
    path: Path
    variant: str | None = None
    trial: dict[str, Any] = field(default_factory=dict)  # the trial's summary.json


# --------------------------------------------------------------------------- inputs


def with_data(cfg, data_dir: Path):
    """``cfg`` reading its test set from a corpus folder (as ``masksep eval --data``)."""
    from masksep.data.checks import with_folder

    return with_folder(cfg, data_dir)


def analysable(cfg) -> str | None:
    """Why a head has nothing to analyse, or None when it has."""
    head = cfg.head
    if head.kind == "shallow" or (head.kind == "deep" and head.depth < 2):
        return "a shallow head (depth 1) has no hidden layer and no grouping to analyse"
    if head.kind == "deep" and head.layout == "per_source":
        # The views read the last layer as the grouping of hidden units; in the
        # SIMO-SISO layout a unit of the shared SISO MLP feeds every source with the
        # same weights, and a source's copy of it feeds that source alone, so the
        # shares are fixed by construction, not learned.
        return ("head.layout per_source: each source's hidden units feed that source's mask "
                "alone (by construction), so there is no grouping of units to analyse")
    if cfg.n_src < 2:
        return "one source (n_src 1): there is nothing to group"
    return None


def _checkpoint_name(path: Path, taken: set[str]) -> str:
    """<run>/checkpoints/best.pt -> <run>; other files keep their stem too."""
    parent = path.parent.parent.name if path.parent.name == rundir.CHECKPOINTS else path.parent.name
    base = parent if path.stem == "best" and parent else f"{parent}-{path.stem}" if parent else path.stem
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base) or "checkpoint"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def sweep_trials(sweep_dir: Path) -> list[Path] | None:
    """The trial folders of a sweep (None when the folder has no sweep state)."""
    from masksep.rundir import STATE as STATE_FILE
    from masksep.rundir import experiment_path, read_state

    if not (sweep_dir / STATE_FILE).is_file():
        return None
    state = read_state(sweep_dir)
    uri = experiment_path(state)
    # The state names an absolute path; a sweep folder that was moved still has ray/NAME beside it.
    for folder in ([] if "://" in uri else [Path(uri)]) + [sweep_dir / "ray" / state["name"]]:
        if folder.is_dir():
            return sorted(p for p in folder.glob("trial_*") if p.is_dir())
    if "://" in uri:
        raise UserError(f"{sweep_dir}: its trials are in {uri}; masksep analyze reads a local "
                        f"folder (copy the experiment to {sweep_dir / 'ray' / state['name']})")
    return []


# --------------------------------------------------------------------------- one checkpoint


class _Datasets:
    """Test items per data configuration: a corpus is opened (and checked) once per run."""

    def __init__(self, data_dir: Path | None, items: int):
        self.data_dir = data_dir
        self.items = items
        self._cache: dict[str, tuple[list, str, int]] = {}

    def get(self, cfg) -> tuple[Any, list, str, int]:
        from masksep import config as config_mod
        from masksep.data import build_dataset

        if self.data_dir is not None:
            cfg = with_data(cfg, self.data_dir)
        key = json.dumps([config_mod.to_dict(cfg)[k] for k in ("data", "n_src", "sample_rate", "seed")],
                         sort_keys=True)
        if key not in self._cache:
            dataset = build_dataset(cfg, "test")
            n = min(self.items, len(dataset))
            if n < 2:
                raise UserError(f"{cfg.data.kind} test set: {len(dataset)} item(s); the analysis needs "
                                "at least 2 (half fit the function view, half evaluate it)")
            where = ("synthetic" if cfg.data.kind == "synthetic" else cfg.data.root
                     or " + ".join(r.root for r in cfg.data.roots or []))
            self._cache[key] = ([dataset[i] for i in range(n)], where, getattr(dataset, "skipped", 0))
        items, where, skipped = self._cache[key]
        return cfg, items, where, skipped


def _not_applicable(reason: str) -> dict[str, Any]:
    return {"applicable": False, "reason": reason}


def _views(model, items, settings, kind: str, width: int) -> dict[str, Any]:
    from masksep.analyze import views

    half = len(items) // 2
    fit_batches = views.probe(model, items[:half])
    eval_batches = views.probe(model, items[half:])
    batches = fit_batches + eval_batches
    out: dict[str, Any] = {}
    if kind == "deep":
        out["weight"] = views.weight_view_deep(model.head, settings)
        out["ablation"] = views.ablation_view(model, batches, out["weight"]["dominant_source"],
                                              settings, og_outputs=False)
        if width >= model.n_src:
            out["function"] = views.function_view(model, fit_batches, eval_batches, width, settings)
    elif kind == "og-learned":
        out["weight"] = views.weight_view_grouping(model.head, settings)
        out["ablation"] = views.ablation_view(model, batches, out["weight"]["dominant_source"],
                                              settings, og_outputs=True)
    else:
        out["assignment"] = views.assignment_view(model, batches, settings)
    return out


def analyze_checkpoint(target: Target, datasets: _Datasets, settings) -> tuple[dict[str, Any], bytes]:
    """The analysis.json entry of one checkpoint and its figure."""
    from masksep import config as config_mod
    from masksep import train
    from masksep.analyze import render

    start = time.perf_counter()
    ckpt = train.load_checkpoint(target.path)
    cfg, model = train.model_from_checkpoint(ckpt, str(target.path))
    reason = analysable(cfg)
    if reason is not None:
        raise UserError(f"{target.path}: {reason}")
    cfg, items, where, skipped = datasets.get(cfg)
    init = train.initial_model(cfg)
    model.eval()
    init.eval()
    h = cfg.head
    kind = "deep" if h.kind == "deep" else f"og-{h.grouping}"
    width = h.width
    trained = _views(model, items, settings, kind, width)
    initial = _views(init, items, settings, kind, width)

    def paired(view: str, **extra) -> dict[str, Any]:
        return {"applicable": True, **extra, "trained": trained[view], "init": initial[view]}

    entry: dict[str, Any] = {
        "name": target.name,
        "checkpoint": str(target.path),
        "figure": f"{target.name}.png",
        "kind": kind,
        "head": {**config_mod.head_summary(cfg), "hidden_act": h.hidden_act, "mask_act": h.mask_act,
                 "gated_output": h.gated_output},
        "variant": target.variant,
        "seed": cfg.seed,
        "n_src": cfg.n_src,
        "data": where,
        "items": len(items),
        **({"skipped_items": skipped} if skipped else {}),
        **({"test_si_snri": target.trial["test_si_snri"]} if "test_si_snri" in target.trial else {}),
    }
    oracle = "oracle grouping: the grouping is chosen per mixture against the references, so "
    if kind == "deep":
        entry["weight"] = paired("weight", basis="output layer: share of each hidden unit's "
                                 "outgoing weight energy per source")
        entry["ablation"] = paired("ablation", units="hidden units of the last hidden layer")
        entry["function"] = (paired("function") if "function" in trained else
                             _not_applicable(f"width {width} < {cfg.n_src} sources"))
    elif kind == "og-learned":
        entry["weight"] = paired("weight", basis="learned grouping matrix softmax(group_logits); "
                                 "at initialisation output p is given 0.9 to source p mod C by design")
        entry["ablation"] = paired("ablation", units="overseparated outputs (masks before grouping)")
        entry["function"] = _not_applicable("an og head is overseparation-grouping already")
    else:
        entry["weight"] = _not_applicable(oracle + "there is no learned grouping to read; "
                                          "see the assignment view")
        entry["assignment"] = paired("assignment")
        entry["ablation"] = _not_applicable(oracle + "silencing the outputs it gives source c "
                                            "removes source c by construction")
        entry["function"] = _not_applicable("an og head is overseparation-grouping already")
    entry["seconds"] = round(time.perf_counter() - start, 3)
    return entry, render.figure(entry, settings.share_threshold)


# --------------------------------------------------------------------------- runs


def _write(out: Path, analysis: dict[str, Any], figures: dict[str, bytes]) -> None:
    from masksep.analyze import render

    summary = render.summary_markdown(analysis)
    text = json.dumps(analysis, indent=1) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    for name, png in figures.items():
        atomic_write(out / name, png)
    atomic_write(out / ANALYSIS_FILE, text)
    atomic_write(out / SUMMARY_FILE, summary)


def _run(targets: list[Target], out: Path, source: str, data: Path | None, items: int,
         threads: int, settings, skipped: list[dict[str, str]]) -> dict[str, Any]:
    from masksep import train

    if items < 2:
        raise UserError(f"--items: at least 2, got {items} (half fit the function view, half evaluate it)")
    used = train.setup_threads(threads)
    start = time.perf_counter()
    datasets = _Datasets(data, items)
    entries, figures = [], {}
    for target in targets:
        entry, png = analyze_checkpoint(target, datasets, settings)
        entries.append(entry)
        figures[entry["figure"]] = png
    seconds = time.perf_counter() - start
    for entry in entries:  # results folders keep paths relative to their own folder
        entry["checkpoint"] = _relative(entry["checkpoint"], out)
    analysis = {
        "format": FORMAT,
        "source": source if source == rundir.CHECKPOINTS else _relative(source, out),
        "settings": settings.as_dict(),
        "threads": used,
        "seconds": round(seconds, 2),
        "entries": entries,
        "left_out": skipped,
    }
    _write(out, analysis, figures)
    return {"out": str(out), "analysed": len(entries), "left_out": len(skipped),
            "seconds": round(seconds, 2), "seconds_per_checkpoint": round(seconds / len(entries), 2),
            "threads": used}


def _relative(path: str | Path, out: Path) -> str:
    """``path`` as seen from the analysis folder ``out`` (``..`` for its sweep folder), so
    that analysis.json reads the same wherever the folder is copied."""
    return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix()


def analyze_checkpoints(paths: list[Path], out: Path, **kw) -> dict[str, Any]:
    taken: set[str] = set()
    targets = [Target(_checkpoint_name(Path(p), taken), Path(p)) for p in paths]
    return _run(targets, Path(out), rundir.CHECKPOINTS, skipped=[], **kw)


def analyze_sweep(sweep_dir: Path, out: Path | None = None, **kw) -> dict[str, Any]:
    """Every deep (depth >= 2) or og trial of a sweep or study with a best.pt."""
    from masksep import config as config_mod
    from masksep import train

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else sweep_dir / "analysis"
    trials = sweep_trials(sweep_dir)
    with_best = [t for t in trials or [] if (t / rundir.BEST).is_file()]
    if not with_best:
        if (out / ANALYSIS_FILE).is_file():
            return rerender(out)
        if trials is None:
            raise UserError(f"{sweep_dir}: no sweep here (sweep.json is missing) and no "
                            f"{out / ANALYSIS_FILE} to render again")
        raise UserError(f"{sweep_dir}: no trial has a checkpoint (checkpoints/best.pt) to analyse")
    targets, skipped, kinds = [], [], []
    for trial in with_best:
        name = trial.name.removeprefix("trial_")
        path = trial / rundir.BEST
        ckpt = train.load_checkpoint(path)
        cfg = config_mod.from_dict(ckpt["config"], str(path))
        summary = config_mod.head_summary(cfg)
        kind = summary["head"] if summary["depth"] > 1 or summary["head"] == "og" else "shallow"
        kinds.append(f"{kind} per_source" if summary["layout"] == "per_source" else kind)
        reason = analysable(cfg)
        if reason is not None:
            skipped.append({"name": name, "reason": reason})
            continue
        variant = _read_json(trial / rundir.SEARCHED).get("variant")
        targets.append(Target(name, path, variant if isinstance(variant, str) else None,
                              _read_json(trial / rundir.SUMMARY)))
    for trial in trials or []:
        if trial not in with_best:
            skipped.append({"name": trial.name.removeprefix("trial_"), "reason": "no checkpoints/best.pt"})
    if not targets:
        counts = ", ".join(f"{kinds.count(k)} {k}" for k in sorted(set(kinds)))
        raise UserError(f"{sweep_dir}: no deep (depth >= 2) or og trials to analyse ({counts})")
    return _run(targets, out, str(sweep_dir), skipped=skipped, **kw)


def load_analysis(path: Path) -> dict[str, Any]:
    """analysis.json, checked; one UserError line when it is not one."""
    try:
        analysis = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable analysis ({type(exc).__name__})") from None
    if not isinstance(analysis, dict) or analysis.get("format") != FORMAT or not isinstance(
            analysis.get("entries"), list):
        raise UserError(f"{path}: not a masksep analysis (no '{FORMAT}' format tag)")
    return analysis


def rerender(out: Path) -> dict[str, Any]:
    """summary.md again from OUT/analysis.json (no checkpoints needed)."""
    from masksep.analyze import render

    analysis = load_analysis(out / ANALYSIS_FILE)
    atomic_write(out / SUMMARY_FILE, render.summary_markdown(analysis, rerendered=True))
    return {"out": str(out), "analysed": len(analysis["entries"]), "rerendered": True}


def analyze(paths: list[Path], out: Path | None = None, *, data: Path | None = None,
            items: int = DEFAULT_ITEMS, threads: int = 0, settings=None) -> dict[str, Any]:
    """``masksep analyze``: one sweep folder, or one or more checkpoints with ``out``."""
    from masksep.analyze.views import Settings

    settings = settings or Settings()
    paths = [Path(p) for p in paths]
    kw = dict(data=data, items=items, threads=threads, settings=settings)
    for p in paths:
        if not p.exists():
            raise UserError(f"{p}: not found (analyze takes checkpoints or one sweep folder)")
    if len(paths) == 1 and paths[0].is_dir():
        return analyze_sweep(paths[0], out, **kw)
    for p in paths:
        if p.is_dir():
            raise UserError(f"{p}: a sweep folder is analysed on its own (masksep analyze SWEEP_DIR)")
    if out is None:
        raise UserError("--out: required when analysing checkpoints")
    return analyze_checkpoints(paths, out, **kw)
