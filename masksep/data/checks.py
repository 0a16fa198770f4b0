"""Whole data folders, as ``masksep data check`` sees them: which layout a folder
has (LibriMix, WSJ0-mix, WHAM!, or plain utterances) and every problem of every
list in it. The checks of items themselves are :mod:`masksep.data.problems`'s.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from masksep.data import librimix, wsj0mix
from masksep.data.dynamic import SPLIT_FOLDERS
from masksep.data.problems import (
    SUM_TOL_DB,
    CheckReport,
    Problem,
    check_files,
    check_items,
    iter_audio,
)
from masksep.errors import UserError


def rate_from_path(path: str | Path) -> int | None:
    """8000 for a path with a ``wav8k`` component (the LibriMix / WSJ0-mix convention)."""
    for part in reversed(Path(path).parts):
        if part.startswith("wav") and part.endswith("k") and part[3:-1].isdigit():
            return int(part[3:-1]) * 1000
    return None


def print_report(report: CheckReport, out=None) -> None:
    out = out or sys.stdout
    for p in report.problems:
        print(str(p), file=out)


LAYOUTS = ("auto", "librimix", "wsj0mix", "wham", "utterances")


def detect_layout(folder: Path) -> tuple[str, list[Path]]:
    """(layout, roots) of a data folder: the folders that hold metadata/ (LibriMix),
    tr/ cv/ tt/ (WSJ0-mix, WHAM!), or else audio files (utterances)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: data folder not found")
    if (folder / "metadata").is_dir():
        return "librimix", [folder]
    below = sorted(p.parent for p in folder.glob("wav*k/*/metadata") if p.is_dir())
    if below:
        return "librimix", below
    split_roots = [folder] if any((folder / s).is_dir() for s in wsj0mix.SPLITS) else sorted(
        p for p in [*folder.glob("*speakers/wav*k/*"), *folder.glob("wav*k/*")]
        if any((p / s).is_dir() for s in wsj0mix.SPLITS)
    )
    if split_roots:
        has_clean = any((r / s / "mix_clean").is_dir() for r in split_roots for s in wsj0mix.SPLITS)
        return ("wham" if has_clean else "wsj0mix"), split_roots
    if any(True for _ in iter_audio(folder)):
        return "utterances", [folder]
    raise UserError(
        f"{folder}: not a data folder (no metadata/ for LibriMix, no tr/ cv/ tt/ for "
        "WSJ0-mix or WHAM!, no audio files)"
    )


def check_folder(
    folder: str | Path,
    *,
    layout: str = "auto",
    splits: list[str] | None = None,
    rate: int | None = None,
    n_src: int | None = None,
    level: str = "full",
    sum_tol_db: float = SUM_TOL_DB,
    log=None,
) -> CheckReport:
    """Check a whole data folder (every CSV or split subfolder in it).

    ``rate`` None: the rate its path states (``wav8k``), else the most common
    rate among its files. ``n_src`` None: as many sources as each list has.
    ``log(line)`` hears what is being checked.
    """
    folder = Path(folder)
    found, roots = detect_layout(folder)
    if layout == "auto":
        layout = found
    elif layout != found and not {layout, found} <= {"wsj0mix", "wham"}:
        raise UserError(f"{folder}: looks like a {found} folder, not {layout}")
    log = log or (lambda line: None)
    report = CheckReport()
    t0 = time.monotonic()

    files: set[Path] = set()

    def add(items, problems, where):
        single = where.name == "mix_single"  # WHAM!: one speaker and the noise, by design
        r = check_items(
            items, rate=rate or rate_from_path(where), n_src=None if single else n_src,
            level=level, sum_tol_db=sum_tol_db,
        )
        r.problems[:0] = problems
        files.update(p for item in items for p in item.files)
        log(f"{where}: {len(items)} items, {r.n_files} files, {len(r.problems)} problems")
        report.extend(r, report.n_items)

    if layout in ("librimix", "wsj0mix", "wham"):
        lists = _librimix_lists if layout == "librimix" else _wsj0mix_lists
        for items, problems, where in lists(roots, splits, report.problems):
            add(items, problems, where)
    else:
        names = [n for s in (splits or []) for n in SPLIT_FOLDERS.get(s, (s,))]
        parts = [folder / n for n in names if (folder / n).is_dir()] if splits else [folder]
        for part in parts:
            paths = list(iter_audio(part))
            r = check_files(paths, rate=rate or rate_from_path(part), level=level)
            files.update(paths)
            log(f"{part}: {len(paths)} utterances, {len(r.problems)} problems")
            report.extend(r, report.n_items)
    report.n_files = len(files)
    report.seconds = time.monotonic() - t0
    return report


def _librimix_lists(roots: list[Path], splits: list[str] | None, missing: list[Problem]):
    """(items, problems, metadata CSV) of each LibriMix list asked for; a root with
    none adds a problem to ``missing``."""
    for root in roots:
        csvs = librimix.metadata_files(root)
        if splits:
            names = {librimix.split_name(s) for s in splits}
            csvs = [p for p in csvs if any(p.name.startswith(f"mixture_{s}_") for s in names)]
        if not csvs:
            missing.append(Problem(str(root / "metadata"), "no mixture_*.csv files to check"))
        for path in csvs:
            items, r = librimix.read_csv(path, root, None)
            yield items, r.problems, path


def _wsj0mix_lists(roots: list[Path], splits: list[str] | None, missing: list[Problem]):
    """(items, problems, mixture folder) of each wsj0-2mix / WHAM! split asked for; a
    split or mixture folder asked for and not there adds a problem to ``missing``."""
    for root in roots:
        names = [wsj0mix.split_name(s) for s in splits] if splits else list(wsj0mix.SPLITS)
        for name in names:
            split_dir = root / name
            if not split_dir.is_dir():
                if splits:
                    missing.append(Problem(str(split_dir), "split folder not found"))
                continue
            subs = [s for s in ("mix", "mix_clean", "mix_both", "mix_single") if (split_dir / s).is_dir()]
            if not subs:
                missing.append(Problem(str(split_dir), "no mixture folder (mix/, mix_clean/ or mix_both/)"))
            for sub in subs:
                noisy = sub in ("mix_both", "mix_single")
                items, problems = wsj0mix.list_items(split_dir, sub, None, noisy=noisy)
                if sub == "mix_single":  # WHAM!: the first speaker and the noise
                    items = [replace(it, sources=it.sources[:1]) for it in items]
                yield items, problems, split_dir / sub


def with_folder(cfg, folder: Path):
    """``cfg`` reading its evaluation data from a corpus folder of any known layout
    (``masksep eval --data`` and ``masksep analyze --data``)."""
    from masksep import config as config_mod

    layout, _ = detect_layout(Path(folder))
    if layout not in ("librimix", "wsj0mix", "wham"):
        raise UserError(f"{folder}: --data needs a LibriMix- or WSJ0-mix-layout folder, found {layout}")
    return config_mod.merge(cfg, {"data.kind": layout, "data.root": str(folder), "data.roots": None},
                            "--data")
