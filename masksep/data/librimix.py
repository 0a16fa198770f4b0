"""LibriMix (Cosentino et al. 2020) in its metadata-CSV layout.

LibriMix's generator writes, for ``Libri2Mix/wav8k/min`` (also ``wav16k``,
``max``)::

    metadata/mixture_{split}_mix_clean.csv   mixture_ID, mixture_path,
                                             source_1_path, source_2_path, length
    metadata/mixture_{split}_mix_both.csv    ... and noise_path
    {split}/mix_clean/ mix_both/ s1/ s2/ noise/   <mixture_ID>.wav

with ``split`` one of train-360, train-100, dev, test. ``data.root`` may name
that folder or the corpus folder above it (``Libri2Mix``: then
``wav{rate/1000}k/{mode}`` is appended). The CSVs hold absolute paths of the
machine that generated the corpus; a path that does not exist as written is
looked up as ``root/<split>/<subfolder>/<file>`` (its last three parts), so a
corpus copied elsewhere still reads. Relative paths are taken from the root.

``task`` sep_clean reads ``mix_clean``; sep_noisy reads ``mix_both`` (the
targets are still the speakers).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from masksep.data.problems import CheckReport, MixtureItem, Problem
from masksep.errors import UserError

SPLITS = ("train-360", "train-100", "dev", "test")
MIX_FOLDER = {"sep_clean": "mix_clean", "sep_noisy": "mix_both"}
_SOURCE_COL = re.compile(r"^source_(\d+)_path$")


def split_name(split: str, train_subset: str = "train-360") -> str:
    """masksep's train / valid / test -> LibriMix's folder names (names pass through)."""
    return {"train": train_subset, "valid": "dev", "test": "test"}.get(split, split)


def resolve_root(root: str | Path, rate: int, mode: str = "min") -> Path:
    """The folder that holds ``metadata/``: ``root`` itself or ``root/wav8k/min``."""
    root = Path(root)
    if (root / "metadata").is_dir():
        return root
    if rate % 1000 == 0:
        candidate = root / f"wav{rate // 1000}k" / mode
        if (candidate / "metadata").is_dir():
            return candidate
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found")
    raise UserError(
        f"{root}: not a LibriMix folder (no metadata/ in it, nor in wav{rate // 1000}k/{mode}/)"
    )


def csv_path(root: Path, split: str, task: str) -> Path:
    return root / "metadata" / f"mixture_{split}_{MIX_FOLDER[task]}.csv"


def metadata_files(root: Path) -> list[Path]:
    """Every mixture CSV of a LibriMix folder (the metrics_*.csv files are not lists)."""
    return sorted((root / "metadata").glob("mixture_*.csv"))


def _locate(raw: str, root: Path) -> Path:
    p = Path(raw)
    if not p.is_absolute():
        p = root / p
    if p.exists():
        return p
    moved = root.joinpath(*Path(raw).parts[-3:])
    return moved if moved.exists() else p


def _length(text: str) -> int | None:
    """A CSV's ``length`` cell as a sample count; None for anything else (a word,
    inf, NaN, a negative or fractional number)."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0 or not value.is_integer():
        return None
    return int(value)


def read_csv(path: Path, root: Path, n_src: int | None = None) -> tuple[list[MixtureItem], CheckReport]:
    """The items one LibriMix CSV lists, and the problems of the CSV itself
    (missing file or column, a row that is not a row)."""
    report = CheckReport()
    if not path.is_file():
        report.problems.append(Problem(str(path), "metadata CSV not found"))
        return [], report
    try:
        # surrogateescape: a file name that is not UTF-8 comes back as its own bytes
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        report.problems.append(Problem(str(path), f"cannot be read as CSV ({exc.__class__.__name__})"))
        return [], report
    if not rows:
        report.problems.append(Problem(str(path), "empty CSV (no header row)"))
        return [], report
    header = [h.strip() for h in rows[0]]
    col = {h: i for i, h in enumerate(header)}
    sources = sorted((int(m.group(1)), h) for h in header if (m := _SOURCE_COL.match(h)))
    missing = [c for c in ("mixture_ID", "mixture_path") if c not in col]
    if not sources:
        missing.append("source_1_path")
    if n_src is not None and len(sources) < n_src:
        missing += [f"source_{i}_path" for i in range(len(sources) + 1, n_src + 1)]
    if missing:
        report.problems.append(Problem(str(path), f"missing column(s) {', '.join(missing)}"))
        return [], report
    if n_src is not None and len(sources) > n_src:
        report.problems.append(Problem(
            str(path), f"lists {len(sources)} sources per mixture but the model separates {n_src}"
        ))
        return [], report
    items = []
    for r, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path.name} line {r}"
        if len(row) != len(header):
            report.problems.append(Problem(
                str(path), f"line {r} has {len(row)} fields, the header {len(header)}"
            ))
            continue
        length = None
        if "length" in col and row[col["length"]].strip():
            length = _length(row[col["length"]])
            if length is None:
                report.problems.append(Problem(
                    str(path), f"line {r}: length {row[col['length']]!r} is not a sample count "
                               "(a whole number >= 0)"))
                continue
        noise = row[col["noise_path"]].strip() if "noise_path" in col else ""
        items.append(MixtureItem(
            name=row[col["mixture_ID"]].strip(),
            mix=_locate(row[col["mixture_path"]].strip(), root),
            sources=tuple(_locate(row[i].strip(), root) for i in (col[h] for _, h in sources)),
            noise=_locate(noise, root) if noise else None,
            length=length,
            origin=where,
        ))
    return items, report


def load_items(
    root: Path, split: str, task: str, n_src: int
) -> tuple[list[MixtureItem], list[Problem]]:
    """Items of one split and the problems of its CSV; no CSV at all is a UserError."""
    path = csv_path(root, split, task)
    if not path.is_file():
        have = ", ".join(p.name for p in metadata_files(root)) or "none"
        raise UserError(
            f"{path}: metadata CSV not found (split {split!r}, task {task}; CSVs there: {have})"
        )
    items, report = read_csv(path, root, n_src)
    return items, report.problems
