"""Items of a data set, the problems a check finds in them, and the check itself:
every problem of a data set, listed before any training starts.

A data set is a list of :class:`MixtureItem` (a mixture file, its source files
and, for noisy mixtures, the noise file) or of single utterances (dynamic
mixing). :func:`check_items` and :func:`check_files` return one
:class:`Problem` per fault:

- a path that does not exist (e.g. listed in a LibriMix CSV);
- an unreadable or corrupt file, an empty file or one of a single sample;
- NaN or Inf samples (only float files can hold them, so PCM files are not
  scanned for this);
- a sample rate other than the expected one, more than one channel;
- mixture and source files of different lengths (and a CSV ``length`` that
  disagrees with the file);
- a mixture that is not the sum of its sources (plus the noise in a noisy
  mixture) within :data:`SUM_TOL_DB`;
- the same mixture listed twice: a mixture ID or a mixture file an earlier item
  has, or a file that is one item's mixture and another's source
  (:func:`duplicates`).

Header checks read only the file headers (``soundfile.info``); ``level="full"``
also reads the samples of every item once (NaN/Inf and the sum check);
``level="auto"`` is full up to :data:`AUTO_FULL_HOURS` of mixtures and header
checks above (a training set of a large corpus: reading it all would take
minutes at every start), and says so. Items are checked in a thread pool:
libsndfile releases the GIL while it reads.

This module is the bottom layer, so no data module imports one that imports
it: the readers (:mod:`~masksep.data.librimix`, :mod:`~masksep.data.wsj0mix`)
list items, the data sets (:mod:`~masksep.data.items`,
:mod:`~masksep.data.dynamic`) check them when opened, and
:mod:`masksep.data.checks` checks whole folders above both (``masksep data check``).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from masksep.data import audio
from masksep.errors import EXIT_DATA_PROBLEMS, UserError

# A clean mixture must equal the sum of its sources to within this SNR (dB):
# 16-bit files quantized one by one stay above ~60 dB for speech levels, while
# a wrong source, gain or alignment falls far below 20 dB.
SUM_TOL_DB = 30.0
MAX_LISTED = 3  # problems quoted in the one-line error
MIN_FRAMES = 2  # the fewest samples SI-SNR is defined on (the mean of one is the sample)
# level="auto": read every sample of data sets up to this many hours of mixtures
# (about 20 s on two busy laptop cores; WSJ0-2mix tt and Libri2Mix test are ~5 h).
AUTO_FULL_HOURS = 10.0


@dataclass(frozen=True)
class MixtureItem:
    """One mixture on disk: ``mix`` = sum(``sources``) (+ ``noise`` when set)."""

    name: str
    mix: Path
    sources: tuple[Path, ...]
    noise: Path | None = None  # noisy mixtures: the noise that was added
    length: int | None = None  # the length its metadata states, if any
    origin: str = ""  # where the item was listed, e.g. "mixture_test_mix_clean.csv row 3"

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.mix, *self.sources, *((self.noise,) if self.noise else ()))


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    item: int | None = None  # index of the item it spoils; None = the whole data set

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    n_files: int = 0
    n_items: int = 0
    seconds: float = 0.0
    infos: dict[Path, audio.AudioInfo] = field(default_factory=dict)
    level: str = "full"  # the checks done: full or headers
    hours: float = 0.0  # of mixtures (utterances), from the headers

    @property
    def bad_items(self) -> set[int]:
        return {p.item for p in self.problems if p.item is not None}

    @property
    def fatal(self) -> list[Problem]:
        """Problems of the data set as a whole, which no skipping can cure."""
        return [p for p in self.problems if p.item is None]

    def extend(self, other: CheckReport, item_offset: int = 0) -> None:
        self.problems += [
            Problem(p.path, p.message, None if p.item is None else p.item + item_offset)
            for p in other.problems
        ]
        self.n_files += other.n_files
        self.n_items += other.n_items
        self.seconds += other.seconds
        self.infos.update(other.infos)

    def summary(self) -> str:
        n = len(self.problems)
        bad = len(self.bad_items)
        what = f"{n} problem{'s' if n != 1 else ''}" if n else "no problems"
        where = f" in {bad} of {self.n_items} items" if bad else ""
        return (
            f"checked {self.n_files} files in {self.n_items} items in {self.seconds:.1f} s: "
            f"{what}{where}"
        )


class DataCheckError(UserError):
    """A data set with problems; ``problems`` holds the whole list. Its exit code
    is the data check's, not bad input's: the input was read, and found wanting."""

    exit_code = EXIT_DATA_PROBLEMS

    def __init__(self, where: str, report: CheckReport, folder: str | None = None):
        self.problems = list(report.problems)
        quoted = "; ".join(str(p) for p in self.problems[:MAX_LISTED])
        more = f"; and {len(self.problems) - MAX_LISTED} more" if len(self.problems) > MAX_LISTED else ""
        hint = f"run `masksep data check {folder or where}` for the whole list"
        if report.bad_items and not report.fatal:
            hint += ", or train with --skip-bad (data.skip_bad=true) to leave those items out"
        if any(p.message.startswith("sample rate is") for p in self.problems):
            hint += "; data.resample=true resamples files at another rate"
        super().__init__(
            f"{where}: {len(self.problems)} data problem(s) in {len(report.bad_items)} of "
            f"{report.n_items} items: {quoted}{more}; {hint}"
        )


def _workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(2, min(8, 2 * n))  # reads wait on the disk as much as on the CPU


class _FileCheck:
    """Header checks of each file, done once however many items share it."""

    def __init__(self, rate: int | None, allow_resample: bool):
        self.rate = rate
        self.allow_resample = allow_resample
        self.infos: dict[Path, audio.AudioInfo] = {}
        self.errors: dict[Path, list[str]] = {}

    def header(self, path: Path) -> list[str]:
        if path in self.errors:
            return self.errors[path]
        msgs: list[str] = []
        if path not in self.infos and not path.is_file():
            msgs.append("file not found")
        else:
            try:
                # read once: the rate-finding pass of check_items may have read it
                i = self.infos.get(path) or audio.info(path)
            except UserError as exc:
                msgs.append(str(exc).split(": ", 1)[-1])
            else:
                self.infos[path] = i
                if i.frames == 0:
                    msgs.append("empty file (0 samples)")
                elif i.frames < MIN_FRAMES:
                    msgs.append(f"has {i.frames} sample: too short to separate and score "
                                "(SI-SNR removes the mean, and of one sample nothing is left)")
                if i.channels != 1:
                    msgs.append(f"has {i.channels} channels, expected 1 (mono)")
                if self.rate and i.samplerate != self.rate and not self.allow_resample:
                    msgs.append(f"sample rate is {i.samplerate} Hz, expected {self.rate} Hz")
        self.errors[path] = msgs
        return msgs


def _finite_problem(x: np.ndarray, rate: int) -> str | None:
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    first = int(np.argmax(bad))
    return f"{int(bad.sum())} NaN/Inf samples (the first at {first / rate:.3f} s)"


def _check_item(
    index: int, item: MixtureItem, fc: _FileCheck, level: str, sum_tol_db: float
) -> list[Problem]:
    out: list[Problem] = []
    good: list[Path] = []  # files whose header is fine
    for path in item.files:
        msgs = fc.header(path)
        for msg in msgs:
            where = f" (listed in {item.origin})" if item.origin and msg == "file not found" else ""
            out.append(Problem(str(path), msg + where, index))
        if not msgs:
            good.append(path)
    # lengths against the mixture's, as durations at its rate (rates may differ under resampling)
    mix_info = fc.infos.get(item.mix) if item.mix in good else None
    if mix_info is not None:
        for path in good[1:]:
            i = fc.infos[path]
            frames = audio.length_at(i, mix_info.samplerate)  # as the readers resample it
            if frames != mix_info.frames:
                out.append(Problem(
                    str(path),
                    f"has {frames} samples but its mixture {item.mix.name} has {mix_info.frames}",
                    index,
                ))
        if item.length is not None and item.length != mix_info.frames:
            out.append(Problem(
                str(item.mix),
                f"has {mix_info.frames} samples but {item.origin or 'its metadata'} says length {item.length}",
                index,
            ))
    if level != "full":
        return out
    # Full check: read every file with a sound header once; the sum only if all are sound.
    sound = not out
    data = []
    for path in good:
        i = fc.infos[path]
        if not (sound or i.can_hold_nan):
            continue  # nothing more to learn from this file
        try:
            x, rate = audio.read(path)
        except UserError as exc:
            out.append(Problem(str(path), str(exc).split(": ", 1)[-1], index))
            sound = False
            continue
        x = x[0]
        if i.can_hold_nan:
            msg = _finite_problem(x, rate)
            if msg:
                out.append(Problem(str(path), msg, index))
                sound = False
                continue
        if sound:
            if rate != mix_info.samplerate:
                x = audio.resample(x, rate, mix_info.samplerate)[: mix_info.frames]
            data.append(x.astype(np.float64))
    if not sound or not item.sources:
        return out
    mix = data[0]
    residual = mix - np.sum(data[1:], axis=0)
    # einsum, not np.dot: OpenBLAS's threaded dot took 8 ms for 40k samples on a busy machine
    e_res = float(np.einsum("i,i->", residual, residual))
    e_mix = float(np.einsum("i,i->", mix, mix))
    floor = 1e-10 * mix.size  # below 16-bit quantization: silence on both sides
    if e_res > floor:
        snr = 10 * np.log10(max(e_mix, 1e-30) / e_res)
        if snr < sum_tol_db:
            parts = "sources" + (" and noise" if item.noise else "")
            out.append(Problem(
                str(item.mix),
                f"is not the sum of its {parts}: mixture-to-residual ratio {snr:.1f} dB "
                f"< {sum_tol_db:g} dB",
                index,
            ))
    return out


def check_items(
    items: list[MixtureItem],
    *,
    rate: int | None = None,
    n_src: int | None = None,
    level: str = "full",  # full | headers | auto
    allow_resample: bool = False,
    sum_tol_db: float = SUM_TOL_DB,
) -> CheckReport:
    """Check every item; ``rate`` None takes the most common rate among the files."""
    t0 = time.monotonic()
    fc = _FileCheck(rate, allow_resample)
    if rate is None:
        with ThreadPoolExecutor(_workers()) as pool:
            list(pool.map(fc.header, {p for item in items for p in item.files}))
        rates = Counter(i.samplerate for i in fc.infos.values())
        fc.rate = rates.most_common(1)[0][0] if rates else None
        fc.errors.clear()
    report = CheckReport(n_items=len(items))
    report.problems += duplicates(items)
    for index, item in enumerate(items):
        if n_src is not None and len(item.sources) != n_src:
            report.problems.append(Problem(
                str(item.mix), f"has {len(item.sources)} sources, expected {n_src}", index
            ))
    # Headers first, each file once however many items share it.
    unique = list(dict.fromkeys(p for item in items for p in item.files))
    with ThreadPoolExecutor(_workers()) as pool:
        list(pool.map(fc.header, unique))  # results land in fc.infos and fc.errors
        hours = sum(fc.infos[it.mix].seconds for it in items if it.mix in fc.infos) / 3600
        if level == "auto":
            level = "full" if hours <= AUTO_FULL_HOURS else "headers"
        results = pool.map(
            lambda pair: _check_item(pair[0], pair[1], fc, level, sum_tol_db), enumerate(items)
        )
        for problems in results:
            report.problems += problems
    report.n_files = len(unique)
    report.infos = dict(fc.infos)
    report.level = level
    report.hours = hours
    report.seconds = time.monotonic() - t0
    return report


def duplicates(items: list[MixtureItem]) -> list[Problem]:
    """The same mixture listed twice in one list: an item whose mixture ID or mixture
    file an earlier item has, or one of whose files is another item's mixture (or
    whose sources name one file twice). Each is a problem of the later item, so
    ``skip_bad`` keeps the first. Paths compare resolved (a symbolic link to a file is
    that file, as in a wsj0-2mix copy made of links); a source shared by two mixtures
    is no problem (a corpus may mix one utterance file into several mixtures). Single
    utterances (no sources) are not mixtures: their names may repeat across speakers."""
    out: list[Problem] = []
    ids: dict[str, int] = {}
    mixtures: dict[str, int] = {}  # resolved mixture path -> first item
    sources: dict[str, int] = {}  # resolved source path -> first item

    def where(i: int) -> str:
        return items[i].origin or f"item {i + 1}"

    for index, item in enumerate(items):
        if not item.sources:
            continue
        mix = os.path.realpath(item.mix)
        srcs = [os.path.realpath(p) for p in item.sources]
        if item.name in ids:
            out.append(Problem(str(item.mix), f"repeats mixture ID {item.name!r} ({where(index)}; "
                               f"first {where(ids[item.name])})", index))
        elif mix in mixtures:
            out.append(Problem(str(item.mix), f"is listed again ({where(index)}; first "
                               f"{where(mixtures[mix])})", index))
        elif mix in sources:
            out.append(Problem(str(item.mix), f"is a mixture here ({where(index)}) and a source "
                               f"in {where(sources[mix])}", index))
        elif any(s in mixtures for s in srcs):
            path, s = next((p, s) for p, s in zip(item.sources, srcs, strict=True) if s in mixtures)
            out.append(Problem(str(path), f"is a source here ({where(index)}) and the mixture in "
                               f"{where(mixtures[s])}", index))
        elif len(set(srcs)) < len(srcs) or mix in srcs:
            out.append(Problem(str(item.mix), f"names one file twice among its mixture and "
                               f"sources ({where(index)})", index))
        ids.setdefault(item.name, index)
        mixtures.setdefault(mix, index)
        for s in srcs:
            sources.setdefault(s, index)
    return out


def check_files(
    paths: list[Path],
    *,
    rate: int | None = None,
    level: str = "full",
    allow_resample: bool = False,
) -> CheckReport:
    """Check single-speaker utterances (dynamic mixing): each file is an item."""
    items = [MixtureItem(p.stem, p, ()) for p in paths]
    return check_items(items, rate=rate, level=level, allow_resample=allow_resample)


def settle(
    report: CheckReport, where: str, skip_bad: bool, folder: str | None = None
) -> set[int]:
    """What a data set does with its check: raise on problems, or (``skip_bad``)
    return the indices of the items to leave out, saying how many on stderr."""
    if report.level == "headers":
        print(
            f"masksep: data: {where}: {report.hours:.1f} h of audio: checked the file headers "
            "only (data.check=full also reads every sample; a bad sample found in training is "
            "one clear error, or a skipped item with data.skip_bad)",
            file=sys.stderr,
        )
    if not report.problems:
        return set()
    if report.fatal or not skip_bad:
        raise DataCheckError(where, report, folder)
    bad = report.bad_items
    total = report.n_items
    print(
        f"masksep: data: {where}: skipping {len(bad)} of {total} items with problems "
        f"(--skip-bad); first: {report.problems[0]}",
        file=sys.stderr,
    )
    if len(bad) >= total:
        raise DataCheckError(where, report, folder)
    return bad


def iter_audio(folder: Path) -> Iterable[Path]:
    """Audio files under ``folder``, recursively, in a stable order."""
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in audio.AUDIO_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
