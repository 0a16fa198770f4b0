"""WSJ0-2mix / WSJ0-3mix (Hershey et al. 2016) and WHAM! (Wichern et al. 2019) folders.

The mixing scripts write, for ``2speakers/wav8k/min`` (also ``3speakers``,
``wav16k``, ``max``)::

    {tr,cv,tt}/mix/  s1/  s2/  [s3/]              WSJ0-2mix / 3mix
    {tr,cv,tt}/mix_clean/  mix_both/  s1/  s2/  noise/   WHAM! (wham/wav8k/min)

one wav per mixture, the same file name in every subfolder. ``data.root`` may
name that folder or one above it: ``{n}speakers/wav{k}k/{mode}`` (WSJ0-mix) and
``wav{k}k/{mode}`` are tried in turn. WHAM!'s ``sep_clean`` reads mix_clean,
``sep_noisy`` mix_both (the targets are the speakers, the noise only enters
the data check: mix_both = s1 + s2 + noise).
"""

from __future__ import annotations

from pathlib import Path

from masksep.data.problems import MixtureItem, Problem
from masksep.errors import UserError

SPLITS = ("tr", "cv", "tt")


def split_name(split: str) -> str:
    """masksep's train / valid / test -> tr / cv / tt (names pass through)."""
    return {"train": "tr", "valid": "cv", "test": "tt"}.get(split, split)


def mix_folder(kind: str, task: str) -> str:
    if kind == "wsj0mix":
        return "mix"
    return "mix_both" if task == "sep_noisy" else "mix_clean"


def _has_split(folder: Path) -> bool:
    return any((folder / s).is_dir() for s in SPLITS)


def resolve_root(root: str | Path, n_src: int, rate: int, mode: str = "min") -> Path:
    """The folder that holds tr/ cv/ tt/: ``root`` or a ``wav8k/min`` below it."""
    root = Path(root)
    if _has_split(root):
        return root
    k = f"wav{rate // 1000}k"
    for candidate in (root / f"{n_src}speakers" / k / mode, root / k / mode):
        if _has_split(candidate):
            return candidate
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found")
    raise UserError(
        f"{root}: not a WSJ0-mix / WHAM! folder (no tr/, cv/ or tt/ in it, nor in "
        f"{n_src}speakers/{k}/{mode}/ or {k}/{mode}/)"
    )


def list_items(
    split_dir: Path, mix_sub: str, n_src: int | None, noisy: bool = False
) -> tuple[list[MixtureItem], list[Problem]]:
    """One item per wav in ``split_dir/mix_sub``; sources ``s1..sC`` of the same name.

    ``n_src`` None: as many ``s<i>`` folders as there are. A source file that
    is missing becomes an item whose check reports it.
    """
    problems: list[Problem] = []
    mix_dir = split_dir / mix_sub
    if not mix_dir.is_dir():
        raise UserError(f"{mix_dir}: mixture folder not found")
    present = sorted(
        int(p.name[1:]) for p in split_dir.iterdir() if p.is_dir() and p.name[1:].isdigit() and p.name[0] == "s"
    )
    if n_src is None:
        n_src = len(present)
    if n_src < 1:
        problems.append(Problem(str(split_dir), "no source folders (s1/, s2/ ...)"))
        return [], problems
    missing = [f"s{i}" for i in range(1, n_src + 1) if i not in present]
    if missing:
        problems.append(Problem(str(split_dir), f"source folder(s) {', '.join(missing)} not found"))
        return [], problems
    if present and max(present) > n_src:
        problems.append(Problem(
            str(split_dir),
            f"holds s{max(present)}/ ({max(present)} speakers) but the model separates {n_src}",
        ))
        return [], problems
    if noisy and not (split_dir / "noise").is_dir():
        problems.append(Problem(str(split_dir / "noise"), "noise folder not found (needed by the check of mix_both)"))
        return [], problems
    items = []
    for mix in sorted(mix_dir.glob("*.wav")):
        if mix.name.startswith("."):
            continue  # a temporary file of an interrupted write
        items.append(MixtureItem(
            name=mix.stem,
            mix=mix,
            sources=tuple(split_dir / f"s{i}" / mix.name for i in range(1, n_src + 1)),
            noise=split_dir / "noise" / mix.name if noisy else None,
            origin=f"{split_dir.name}/{mix_sub}/{mix.name}",
        ))
    return items, problems
