"""A full disk (issue 34, item 6), for real: a process whose files may not grow past
a size (RLIMIT_FSIZE, with SIGXFSZ ignored so that the write fails with EFBIG, as
on a full disk it fails with ENOSPC) writes a checkpoint, the data cache, a
report, a line of metrics.jsonl. Each failure keeps the previous file, leaves no
temp file, and ends in one line naming the path and the reason (exit 2); a
training run then resumes from its last whole checkpoint. The data cache alone
is not an error: one warning line, and the run keeps that epoch in memory. The fill point is the
limit itself: the first write past it, never a timer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from masksep.train import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from test_report import ROWS, write_trials  # noqa: E402
from test_train import TINY, write_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EFBIG = os.strerror(27)  # "File too large"

# Runs `masksep ARGS...` (or the code in MASKSEP_CODE) with files limited to LIMIT bytes.
LIMITED = """
import resource, signal, sys
limit = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
if sys.argv[2] == "-c":
    exec(sys.argv[3])
else:
    from masksep.cli import main
    sys.exit(main(sys.argv[2:]))
"""


def masksep(*args: str, limit: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    cmd = ([sys.executable, "-c", LIMITED, str(limit), *args] if limit is not None
           else [sys.executable, "-m", "masksep", *args])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("masksep: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Temp files and locks a failed write could leave behind."""
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".lock")]


def whole_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), text[-200:]
    return [json.loads(line) for line in text.splitlines()]


def test_a_checkpoint_that_cannot_be_written_keeps_the_last_whole_one_and_the_run_resumes(tmp_path):
    config = write_config(tmp_path / "tiny.yaml", TINY + ["train.epochs=1"])
    out = tmp_path / "run"
    first = masksep("train", "--config", str(config), "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    last, best = out / "checkpoints" / "last.pt", out / "checkpoints" / "best.pt"
    before = snapshot(out)
    # Room for config.yaml, metrics.jsonl and best.pt (the weights alone), not for
    # last.pt (weights, best weights and Adam's two moments): epoch 2's save fails there.
    limit = last.stat().st_size // 2
    assert best.stat().st_size < limit
    full = masksep("train", "--resume", "--set", "train.epochs=2", "--out", str(out), limit=limit)
    one_line(full, f"{last}: cannot be written (File too large); the previous file is kept")
    assert last.read_bytes() == before["checkpoints/last.pt"]
    assert load_checkpoint(last, resume=True)["epoch"] == 1
    assert [m["epoch"] for m in whole_lines(out / "metrics.jsonl")] == [1]
    assert (out / "summary.json").read_bytes() == before["summary.json"]
    assert leftovers(out) == []

    again = masksep("train", "--resume", "--set", "train.epochs=2", "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert load_checkpoint(last, resume=True)["epoch"] == 2
    assert [m["epoch"] for m in whole_lines(out / "metrics.jsonl")] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_a_data_cache_file_that_cannot_be_written_is_one_warning_and_the_run_goes_on(tmp_path):
    # The cache is an optimisation: a full disk there is not a failed run (the converged
    # study lost 9 trials to it). An epoch of the tiny training data is 16 items x 2 sources
    # x 0.25 s x 8 kHz of float32 (256 KiB); its validation and test files (128 KiB) and
    # last.pt (about 130 KiB) fit under the limit, so only the training epoch cannot be written.
    config = write_config(tmp_path / "tiny.yaml", TINY + ["train.epochs=1"])
    cache = tmp_path / "cache"
    full = masksep("train", "--config", str(config), "--out", str(tmp_path / "run"),
                   "--data-cache", str(cache), limit=200 << 10)
    assert full.returncode == 0, full.stderr[-3000:]
    warnings = [line for line in full.stderr.splitlines() if line.startswith("masksep: data cache")]
    assert len(warnings) == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert f"{cache}/train-e1-" in warnings[0] and "cannot be written (File too large)" in warnings[0]
    assert "in memory" in warnings[0]
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["test", "valid"]
    assert leftovers(tmp_path) == []
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data_cache"] == {"made": 2, "read": 0, "evicted": 0, "in_memory": 1}

    # the epoch kept in memory is the same data: the same run as one with no cache at all
    plain = masksep("train", "--config", str(config), "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr[-3000:]
    fresh = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert (summary["test_si_snri"], summary["test_sdri"]) == (fresh["test_si_snri"], fresh["test_sdri"])


def test_a_report_file_that_cannot_be_written_keeps_the_previous_one(tmp_path):
    write_trials(tmp_path / "trials.csv")
    assert masksep("report", str(tmp_path)).returncode == 0
    before = snapshot(tmp_path)
    texts = [len(before[name]) for name in ("pareto.csv", "summary.md")]
    limit = max(texts) + 1024  # the tables and summary.md fit, the first plot does not
    assert len(before["tradeoff.png"]) > limit
    # other numbers, so that every file of the report would change
    write_trials(tmp_path / "trials.csv", [{**r, "test_si_snri": (r["test_si_snri"] or 0) + 0.25}
                                           for r in ROWS])
    full = masksep("report", str(tmp_path), limit=limit)
    one_line(full, f"{tmp_path / 'tradeoff.png'}: cannot be written (File too large); "
                   "the previous file is kept")
    assert (tmp_path / "tradeoff.png").read_bytes() == before["tradeoff.png"]
    assert (tmp_path / "summary.md").read_bytes() != before["summary.md"]  # written before it, whole
    assert (tmp_path / "summary.md").read_text().startswith("# Sweep report")
    assert leftovers(tmp_path) == []


APPEND = """
from pathlib import Path
from masksep.errors import UserError
from masksep.files import append_line, atomic_write
path, other = Path(sys.argv[4]), Path(sys.argv[5])
for write in (lambda: append_line(path, '{"epoch": 3, "pad": "' + 'x' * 64 + '"}'),
              lambda: atomic_write(other, 'y' * 200)):
    try:
        write()
    except UserError as exc:
        print(exc)
"""


def test_metrics_jsonl_gets_whole_lines_and_atomic_write_leaves_no_temp(tmp_path):
    path, other = tmp_path / "metrics.jsonl", tmp_path / "config.yaml"
    lines = ['{"epoch": 1}\n', '{"epoch": 2}\n']
    path.write_text("".join(lines))
    other.write_text("old\n")
    limit = len("".join(lines)) + 10  # part of the next line would fit
    proc = masksep("-c", APPEND, str(path), str(other), limit=limit)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"{path}: cannot be written (File too large); the previous file is kept",
        f"{other}: cannot be written (File too large); the previous file is kept"]
    assert path.read_text() == "".join(lines)  # not a byte of the third line
    assert other.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "metrics.jsonl"]


@pytest.mark.parametrize("data", ["text", b"bytes"])
def test_atomic_write_replaces_whole_and_syncs(tmp_path, data):
    from masksep.files import atomic_write

    target = tmp_path / "f"
    target.write_text("old")
    atomic_write(target, data)
    assert target.read_bytes() == (data if isinstance(data, bytes) else data.encode())
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_a_separated_file_that_cannot_be_written_is_one_line_and_no_temp(tmp_path):
    import numpy as np
    import soundfile as sf
    import tiny

    tiny.save_checkpoint(tmp_path / "model.pt")
    wav = tmp_path / "in.wav"
    sf.write(str(wav), np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 8000)
    out = tmp_path / "out"
    out.mkdir()
    # 1 s of 32-bit float at 8 kHz is 32 KB an output; the chunks are written as they come
    full = masksep("separate", "--checkpoint", str(tmp_path / "model.pt"), str(wav), "--out-dir",
                   str(out), "--chunk-s", "0.5", "--overlap-s", "0.1", limit=16 << 10)
    one_line(full, f"{out / 'in_s1.wav'}: cannot be written (File too large)")
    assert list(out.iterdir()) == []


STORE = """
from pathlib import Path
from masksep.rundir import Store
store = Store.of_uri(sys.argv[4])
try:
    store.put_bytes("checkpoints/last.pt", b"x" * 100000)
except OSError as exc:
    print(type(exc).__name__)
"""


def test_a_trial_folder_write_in_storage_leaves_no_temp(tmp_path):
    folder = tmp_path / "trial"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pt").write_bytes(b"old")
    proc = masksep("-c", STORE, str(folder), limit=1000)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr
    assert (folder / "checkpoints" / "last.pt").read_bytes() == b"old"
    assert [p.name for p in (folder / "checkpoints").iterdir()] == ["last.pt"]
