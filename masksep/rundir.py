"""The names of every file in masksep's folders, in one place (issue 24, part 3).

Three kinds of folder, each written by one module and read by the others:

* a **run** (``masksep train --out``, and each trial of a sweep, in Tune's
  storage): written by train.py and sweep/trial.py; read by report/collect.py,
  analyze/, the CLI and a resumed trial::

      config.yaml  metrics.jsonl  summary.json  checkpoints/last.pt  checkpoints/best.pt
      searched.json  attempts.json  error.txt (Ray's, when the trial failed)
      eval/NAME/all_metrics.csv  eval/NAME/final_metrics.json  (masksep eval, evaluation.py)
      .masksep.lock (while masksep train runs in it)

* a **sweep** (``masksep sweep --out``): written by sweep/runner.py::

      sweep.json  spec.yaml  optuna.db  ray/NAME/ (Tune's experiment, a folder per
      trial, masksep-sweep.json)  orphaned/  wandb/  tuning/ and tuned.json (a tuned
      study, masksep/tuned.py)  .masksep.lock (while its driver runs)

* a **report** (the sweep folder again, or a committed results folder):
  written by report/, read back by report/ and the overview::

      trials.csv  epochs.csv  milestones.csv  study.json  summary.md  *.png
      analysis/analysis.json  analysis/summary.md (masksep analyze)

It imports only masksep.errors and masksep.files (and no torch): any layer may
use it. sweep.json is read and written here too, so that the report and
analyze read a sweep folder without importing the sweep package.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from masksep.errors import UserError
from masksep.files import atomic_write

# --------------------------------------------------------------------------- a run
CONFIG = "config.yaml"  # the resolved trial config
METRICS = "metrics.jsonl"  # a line per finished epoch
SUMMARY = "summary.json"  # at the end: the test metrics of the best weights
CHECKPOINTS = "checkpoints"
LAST = f"{CHECKPOINTS}/last.pt"  # every epoch: everything a resume needs
BEST = f"{CHECKPOINTS}/best.pt"  # the best weights with their config
SEARCHED = "searched.json"  # a sweep trial's searched values (a study adds its variant)
ATTEMPTS = "attempts.json"  # every start of a sweep trial
ERROR = "error.txt"  # Ray's, when the trial failed
EVAL_DIR = "eval"  # masksep eval of the run's checkpoint: a folder per data set and split
EVAL_ROWS = "all_metrics.csv"  # a row per mixture (Asteroid's name for it)
EVAL_SUMMARY = "final_metrics.json"  # the means and what was evaluated (Asteroid's name)

# --------------------------------------------------------------------------- a sweep
STATE = "sweep.json"  # what ran, where its Ray state lives, its status
SPEC = "spec.yaml"  # the spec, self-contained
OPTUNA_DB = "optuna.db"  # an export of the Optuna study, for optuna-dashboard
ORPHANED = "orphaned"  # trial folders a resume found but Tune's snapshot did not know
DATA_CACHE = "data-cache"  # in the experiment folder: the data its trials share
OWNER = "masksep-sweep.json"  # in the experiment folder: the uid of the sweep.json that owns it
LOCK = ".masksep.lock"  # a run or sweep folder's lock while a run uses it (masksep/locks.py)
TUNING = "tuning"  # a tuned study's searches, one sweep folder per variant
TUNED = "tuned.json"  # and the settings they chose

# --------------------------------------------------------------------------- a report
TRIALS = "trials.csv"
EPOCHS = "epochs.csv"
MILESTONES = "milestones.csv"  # a study's test scores at its budget milestones
STUDY = "study.json"  # the study block beside trials.csv, for a folder without sweep.json
REPORT = "summary.md"
ANALYSIS_DIR = "analysis"
ANALYSIS = f"{ANALYSIS_DIR}/analysis.json"  # masksep analyze's results, in a sweep folder


# --------------------------------------------------------------------------- summary.json's keys
COMPLEXITY_KEYS = ("params", "head_params", "macs_per_s", "head_macs_per_s")  # masksep.complexity
# What a finished trial's summary gives trials.csv beside its complexity (same order).
RESULT_KEYS = ("best_val_si_snri", "best_epoch", "test_si_snr", "test_si_snri", "test_sdri",
               "epochs", "train_steps", "train_audio_s", "wall_s", "seed")
# An og head trained with oracle grouping is also scored with a grouping fixed on
# validation (no references at test): in its summary and trials.csv, absent for others.
FIXED_KEYS = ("test_si_snri_fixed", "test_sdri_fixed")


def parts(name: str) -> tuple[str, ...]:
    """``"checkpoints/last.pt"`` -> ``("checkpoints", "last.pt")``, for stores that join parts."""
    return PurePosixPath(name).parts


class Store:
    """A folder of these files, local or in cloud storage, through pyarrow's
    filesystems: the one reader and writer of a trial's folder in Tune's storage
    (sweep/trial.py), of a sweep's experiment (report/collect.py) and of the
    folders a resume sets aside (sweep/runner.py). Names are ``/``-joined parts."""

    def __init__(self, filesystem, path: str):
        self.fs = filesystem
        self.path = path.rstrip("/")

    @classmethod
    def of_uri(cls, uri: str) -> Store:
        """A local folder or an s3:// / gs:// URI."""
        from pyarrow import fs

        if "://" in uri:
            return cls(*fs.FileSystem.from_uri(uri))
        return cls(fs.LocalFileSystem(), str(Path(uri).resolve()))

    def join(self, *names: str) -> str:
        return "/".join([self.path, *names])

    def listdir(self, *names: str) -> list[tuple[str, bool]]:
        """(name, is a folder) of each entry; [] when there is no such folder."""
        from pyarrow import fs

        try:
            infos = self.fs.get_file_info(fs.FileSelector(self.join(*names)))
        except (FileNotFoundError, OSError):
            return []
        return [(PurePosixPath(i.path).name, i.type == fs.FileType.Directory) for i in infos]

    def read_bytes(self, *names: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self.join(*names)) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def read_text(self, *names: str) -> str | None:
        data = self.read_bytes(*names)
        return None if data is None else data.decode("utf-8", errors="replace")

    def read_json(self, *names: str) -> Any:
        data = self.read_bytes(*names)
        try:
            return json.loads(data) if data else None
        except ValueError:
            return None

    def fetch(self, name: str, local: Path) -> Path | None:
        """Copy ``name`` to ``local``; None when the folder has no such file."""
        from pyarrow import fs

        if self.fs.get_file_info(self.join(name)).type != fs.FileType.File:
            return None
        local.parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open_input_stream(self.join(name)) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        return local

    def put_bytes(self, name: str, data: bytes) -> None:
        self._write(name, lambda f: f.write(data))

    def put_file(self, local: Path, name: str | None = None) -> None:
        def copy(f):
            with open(local, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        self._write(name or local.name, copy)

    def _write(self, name: str, write) -> None:
        # Beside, then moved: a resume (or the report) never reads half a file.
        target = self.join(name)
        parent, _, base = target.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{base}.tmp{os.getpid()}"
        try:
            with self.fs.open_output_stream(tmp) as f:
                write(f)
            self.fs.move(tmp, target)
        except BaseException:
            try:  # a full disk: the previous file stays, and no temp file beside it
                self.fs.delete_file(tmp)
            except (OSError, FileNotFoundError):
                pass
            raise

    def move_out(self, name: str, local: Path) -> None:
        """Move the folder ``name`` to the local folder ``local`` (a rename on one disk)."""
        from pyarrow import fs

        source = self.join(name)
        local.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(self.fs, fs.LocalFileSystem):
            shutil.move(source, local)
        else:
            fs.copy_files(source, str(local), source_filesystem=self.fs,
                          destination_filesystem=fs.LocalFileSystem())
            self.fs.delete_dir(source)


# --------------------------------------------------------------------------- sweep.json


def write_state(out: Path, state: dict[str, Any]) -> None:
    """OUT/sweep.json: what ran, where Ray keeps its experiment, whether the driver finished."""
    atomic_write(Path(out) / STATE, json.dumps(state, indent=2) + "\n")


def read_state(out: Path) -> dict[str, Any]:
    """sweep.json of ``out``; one UserError line when it is missing or unreadable."""
    path = Path(out) / STATE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{out}: no sweep here ({STATE} is missing)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable sweep state ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "name" not in state or "storage" not in state:
        raise UserError(f"{path}: not a masksep sweep state (no name or storage)")
    return state


def experiment_path(state: dict[str, Any]) -> str:
    """Ray Tune's experiment folder (a local path or a URI) of a sweep."""
    return f"{state['storage'].rstrip('/')}/{state['name']}"


# --------------------------------------------------------------------------- Tune's snapshot

TUNE_STATE_PREFIX = "experiment_state-"  # Tune's snapshot: experiment_state-<time>.json


def tune_trials(store: Store) -> dict[str, dict[str, Any]] | None:
    """Trial folder name -> {trial_id, status, retries, last_result} from the newest
    snapshot of Tune's experiment state in ``store``; None when there is none or it
    is unreadable.

    Read as plain JSON, never through Tune (ExperimentAnalysis, ResultGrid): Tune
    embeds objects in the snapshot as cloudpickle and unpickles them when it reads
    it, so a results folder copied from elsewhere (or a bucket others can write)
    would run code on the reader's machine. The fields read here are plain JSON
    strings and numbers; what Tune pickled stays an undecoded hex string."""
    names = sorted(n for n, is_dir in store.listdir()
                   if not is_dir and n.startswith(TUNE_STATE_PREFIX) and n.endswith(".json"))
    if not names:
        return None
    try:
        entries = json.loads(store.read_bytes(names[-1]) or b"")["trial_data"]
        trials = {}
        for entry in entries:
            trial, meta = (json.loads(part) for part in entry)
            last = meta.get("last_result")
            name = str(trial.get("relative_logdir") or f"trial_{trial['trial_id']}")
            trials[name] = {"trial_id": str(trial["trial_id"]), "status": str(trial.get("status", "")),
                            "retries": int(meta.get("num_failures") or 0),
                            "last_result": last if isinstance(last, dict) else {}}
    except (ValueError, TypeError, KeyError, AttributeError):  # being rewritten, or not Tune's
        return None
    return trials
