"""One run per output folder: an exclusive lock file that says who holds it.

``masksep sweep --out D`` (and ``--resume``), ``masksep train --out D`` hold
``D/.masksep.lock``; ``masksep data speech OUT`` holds ``.OUT.lock`` beside
OUT (the corpus is written beside it and renamed into place). The file is
created with O_EXCL and holds the holder's host, pid, process start time and
command, so a second run fails at once with one line that says who holds the
folder (exit code 2), before it reads or writes anything there.

A lock whose holder is gone is taken over: on this host, a holder is gone
when its pid no longer runs, or runs a process started at another time (the
pid was reused). A lock held from another host is never taken over by
guessing: the message names the host and the file to remove once that run is
known to be over. Two runs that find the same dead holder at once take it
over one at a time (an flock on the lock's folder, where the filesystem has
flock), so that exactly one of them gets the folder.

Within one process the lock is re-entrant: ``masksep sweep`` holds its folder
for the whole command and the sweep runner takes the same lock again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from masksep.errors import UserError
from masksep.rundir import LOCK as LOCK_NAME  # in a run or sweep folder

_held: dict[str, str] = {}  # lock path -> token, of the locks this process holds


class FolderBusy(UserError):
    """Another live run holds the folder."""


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) from /proc; None where there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields follow the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it runs
    if started is not None:
        now = _start_time(pid)
        if now is not None and now != started:
            return False  # the pid was reused by a later process
    return True


def _read(path: Path) -> dict | None:
    """The holder written in the lock file; {} when it cannot be read (being written
    this instant, or not ours); None when there is no lock file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _gone(holder: dict) -> bool:
    """The holder is known to be dead: a process of this host that no longer runs."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    return not _alive(pid, holder.get("started"))


def describe(holder: dict) -> str:
    if not holder:
        return "another run (its lock file is being written or unreadable)"
    since = holder.get("since")
    when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if isinstance(
        since, (int, float)) else ""
    return f"{holder.get('command') or 'a masksep run'} (pid {holder.get('pid')} on {holder.get('host')}{when})"


@contextlib.contextmanager
def _takeover_guard(folder: Path) -> Iterator[None]:
    """Takeovers of a dead holder's lock one at a time (an flock on the folder); no guard
    where the filesystem has no flock (the race then needs two takeovers in the same instant)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


def acquire(path: Path, command: str, where: str) -> str | None:
    """Create the lock file ``path`` for ``command``; its token, or None when this
    process already holds it. FolderBusy (one line naming ``where`` and the holder)
    when a live run holds it."""
    path = Path(os.path.realpath(path))  # one key for a folder reached through links too
    if str(path) in _held:
        return None
    token = uuid.uuid4().hex
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid()),
              "command": command, "since": time.time(), "token": token}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            seen = _read(path)
            if seen is None:
                continue  # released meanwhile: try again
            if not _gone(seen):
                hint = ("wait for it to end" if seen.get("host") == socket.gethostname()
                        else f"if that run is over, remove {path}")
                raise FolderBusy(f"{where}: in use by {describe(seen)}; {hint}") from None
            with _takeover_guard(path.parent):
                if _read(path) == seen:  # still the dead holder's, not a newer run's
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            continue
        except OSError as exc:
            raise UserError(f"{where}: cannot create the lock file {path} "
                            f"({exc.strerror or exc})") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(holder) + "\n")
        _held[str(path)] = token
        return token
    raise FolderBusy(f"{where}: its lock {path} keeps changing hands; try again")


def release(path: Path, token: str | None) -> None:
    """Remove the lock file if it is still this holder's (``token`` from acquire)."""
    path = Path(os.path.realpath(path))
    if token is None or _held.get(str(path)) != token:
        return
    del _held[str(path)]
    if (_read(path) or {}).get("token") == token:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def hold(path: str | Path, command: str, where: str | Path | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` for the block (its folder is made if missing)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path.parent}: cannot create the folder ({exc.strerror or exc})") from None
    token = acquire(path, command, str(where or path.parent))
    try:
        yield
    finally:
        release(path, token)


@contextlib.contextmanager
def hold_folder(folder: str | Path, command: str) -> Iterator[None]:
    """Hold ``folder`` (``folder/.masksep.lock``) for the block. A folder this made
    and left empty (a run refused before it wrote anything) is removed again."""
    folder = Path(os.path.abspath(folder))
    made = []  # the folders this makes, deepest first
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        made.append(parent)
    try:
        with hold(folder / LOCK_NAME, command, folder):
            yield
    finally:
        for path in made:
            try:
                path.rmdir()  # only when empty
            except OSError:
                break
