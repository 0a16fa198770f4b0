"""Data made once and read by every run that asks for the same data.

A study trains every head variant at one seed on the same batches (common
random numbers), so without a cache each variant makes the same synthetic
mixtures again: at one CPU a batch took about as long to make as the model's
step took to compute. Given a cache folder (``masksep train --data-cache DIR``;
a sweep gives its trials one), a data set that is made on the fly
(``synthetic``, ``dynamic``) is wrapped in :class:`CachedMixtures`: the first
run to need (data config, seed, split, epoch) makes that whole epoch into one
file, the others map it.

One file per (data config, seed, split, epoch), named by a hash of all of them::

    CACHE/<split>-e<epoch>-<hash16>.f32

It holds a small header (a magic word, the header's length, a JSON header
with the file's name, the item count and each item's offset and length) and
then every item's sources, float32, item after item. The mixture is not
stored: these data sets make it as ``sources.sum(0)`` in float32, and the
reader does the same sum, so it is the same bits (the maker checks that for
every item).

Writing is atomic and exclusive: the maker holds ``NAME.lock`` (created with
O_EXCL, holding host and pid), writes ``NAME.tmp-<host>-<pid>`` and renames it
to NAME. A run that finds the lock makes a later epoch that no run has made
or claimed (up to the last epoch of its training), else waits for the file.
A lock whose process is gone (same host) or that has not been touched for
:data:`STALE_S` seconds (another host) is taken over. A file that is
truncated, has another header or another name is made again, never read as
a different batch. A folder that cannot be written (read-only storage) is
not an error: the run makes its data itself, after one warning line on stderr.

The cache never fills the disk. A file is written only where it leaves
:func:`keep_free` bytes free on the disk (5 %, at least 2 GiB) and keeps the
folder's training files within ``MASKSEP_DATA_CACHE_GB`` (no limit when unset);
to make room, the training files used longest ago (made or read: a read
touches the file) are deleted, and a run that needs one again makes it again,
the same bits. Validation and test files (one per seed) are never deleted.
When there is no room, or a write fails part way (a full disk, a quota), the
run keeps that epoch's data in memory instead, after one warning line; no
temp file is left, the trial goes on, and a later epoch tries the cache again.

The hash covers the data config, not the files a ``dynamic`` data set reads:
a cache is for the runs of one sweep (which deletes it when it finishes), not
a store that outlives a change to the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from masksep.errors import UserError
from masksep.files import atomic_file

MAGIC = b"MSKCACH1"  # 8 bytes; the format's version is its last character
ALIGN = 64  # the data starts at a multiple of this, so each item's array is aligned
STALE_S = 120.0  # a lock not touched for this long (the maker touches it) is abandoned
POLL_S = 0.05  # how often a waiting run looks for the file
TOUCH_EVERY = 64  # items between two touches of the lock by its maker
LIMIT_ENV = "MASKSEP_DATA_CACHE_GB"  # the most the training files of one cache folder may hold
KEEP_FREE_MIN = 2 << 30  # the cache never leaves less than this free on the disk...
KEEP_FREE_FRACTION = 0.05  # ...or this share of the disk
_warned: set[str] = set()


def cache_key(data: dict[str, Any], *, n_src: int, sample_rate: int, seed: int) -> dict[str, Any]:
    """What decides the items of a data set: every field of the data config that
    can change an item (not where the cache lives or how items are loaded), the
    number of sources, the sample rate and the seed."""
    loading = {"num_workers", "check", "skip_bad"}
    # roots None (one corpus, data.root): left out, so that caches made before data.roots
    # existed keep their names
    fields = {k: v for k, v in sorted(data.items())
              if k not in loading and not (k == "roots" and v is None)}
    return {"data": fields, "n_src": int(n_src), "sample_rate": int(sample_rate), "seed": int(seed)}


def file_name(key: dict[str, Any], split: str, epoch: int) -> str:
    full = {**key, "split": split, "epoch": int(epoch), "format": MAGIC.decode()}
    digest = hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:16]
    return f"{split}-e{int(epoch)}-{digest}.f32"


class CachedMixtures(Dataset):
    """``dataset`` (a data set made on the fly, deterministic per (split,
    epoch, index), whose mixture is the float32 sum of its sources), its items
    read from the cache in ``folder``. Items are the same tensors, bit for bit.

    ``last_epoch`` (training sets): while another run makes this epoch, this
    one makes a later epoch, up to ``last_epoch``, that nobody has made or is
    making, rather than wait idle: two trials at one seed that start together
    share the making between them.
    """

    def __init__(self, dataset: Dataset, folder: str | Path, key: dict[str, Any], split: str,
                 last_epoch: int = 0):
        self.dataset = dataset
        self.folder = Path(folder)
        self.key = key
        self.split = split
        self.last_epoch = int(last_epoch) if split == "train" else 0
        self.fixed_length = getattr(dataset, "fixed_length", False)
        limit_bytes()  # a bad MASKSEP_DATA_CACHE_GB is refused before the run writes anything
        self.epoch = 0
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._in_memory = False  # _arrays is this epoch's data in memory: no room for its file
        self._fallback = False  # the folder cannot be written: items come from ``dataset``
        self._made: set[str] = set()
        self._epoch_bytes = 0  # the size of an epoch's file, once one is made (0: not known)
        # cache files this data set made, read from others and deleted to make room, and
        # epochs it kept in memory for want of room
        self.files = {"made": 0, "read": 0, "evicted": 0, "in_memory": 0}

    # -- what the loops see ------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        """Training sets change with the epoch; validation and test sets never do.
        The epoch's file is made or found now, in this process (before any
        DataLoader worker starts)."""
        if self.split != "train":
            return
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        if int(epoch) != self.epoch:
            self.epoch, self._arrays, self._in_memory = int(epoch), None, False
        self._open()

    def __getattr__(self, name: str):
        # item_name and the like come from the data set underneath
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = self._open()
        if arrays is None:
            return self.dataset[index]
        from masksep.data.synthetic import item_index

        index = item_index(index, len(self))
        data, offsets, lengths = arrays
        n_src, length, start = self._n_src, int(lengths[index]), int(offsets[index])
        sources = np.array(data[start : start + n_src * length]).reshape(n_src, length)
        return torch.from_numpy(sources.sum(0)), torch.from_numpy(sources)

    def __getstate__(self) -> dict[str, Any]:
        # a DataLoader worker maps the file again rather than pickling the map (an
        # epoch held in memory goes along: there is no file to map)
        return {**self.__dict__, "_arrays": self._arrays if self._in_memory else None}

    # -- the files -----------------------------------------------------------------------

    def path(self, epoch: int | None = None) -> Path:
        return self.folder / file_name(self.key, self.split, self.epoch if epoch is None else epoch)

    @property
    def _n_src(self) -> int:
        return int(self.key["n_src"])

    def _open(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if self._fallback:
            return None
        if self._arrays is None:
            self._arrays = self._ensure()
            if self._arrays is None:
                self._fallback = True
        return self._arrays

    def _ensure(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Map this epoch's file, making it first if no other run has or is."""
        path = self.path()
        while True:
            arrays = read_file(path, path.name)
            if arrays is not None:
                if path.name not in self._made:
                    self.files["read"] += 1
                _touch(path)  # used now: the last to be deleted for room
                return arrays
            state = self._try_make(self.epoch)
            if state == "unwritable":
                return None
            if isinstance(state, tuple):  # no room for the file: this epoch stays in memory
                self._in_memory = True
                self.files["in_memory"] += 1
                return state
            if state == "busy" and not self._make_ahead():
                time.sleep(POLL_S)  # another run is making it, and nothing is left to help with

    def _make_ahead(self) -> bool:
        """Make the first later epoch that no run has made or is making, where it
        fits without deleting a file; True if one was."""
        for epoch in range(self.epoch + 1, self.last_epoch + 1):
            if self._epoch_bytes and make_room(self.folder, self._epoch_bytes, evict=False) is None:
                return False  # no room ahead: not worth making an epoch only to drop it
            state = self._try_make(epoch, evict=False)
            if state in ("made", "no room"):
                return state == "made"
        return False

    def _try_make(self, epoch: int, evict: bool = True) -> str | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Make ``epoch``'s file under its lock: "made", "present" (it exists),
        "busy" (another run holds the lock), "unwritable", or when its file has no
        room, the epoch's arrays in memory (``evict``: files may be deleted for room)
        or "no room" (not ``evict``)."""
        path = self.path(epoch)
        lock = path.with_name(path.name + ".lock")
        if read_file(path, path.name) is not None:
            return "present"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _abandoned(lock):
                # Two runs may both take an abandoned lock over and both make the
                # file: the same bytes, each renamed whole, so only work is lost.
                _unlink(lock)
            return "busy"
        except OSError as exc:
            return self._unwritable(exc)
        try:
            try:
                os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            except OSError as exc:  # a disk too full for a line: as if it could not be written
                return self._unwritable(exc)
            finally:
                os.close(fd)
            if read_file(path, path.name) is not None:  # made while we looked at the lock
                return "present"
            items = self._make(lock, epoch)
            self._epoch_bytes = size = _file_size(items, self._n_src, path.name)
            if self._room_for(path, size, evict):
                try:
                    _write(path, items, self._n_src)
                except UserError as exc:  # a full disk or a quota: one line, then in memory
                    _warn_once(str(self.folder), f"masksep: data cache: {exc}; this run keeps "
                               "the epochs it cannot write in memory")
                else:
                    self._made.add(path.name)
                    self.files["made"] += 1
                    return "made"
            elif evict:
                _warn_once(str(self.folder), f"masksep: data cache {self.folder}: no room for "
                           f"{path.name} ({_room_text()}); this run keeps the epochs that do "
                           "not fit in memory")
            return _in_memory(items) if evict else "no room"
        finally:
            _unlink(lock)

    def _unwritable(self, exc: OSError) -> str:
        _warn_once(str(self.folder), f"masksep: data cache {self.folder} cannot be written "
                   f"({exc.strerror or exc}); making the data in this run instead")
        return "unwritable"

    def _room_for(self, path: Path, size: int, evict: bool) -> bool:
        """Whether a file of ``size`` bytes fits (see the module's docstring); with
        ``evict``, training files used longest ago are deleted until it does."""
        evicted = make_room(self.folder, size, keep={path.name}, evict=evict)
        if evicted is None:
            return False
        self.files["evicted"] += evicted
        return True

    def _make(self, lock: Path, epoch: int) -> list[np.ndarray]:
        inner = self.dataset
        before = getattr(inner, "epoch", 0)
        if epoch != before:
            inner.set_epoch(epoch)
        try:
            items = []
            for i in range(len(inner)):
                mix, sources = inner[i]
                sources = np.ascontiguousarray(sources.numpy(), dtype=np.float32)
                if sources.shape[0] != self._n_src or not np.array_equal(sources.sum(0), mix.numpy()):
                    raise RuntimeError(f"{type(inner).__name__} item {i}: the mixture is not the "
                                       "float32 sum of its sources; it cannot be cached this way")
                items.append(sources)
                if i % TOUCH_EVERY == TOUCH_EVERY - 1:
                    os.utime(lock)
        finally:
            if epoch != before:
                inner.set_epoch(before)
        return items


def _layout(items: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each item's length in samples and its offset in the data (float32 values)."""
    lengths = np.asarray([int(s.shape[1]) for s in items], dtype=np.int64)
    sizes = np.asarray([int(s.size) for s in items], dtype=np.int64)
    return lengths, np.cumsum(sizes) - sizes


def _header(name: str, items: list[np.ndarray], n_src: int) -> bytes:
    lengths, offsets = _layout(items)
    return json.dumps({"name": name, "n_items": len(items), "n_src": n_src,
                       "offsets": offsets.tolist(), "lengths": lengths.tolist()}).encode()


def _file_size(items: list[np.ndarray], n_src: int, name: str) -> int:
    return _data_start(len(_header(name, items, n_src))) + sum(int(s.nbytes) for s in items)


def _in_memory(items: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (data, offsets, lengths) a file of ``items`` would map to, in memory."""
    lengths, offsets = _layout(items)
    data = np.concatenate([s.ravel() for s in items]) if items else np.zeros(0, np.float32)
    return data, offsets, lengths


def keep_free(folder: Path) -> int:
    """Bytes the cache leaves free on the disk of ``folder``."""
    return max(KEEP_FREE_MIN, int(KEEP_FREE_FRACTION * shutil.disk_usage(folder).total))


def limit_bytes() -> int | None:
    """The most a cache folder's training files may hold (``MASKSEP_DATA_CACHE_GB``), or None."""
    text = os.environ.get(LIMIT_ENV, "").strip()
    if not text:
        return None
    try:
        gb = float(text)
    except ValueError:
        raise UserError(f"{LIMIT_ENV}={text!r}: not a number of GB") from None
    if not gb >= 0:
        raise UserError(f"{LIMIT_ENV}={text!r}: must be 0 or more GB")
    return int(gb * (1 << 30))


def _room_text() -> str:
    limit = limit_bytes()
    return (f"{KEEP_FREE_FRACTION:.0%} of the disk or {KEEP_FREE_MIN >> 30} GiB is kept free"
            + (f", {LIMIT_ENV}={os.environ[LIMIT_ENV]}" if limit is not None else ""))


def make_room(folder: Path, size: int, keep: set[str] = frozenset(), evict: bool = True) -> int | None:
    """Room in ``folder`` for a new file of ``size`` bytes: the number of training
    files deleted for it (those used longest ago first, never one named in
    ``keep``), or None when it does not fit even so (or would need a deletion and
    ``evict`` is False)."""
    usage = shutil.disk_usage(folder)
    free = usage.free - keep_free(folder)
    limit = limit_bytes()
    files = []
    for path in folder.glob("train-e*.f32"):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # another run deleted it meanwhile
        files.append((stat.st_mtime, stat.st_size, path))
    held = sum(file_size for _, file_size, _ in files)

    def fits() -> bool:
        return size <= free and (limit is None or held + size <= limit)

    if fits():
        return 0
    files = sorted(f for f in files if f[2].name not in keep)
    deletable = sum(file_size for _, file_size, _ in files)
    if not evict or size > free + deletable or (limit is not None and size > limit - held + deletable):
        return None  # deleting every file would not make room: delete none
    deleted = 0
    for _, file_size, path in files:
        # A run that has it mapped reads on (a deleted file's pages stay until unmapped).
        _unlink(path)
        deleted += 1
        free, held = free + file_size, held - file_size
        if fits():
            break
    return deleted


def _write(path: Path, items: list[np.ndarray], n_src: int) -> None:
    """The file of ``items`` (each (n_src, T) float32), through a temp file and a rename."""
    header = _header(path.name, items, n_src)
    start = _data_start(len(header))
    tmp = path.with_name(f"{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    # A full disk: one UserError line and no temp file (the caller keeps the data in memory).
    with atomic_file(path, tmp) as f:
        f.write(MAGIC + len(header).to_bytes(8, "little") + header)
        f.write(b"\0" * (start - f.tell()))
        for sources in items:
            f.write(sources.tobytes())


def _data_start(header_len: int) -> int:
    return -(-(len(MAGIC) + 8 + header_len) // ALIGN) * ALIGN


def read_file(path: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(data, offsets, lengths) of a complete cache file whose header says ``name``;
    None when it is missing, truncated, or another file."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if len(head) < 16 or head[:8] != MAGIC:
                return None
            header = json.loads(f.read(int.from_bytes(head[8:], "little")))
        if header.get("name") != name:
            return None
        lengths = np.asarray(header["lengths"], dtype=np.int64)
        offsets = np.asarray(header["offsets"], dtype=np.int64)
        total = int(header["n_src"]) * int(lengths.sum())
        start = _data_start(int.from_bytes(head[8:], "little"))
        if path.stat().st_size != start + 4 * total or len(offsets) != header["n_items"]:
            return None
        data = (np.memmap(path, dtype=np.float32, mode="r", offset=start, shape=(total,))
                if total else np.zeros(0, np.float32))
        return data, offsets, lengths
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _abandoned(lock: Path) -> bool:
    """The lock's maker is gone: a dead pid on this host, or no touch for STALE_S."""
    try:
        host, pid = lock.read_text().split()
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False  # released meanwhile: look for the file again
    except (OSError, ValueError):
        # being written this instant, or garbage: only its age can tell
        try:
            return time.time() - lock.stat().st_mtime > STALE_S
        except OSError:
            return False
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's
    return age > STALE_S


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass  # deleted meanwhile, or storage that keeps no times: only the order of deletion suffers


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _warn_once(key: str, line: str) -> None:
    if key not in _warned:
        _warned.add(key)
        print(line, file=sys.stderr, flush=True)
