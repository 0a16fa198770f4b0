"""What ``masksep eval`` writes: a row per mixture and the means, as the field reads them.

Asteroid's ``eval.py`` writes ``all_metrics.csv`` (a row per mixture) and
``final_metrics.json`` (the means); masksep writes the same two files, into
``RUN/eval/NAME/`` when the checkpoint sits in a run folder (``RUN/checkpoints/``),
else where ``--out`` says, and the CSV alone wherever ``--csv`` says. Both are
written whole or not at all (a temp file, then a rename).

Columns, in this order, each present when computed: ``mixture_id`` (the file's
name in a corpus, the item's index in the synthetic set), ``si_snri``, ``sdri``,
``sir``, ``sar``, ``si_snr``, ``sdr``, ``pesq``, ``stoi``: dB but for PESQ
(MOS-LQO) and STOI (0..1), each the mean over the mixture's sources.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from masksep import rundir
from masksep.errors import UserError
from masksep.files import atomic_write

COLUMNS = ("si_snri", "sdri", "sir", "sar", "si_snr", "sdr", "pesq", "stoi")


def run_folder(checkpoint: Path) -> Path | None:
    """The run folder of ``RUN/checkpoints/NAME.pt`` (it holds config.yaml), else None."""
    checkpoint = Path(checkpoint)
    run = checkpoint.parent.parent
    if checkpoint.parent.name == rundir.CHECKPOINTS and (run / rundir.CONFIG).is_file():
        return run
    return None


def default_out(checkpoint: Path, split: str, data: Path | None) -> Path | None:
    """``RUN/eval/SPLIT`` (the checkpoint's own data) or ``RUN/eval/DATA-SPLIT`` (a
    corpus folder, named by its last three path parts); None outside a run folder."""
    run = run_folder(checkpoint)
    if run is None:
        return None
    return run / rundir.EVAL_DIR / set_name(split, data)


def set_name(split: str, data: Path | None) -> str:
    """``SPLIT`` (the checkpoint's own data) or ``DATA-SPLIT``, DATA the corpus
    folder's last three path parts (``kokoro-wav8k-min-test``)."""
    if data is None:
        return split
    return "-".join((*Path(data).resolve().parts[-3:], split))


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The metric columns the rows hold, in :data:`COLUMNS` order."""
    present = set().union(*rows) if rows else set()
    return [k for k in COLUMNS if k in present]


def mixture_id(row: dict[str, Any], index: int) -> str:
    return str(row.get("name", index))


def means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each metric over the mixtures it could be computed for, and
    ``KEY_missing`` (how many it could not: PESQ finds no speech in a mixture) where
    that is not zero; a metric with no value at all is None (JSON has no NaN)."""
    out: dict[str, Any] = {}
    for key in columns(rows):
        values = [r[key] for r in rows if not math.isnan(r[key])]
        out[key] = round(sum(values) / len(values), 4) if values else None
        if len(values) < len(rows):
            out[f"{key}_missing"] = len(rows) - len(values)
    return out


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """all_metrics.csv's text: a header and a row per mixture, 4 decimals, NaN as ``nan``."""
    keys = columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["mixture_id", *keys])
    for i, row in enumerate(rows):
        writer.writerow([mixture_id(row, i), *(f"{row[k]:.4f}" for k in keys)])
    return buffer.getvalue()


def write(rows: list[dict[str, Any]], summary: dict[str, Any], out: Path | None,
          csv_path: Path | None) -> list[Path]:
    """OUT/all_metrics.csv and OUT/final_metrics.json, and the CSV at ``csv_path``;
    returns the files written."""
    text = rows_csv(rows)
    written = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / rundir.EVAL_ROWS, text)
        atomic_write(out / rundir.EVAL_SUMMARY, json.dumps(summary, indent=2) + "\n")
        written += [out / rundir.EVAL_ROWS, out / rundir.EVAL_SUMMARY]
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(csv_path, text)
        written.append(csv_path)
    return written


# masksep eval passes each file through the model whole (the metrics are of the
# whole file), so its memory grows with the file: Conv-TasNet (paper config)
# took 25 MiB a second of 8 kHz audio, DPRNN 64 MiB, i.e. 3 and 8 GB at this
# limit. Longer files: masksep separate, which works in chunks.
EVAL_MAX_S = 120.0


def check_lengths(dataset, rate: int) -> None:
    """Refuse, before any is evaluated, an item longer than :data:`EVAL_MAX_S`."""
    limit = round(EVAL_MAX_S * rate)
    lengths = getattr(dataset, "lengths", None)
    if hasattr(dataset, "items") and lengths is not None:  # files (LibriMix, WSJ0-mix, WHAM!)
        long = ((str(item.mix), n) for item, n in zip(dataset.items, lengths, strict=True))
    elif hasattr(dataset, "pick") and lengths is not None:  # dynamic mixing: the shortest utterance
        long = ((dataset.item_name(i), min(lengths[j] for j in dataset.pick(i)))
                for i in range(len(dataset)))
    else:  # synthetic: one length for all
        long = [("data.eval_seconds", getattr(dataset, "n_samples", 0))]
    for name, n in long:
        if n > limit:
            raise UserError(
                f"{name}: {n / rate:.1f} s is longer than masksep eval takes ({EVAL_MAX_S:g} s: "
                "a file goes through the model whole, with memory growing with its length); "
                "cut it, or separate it in chunks with masksep separate")
