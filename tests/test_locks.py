"""Two runs on one folder (issue 34, item 3): one exclusive lock per output folder.

The holders are real processes. A child takes the lock, says so on stdout and
holds it until the test closes its stdin (or kills it): every step waits on a
line or an exit, never on a sleep.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from masksep import locks
from masksep.cli import main

ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import os, sys
from masksep import locks
lock, command = sys.argv[1], sys.argv[2]
if len(sys.argv) > 3:
    sys.stdin.readline()  # "go": every contender tries at once
try:
    token = locks.acquire(lock, command, lock)
except locks.FolderBusy:
    print("busy", flush=True)
    sys.exit(3)
print("held", os.getpid(), flush=True)
sys.stdin.read()  # held until the test closes stdin
locks.release(lock, token)
"""


class Holder:
    """A child process that holds (or tries to hold) the lock file ``lock``."""

    def __init__(self, lock: Path, command: str, wait_for_go: bool = False):
        args = [sys.executable, "-c", HOLDER, str(lock), command] + (["go"] if wait_for_go else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=ROOT)
        self.pid = self.proc.pid

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def answer(self) -> str:
        line = self.proc.stdout.readline()
        assert line, f"the holder ended first (exit {self.proc.wait()})"
        return line.split()[0]

    def held(self) -> Holder:
        assert self.answer() == "held"
        return self

    def release(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=60)
        self.proc.stdin.close()
        self.proc.stdout.close()


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_second_run_on_a_held_folder_says_who_holds_it_and_exits_2(tmp_path, spec_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = Holder(out / locks.LOCK_NAME, "masksep sweep s").held()
    (out / "sweep.json").write_text(json.dumps(  # the live driver's sweep, as --resume finds it
        {"name": "s", "uid": "1", "storage": str(out / "ray"), "status": "running", "pid": holder.pid}))
    before = sorted(p.name for p in out.iterdir())
    try:
        who = f"masksep sweep s (pid {holder.pid} on {socket.gethostname()}"
        for argv in (["sweep", str(spec_path), "--out", str(out)],
                     ["sweep", str(spec_path), "--out", str(out), "--resume"],
                     ["train", "--out", str(out)]):
            assert main(argv) == 2, argv
            err = one_line(capsys)
            assert f"{out}: in use by {who}" in err and "wait for it to end" in err, err
        with pytest.raises(locks.FolderBusy, match=f"pid {holder.pid}"):
            locks.acquire(out / locks.LOCK_NAME, "test", str(out))
        assert sorted(p.name for p in out.iterdir()) == before  # nothing written beside it
    finally:
        assert holder.release() == 0
    assert not (out / locks.LOCK_NAME).exists()  # released whole
    with locks.hold_folder(out, "test"):
        assert json.loads((out / locks.LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    lock = tmp_path / locks.LOCK_NAME
    holder = Holder(lock, "masksep train").held()
    holder.kill()
    assert json.loads(lock.read_text())["pid"] == holder.pid  # a kill leaves the file behind
    with locks.hold_folder(tmp_path, "test"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_a_reused_pid_is_not_a_live_holder_but_another_hosts_holder_is_left_alone(tmp_path):
    lock = tmp_path / locks.LOCK_NAME
    # Our own pid, but a process started at another time: the pid was reused.
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "1",
                                "command": "masksep train"}))
    with locks.hold_folder(tmp_path, "test"):
        assert json.loads(lock.read_text())["command"] == "test"
    lock.write_text(json.dumps({"host": "elsewhere.example", "pid": 1, "command": "masksep train"}))
    with pytest.raises(locks.FolderBusy) as caught:
        locks.acquire(lock, "test", str(tmp_path))
    assert "pid 1 on elsewhere.example" in str(caught.value)
    assert f"if that run is over, remove {lock}" in str(caught.value)
    lock.write_text("")  # a lock being written this instant (or a crash between create and write)
    with pytest.raises(locks.FolderBusy, match="being written or unreadable"):
        locks.acquire(lock, "test", str(tmp_path))


def test_of_several_runs_that_find_one_dead_holder_exactly_one_takes_over(tmp_path):
    lock = tmp_path / locks.LOCK_NAME
    dead = Holder(lock, "masksep train").held()
    dead.kill()
    contenders = [Holder(lock, "masksep train", wait_for_go=True) for _ in range(4)]
    for c in contenders:
        c.go()
    answers = [c.answer() for c in contenders]
    try:
        assert sorted(answers) == ["busy", "busy", "busy", "held"], answers
        winner = contenders[answers.index("held")]
        assert json.loads(lock.read_text())["pid"] == winner.pid
    finally:
        codes = [c.release() for c in contenders]
    assert sorted(codes) == [0, 3, 3, 3]
    assert not lock.exists()


def test_the_lock_is_reentrant_in_one_process_whatever_path_reaches_the_folder(tmp_path):
    real = tmp_path / "real"
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    with locks.hold_folder(real, "masksep sweep s"):
        with locks.hold_folder(tmp_path / "link", "masksep sweep s"):  # the sweep runner, inside the CLI
            pass
        assert (real / locks.LOCK_NAME).exists()  # the inner hold did not release the outer one
        holder = Holder(tmp_path / "link" / locks.LOCK_NAME, "other")
        assert holder.answer() == "busy" and holder.proc.wait(timeout=60) == 3
    assert not (real / locks.LOCK_NAME).exists()


def test_a_refused_run_leaves_no_folder_behind(tmp_path, spec_path, capsys):
    out = tmp_path / "a" / "b" / "run"
    assert main(["train", "--out", str(out), "--resume"]) == 2  # nothing to resume
    assert "last.pt" in one_line(capsys)
    assert not (tmp_path / "a").exists()


# --------------------------------------------------------------------------- masksep data speech


def test_a_second_corpus_run_is_refused_and_a_killed_runs_temp_folder_is_cleaned(tmp_path, capsys):
    pytest.importorskip("espeakng_loader")  # the speech extra
    from masksep.data import speech

    out = tmp_path / "corpus"
    lock = tmp_path / ".corpus.lock"
    spec = speech.SpeechSpec(rates=(8000,), modes=("min",), languages=("en-US",), variants=("f1", "m1"),
                             speakers={"train": 2, "dev": 2, "test": 2},
                             utterances={"train": 1, "dev": 1, "test": 1},
                             mixtures={"train": 1, "dev": 1, "test": 1}, seed=0)
    holder = Holder(lock, "masksep data speech").held()
    try:
        with pytest.raises(locks.FolderBusy, match=f"{out}: in use by masksep data speech "
                                                  f"\\(pid {holder.pid} on "):
            speech.make_corpus(out, spec, workers=1, log=lambda line: None)
        small = ["--languages", "en-US", "--variants", "f1,m1", "--rates", "8000", "--modes", "min"]
        for split in ("train", "dev", "test"):
            small += [f"--{split}-speakers", "2", f"--{split}-utterances", "1", f"--{split}-mixtures", "1"]
        assert main(["data", "speech", str(out), *small]) == 2
        assert f"in use by masksep data speech (pid {holder.pid}" in one_line(capsys)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".corpus.lock"]
    finally:
        assert holder.release() == 0

    # A run killed while writing: its lock and its temp folder stay behind.
    killed = Holder(lock, "masksep data speech").held()
    killed.kill()
    tmp = tmp_path / f".corpus.tmp-{killed.pid}"
    (tmp / "wav8k").mkdir(parents=True)
    (tmp / "wav8k" / "half.wav").write_bytes(b"RIFF")
    info = speech.make_corpus(out, spec, workers=1, log=lambda line: None)
    assert (out / "corpus.json").is_file() and info["spec"] == spec.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no temp folder, no lock
