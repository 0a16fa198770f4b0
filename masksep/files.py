"""Files written whole or not at all, and a write that fails as one line.

A write that fails (a full disk, a file-size limit, a read-only folder) keeps
the file that was there before, leaves no temp file behind, and ends in one
:class:`~masksep.errors.UserError` line naming the path and the reason.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from masksep.errors import UserError


def write_error(path: str | Path, exc: OSError, kept: bool = True) -> UserError:
    """The one line for a write to ``path`` that failed with ``exc``."""
    reason = exc.strerror or exc.__class__.__name__
    tail = "; the previous file is kept" if kept and Path(path).exists() else ""
    return UserError(f"{path}: cannot be written ({reason}){tail}")


def fsync_folder(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (a crash after it keeps the new name)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # a folder that cannot be opened (some network filesystems): nothing to sync
    try:
        os.fsync(fd)
    except OSError:
        pass  # folders that do not support fsync
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, tmp: Path | None = None) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` with, whole or not at all: it is a temp file
    beside ``path`` (``tmp``, default ``.NAME.tmpPID``), fsynced and renamed over
    ``path`` when the block ends, the folder fsynced after. A write that fails
    removes the temp file, keeps what ``path`` held and raises one UserError line."""
    path = Path(path)
    tmp = tmp or path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # a crash never leaves a name whose data never reached the disk
        os.replace(tmp, path)
    except OSError as exc:
        _unlink(tmp)
        raise write_error(path, exc) from None
    except BaseException:
        _unlink(tmp)
        raise
    fsync_folder(path.parent)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_file`, so a reader (or a
    crash) never sees half a file."""
    with atomic_file(path) as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def append_line(path: str | Path, line: str) -> None:
    """Append one line to ``path`` whole or not at all: a write that fails part
    way is cut back to the file's former end (then one UserError line)."""
    path = Path(path)
    raw = (line.rstrip("\n") + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                _write_all(fd, raw)
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from None


def make_folder(folder: str | Path) -> Path:
    """``folder`` and those above it, made if missing; a folder that cannot be made is one line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
    return folder


def check_writable(folder: str | Path) -> None:
    """Refuse, before any work, an output folder this process cannot write: the
    folder itself, or the nearest existing folder above it when it is still to
    be made. Nothing is left behind (a probe file is made and removed)."""
    folder = Path(folder).absolute()
    where = folder
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise UserError(f"{folder}: cannot be made a folder ({where} is a file)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".masksep-probe-", dir=where)
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        if where == folder:
            raise UserError(f"{folder}: cannot write in this folder ({reason})") from None
        raise UserError(f"{folder}: cannot be made: cannot write in {where} ({reason})") from None
    os.close(fd)
    os.unlink(probe)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until all of ``data`` is written (a write may take only part of it
    near a size limit; the next one raises)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass  # the folder went read-only meanwhile: nothing more can be done about the temp
