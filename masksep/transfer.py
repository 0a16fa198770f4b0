"""``masksep transfer``: how models trained on one data source separate the others.

Sweeps in (one per training source: every trial with a ``checkpoints/best.pt``),
test sets in (LibriMix-, WSJ0-mix- or WHAM!-layout folders), and out a table: the
SI-SNRi of each source's heads on every test set, with n, spread and the 95 %
t-interval over seeds (:func:`masksep.stats.describe`).

A source named ``a+b`` was trained on the sources ``a`` and ``b`` (``data.roots``), so
test sets ``a`` and ``b`` are in its domain; every other test set is out of it. Each
source gets, heads pooled, its in-domain mean, its out-of-domain mean and its worst
test set, and the table names the source whose worst test set is the best: the one
that generalizes best by a rule that does not depend on which sets it has seen. Each head
is also paired by seed against a reference head (shallow) per source and test set: does a
head's effect follow its training data or its test data?

Every file but ``scores.csv`` and ``transfer.json`` is computed from them, so a committed
table renders again without its checkpoints (:func:`rerender`).

Everything is checked before the first checkpoint is scored (a missing sweep, a
folder of another layout, an unwritable OUT: one line, exit 2), and OUT's files are
written only when every score is in, each whole or not at all.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masksep import rundir, stats
from masksep.errors import UserError
from masksep.files import atomic_write, check_writable
from masksep.formats import ci, signed

FORMAT = "masksep-transfer-1"
SCORES = "scores.csv"  # a row per (checkpoint, test set)
TABLE = "transfer.csv"  # a row per (source, variant, test set)
PAIRED = "paired.csv"  # a row per (source, variant, test set): variant - reference, paired by seed
SUMMARY = "transfer.md"
STATE = "transfer.json"
FIGURE = "transfer.png"


@dataclass
class Model:
    source: str
    variant: str
    seed: int | None
    trial: str
    path: Path


def parse_named(values: list[str], flag: str) -> dict[str, Path]:
    """``NAME=DIR`` pairs, in order; a bad or repeated name is one line."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"{flag} {value!r}: expected NAME=DIR")
        if not all(ch.isalnum() or ch in "-_.+" for ch in name):
            raise UserError(f"{flag} {value!r}: use letters, digits, '-', '_', '.' or '+' in NAME")
        if name in out:
            raise UserError(f"{flag}: {name!r} is given twice")
        out[name] = Path(folder)
    return out


def components(source: str) -> set[str]:
    """The data sets a source was trained on: ``espeak+kokoro`` -> {espeak, kokoro}."""
    return set(source.split("+"))


def find_models(sources: dict[str, Path], variants: list[str] | None) -> list[Model]:
    """Every trial with a best.pt of each source's sweep (only ``variants``, if given)."""
    from masksep.analyze.run import sweep_trials

    models = []
    for source, folder in sources.items():
        trials = sweep_trials(folder) if folder.is_dir() else None
        if trials is None:
            raise UserError(f"--train {source}={folder}: not a sweep folder (no sweep.json)")
        found = []
        for trial in trials:
            if not (trial / rundir.BEST).is_file():
                continue
            searched = _read_json(trial / rundir.SEARCHED)
            summary = _read_json(trial / rundir.SUMMARY)
            variant = searched.get("variant")
            if not isinstance(variant, str):
                raise UserError(f"{trial}: not a study trial (searched.json names no variant)")
            if variants and variant not in variants:
                continue
            seed = summary.get("seed")
            found.append(Model(source, variant, seed if isinstance(seed, int) else None,
                               trial.name.removeprefix("trial_"), trial / rundir.BEST))
        if not found:
            which = f" of the variants {', '.join(variants)}" if variants else ""
            raise UserError(f"--train {source}={folder}: no trial{which} has checkpoints/best.pt")
        missing = sorted(set(variants or ()) - {m.variant for m in found})
        if missing:
            raise UserError(f"--train {source}={folder}: no trial of {', '.join(missing)} has a best.pt")
        models += sorted(found, key=lambda m: (m.variant, m.seed if m.seed is not None else -1, m.trial))
    return models


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _test_config(cfg, folder: Path):
    from masksep.data.checks import with_folder

    return with_folder(cfg, folder)


def score(models: list[Model], tests: dict[str, Path], progress=print) -> list[dict[str, Any]]:
    """SI-SNRi of every model on every test set: a row per pair."""
    from masksep import train
    from masksep.data import build_dataset
    from masksep.evaluation import check_lengths

    threads = train.setup_threads(0, "MASKSEP_THREADS")
    device = train.pick_device("cpu")
    rows = []
    datasets: dict[tuple[str, int], Any] = {}
    start = time.monotonic()
    for k, m in enumerate(models, 1):
        cfg, model = train.model_from_checkpoint(train.load_checkpoint(m.path), str(m.path))
        model.to(device)
        for test, folder in tests.items():
            key = (test, cfg.sample_rate)  # a test folder read once per sample rate
            if key not in datasets:
                datasets[key] = build_dataset(_test_config(cfg, folder), "test")
                check_lengths(datasets[key], cfg.sample_rate)
            means, items = train.evaluate(model, datasets[key], device, 1)
            rows.append({"source": m.source, "variant": m.variant, "seed": m.seed, "trial": m.trial,
                         "test": test, "items": len(items), "si_snri": round(means["si_snri"], 4)})
        progress(f"masksep transfer: {k}/{len(models)} checkpoints scored on {len(tests)} test sets "
                 f"({time.monotonic() - start:.0f} s, {threads} threads)")
    return rows


def cells(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A row per (source, variant, test set): n, mean, std and the 95 % CI over seeds."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    out = []
    for (source, variant, test), group in frame.groupby(["source", "variant", "test"], sort=False):
        d = stats.describe(group["si_snri"])
        out.append({"source": source, "variant": variant, "test": test,
                    "in_domain": test in components(source),
                    **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}})
    return out


def paired(rows: list[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Each variant minus ``reference`` per (source, test set), paired by seed (the same
    seed: the same initialisation and training data), with its 95 % CI and verdict."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    out = []
    for (source, test), group in frame.groupby(["source", "test"], sort=False):
        wide = group.pivot_table(index="seed", columns="variant", values="si_snri")
        if reference not in wide.columns:
            continue
        for variant in wide.columns:
            if variant == reference:
                continue
            d = stats.paired(wide[variant], wide[reference])
            out.append({"source": source, "test": test, "comparison": f"{variant} - {reference}",
                        "in_domain": test in components(source),
                        **{k: round(d[k], 4) if math.isfinite(d[k]) else None
                           for k in ("n", "mean", "std", "ci_low", "ci_high")},
                        "verdict": stats.verdict(d["ci_low"], d["ci_high"])})
    return out


def by_source(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source, heads pooled (the mean of its variants' cell means): the mean on its
    own test sets, on the others, and its worst test set."""
    import pandas as pd

    frame = pd.DataFrame(table)
    out = []
    for source, group in frame.groupby("source", sort=False):
        per_test = group.groupby("test", sort=False)["mean"].mean()
        own = [t for t in per_test.index if t in components(source)]
        other = [t for t in per_test.index if t not in components(source)]
        worst = per_test.idxmin()
        out.append({
            "source": source,
            "in_domain": round(float(per_test[own].mean()), 4) if own else None,
            "out_of_domain": round(float(per_test[other].mean()), 4) if other else None,
            "worst_test": worst, "worst": round(float(per_test[worst]), 4),
            "all_tests": round(float(per_test.mean()), 4),
        })
    best = max(out, key=lambda r: r["worst"])
    for r in out:
        r["generalizes_best"] = r is best
    return out


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _cell(c: dict[str, Any]) -> str:
    """A mean and its CI (a cell of either table); its n where there is no CI."""
    n = f"(n={c['n']})"
    return f"{signed(c['mean'])} {ci(c['ci_low'], c['ci_high'], missing=n)}"


def _grid(records: list[dict[str, Any]], column: str, label: str, tests: list[str]) -> list[str]:
    """A markdown table of cells (means or paired differences): a row per source and
    ``column``, a column per test set, the source's own test sets in bold."""
    index = {(r["source"], r[column], r["test"]): r for r in records}
    lines = [f"| trained on | {label} | " + " | ".join(tests) + " |", "|---|---|" + "---|" * len(tests)]
    for source, name in dict.fromkeys((r["source"], r[column]) for r in records):
        cols = []
        for t in tests:
            r = index.get((source, name, t))
            text = "" if r is None else _cell(r)
            cols.append(f"**{text}**" if r is not None and r["in_domain"] else text)
        lines.append(f"| {source} | {name} | " + " | ".join(cols) + " |")
    return lines


def markdown(table: list[dict[str, Any]], summary: list[dict[str, Any]], tests: list[str],
             meta: dict[str, Any], differences: list[dict[str, Any]] | None = None) -> str:
    ns = sorted({c["n"] for c in table})
    sets = ", ".join(f"{t} ({meta['tests'][t]['items']} mixtures)" for t in tests)
    lines = [
        "# Transfer across data sources",
        "",
        f"SI-SNRi (dB) of each training source's heads (rows) on every test set (columns): the "
        f"mean over seeds and its 95 % t-interval; n = {', '.join(map(str, ns))} seeds a cell "
        f"(a row per seed and test set: {SCORES}; n, SD and CI per cell: {TABLE}). "
        "**Bold**: a test set from the source's own training data. "
        f"Test sets: {sets}.",
        "",
        *_grid(table, "variant", "head", tests),
        "",
        "## Which source generalizes",
        "",
        "Heads pooled (the mean of the heads' cell means). The rule, fixed before any score: the "
        "source that generalizes best is the one whose **worst** test set scores highest, so a "
        "source is not rewarded for having seen more of the test sets.",
        "",
        "| trained on | own test sets | other test sets | all test sets | worst test set | generalizes best |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(f"| {r['source']} | {signed(r['in_domain'])} | {signed(r['out_of_domain'])} | "
                     f"{signed(r['all_tests'])} | {r['worst_test']} {signed(r['worst'])} | "
                     f"{'yes' if r['generalizes_best'] else ''} |")
    if differences:
        lines += [
            "",
            f"## Each head against {meta['reference']}, paired by seed",
            "",
            f"The same seed gives every head of a source the same initialisation and training "
            f"data, so each head minus {meta['reference']} is a paired difference (dB, mean and "
            f"95 % t-interval; {PAIRED}): does the head's effect depend on the data it was "
            "trained on, or on the data it is tested on? The verdict of each cell is the "
            "interval's: above 0, below 0, or not resolved.",
            "",
            *_grid(differences, "comparison", "comparison", tests),
        ]
    lines += ["", f"{meta['models']} checkpoints x {len(tests)} test sets scored in "
              f"{meta['seconds']:.0f} s ({meta['threads']} threads)."]
    return "\n".join(lines) + "\n"


def figure(table: list[dict[str, Any]], tests: list[str]) -> bytes:
    """A heat map of the cell means, rows (source, head), columns test sets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    pairs = list(dict.fromkeys((c["source"], c["variant"]) for c in table))
    index = {(c["source"], c["variant"], c["test"]): c["mean"] for c in table}
    grid = np.array([[index.get((s, v, t), np.nan) for t in tests] for s, v in pairs])
    fig, ax = plt.subplots(figsize=(1.6 * len(tests) + 3, 0.38 * len(pairs) + 1.4))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(tests)), tests)
    ax.set_yticks(range(len(pairs)), [f"{s} / {v}" for s, v in pairs])
    ax.set_xlabel("test set")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(image, ax=ax, label="SI-SNRi (dB), mean over seeds")
    ax.set_title("Trained on (rows), tested on (columns)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def run(sources: dict[str, Path], tests: dict[str, Path], out: Path,
        variants: list[str] | None = None, reference: str = "shallow",
        progress=print) -> dict[str, Any]:
    """``masksep transfer``: score, then write OUT's files (paired.csv only when some
    source has the ``reference`` variant)."""
    from masksep import config as config_mod
    from masksep import train

    if not sources:
        raise UserError("--train: give at least one NAME=SWEEP_FOLDER")
    if not tests:
        raise UserError("--test: give at least one NAME=TEST_FOLDER")
    check_writable(out)
    models = find_models(sources, variants)
    # every test folder is read once, through the first model's config, before any scoring
    cfg = config_mod.from_dict(train.load_checkpoint(models[0].path)["config"], str(models[0].path))
    meta_tests = {}
    for name, folder in tests.items():
        from masksep.data import build_dataset

        dataset = build_dataset(_test_config(cfg, folder), "test")
        meta_tests[name] = {"items": len(dataset), "folder": "/".join(folder.resolve().parts[-3:])}
    start = time.monotonic()
    rows = score(models, tests, progress)
    meta = {"format": FORMAT, "sources": {s: {"sweep": f.resolve().name,
                                              "checkpoints": sum(m.source == s for m in models)}
                                          for s, f in sources.items()},
            "tests": meta_tests, "variants": variants, "reference": reference, "models": len(models),
            "seconds": round(time.monotonic() - start, 1),
            "threads": train.setup_threads(0, "MASKSEP_THREADS")}
    return write(out, rows, meta)


def write(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Everything but the scores is computed from them: the cells, the paired differences,
    the summary by source, transfer.md and the figure, then every file is written."""
    table = cells(rows)
    meta = {**meta, "by_source": by_source(table)}
    differences = paired(rows, meta["reference"])
    names = list(meta["tests"])
    texts = {SCORES: _csv(rows), TABLE: _csv(table),
             SUMMARY: markdown(table, meta["by_source"], names, meta, differences),
             STATE: json.dumps(meta, indent=2) + "\n"}
    if differences:
        texts[PAIRED] = _csv(differences)
    png = figure(table, names)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        atomic_write(out / name, text)
    atomic_write(out / FIGURE, png)
    return meta


def rerender(out: Path, reference: str | None = None) -> dict[str, Any]:
    """A transfer folder's files again from its scores.csv and transfer.json (no
    checkpoints or test sets needed: a committed results folder)."""
    import pandas as pd

    meta = _read_json(out / STATE)
    if meta.get("format") != FORMAT or not isinstance(meta.get("tests"), dict):
        raise UserError(f"{out / STATE}: not a masksep transfer file (format {FORMAT})")
    try:
        frame = pd.read_csv(out / SCORES)
    except (OSError, ValueError) as exc:
        raise UserError(f"{out / SCORES}: cannot be read ({exc})") from None
    needed = {"source", "variant", "seed", "trial", "test", "items", "si_snri"}
    if not needed <= set(frame.columns) or frame.empty:
        raise UserError(f"{out / SCORES}: needs the columns {', '.join(sorted(needed))} and a row")
    rows = frame.to_dict("records")
    meta.setdefault("reference", "shallow")
    if reference is not None:
        meta["reference"] = reference
    return write(out, rows, meta)
