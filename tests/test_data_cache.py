"""The data cache (masksep/data/cache.py): made once, read bit for bit, never a wrong batch.

Real files in a temp folder, real processes for the concurrent cases; every
wait is on a file or a lock, never a sleep.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from masksep.config import load_config
from masksep.data import build_dataset
from masksep.data import cache as cache_mod
from masksep.data.cache import STALE_S, CachedMixtures
from masksep.data.export import synth
from masksep.errors import UserError
from masksep.train import fit

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = [*tiny.sets(tiny.MODEL), "data.segment_s=0.5", "data.train_items=12", "data.valid_items=3", "data.test_items=3",
         "data.eval_seconds=0.75", "train.epochs=2"]


def small_cfg(*sets: str):
    return load_config(None, SMALL + list(sets))


def same_items(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x, y) for i in range(len(a)) for x, y in zip(a[i], b[i], strict=True))


def counts(made: int, read: int, evicted: int = 0, in_memory: int = 0) -> dict[str, int]:
    return {"made": made, "read": read, "evicted": evicted, "in_memory": in_memory}


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_cached_synthetic_items_are_the_fresh_items_bit_for_bit(tmp_path):
    cfg = small_cfg()
    for split in ("train", "valid", "test"):
        fresh, cached = build_dataset(cfg, split), build_dataset(cfg, split, tmp_path)
        assert isinstance(cached, CachedMixtures) and cached.fixed_length == fresh.fixed_length
        for epoch in (1, 2):
            fresh.set_epoch(epoch)
            cached.set_epoch(epoch)
            assert same_items(fresh, cached), (split, epoch)
    names = cache_files(tmp_path)
    assert [n.split("-")[0] + "-" + n.split("-")[1] for n in names] == [
        "test-e0", "train-e1", "train-e2", "valid-e0"]  # validation and test never change
    # another seed, another data config: other files, never these
    other = build_dataset(small_cfg("seed=1"), "train", tmp_path)
    other.set_epoch(1)
    longer = build_dataset(small_cfg("data.segment_s=0.6"), "train", tmp_path)
    longer.set_epoch(1)
    assert len(cache_files(tmp_path)) == len(names) + 2
    assert not same_items(other, build_dataset(cfg, "train", tmp_path))


def test_cached_dynamic_mixing_is_the_same_including_whole_utterance_eval_items(tmp_path):
    data = tmp_path / "utterances"
    for split, n in (("train", 6), ("valid", 3), ("test", 3)):
        synth(data, "utterances", split, n, seconds=0.5, max_seconds=1.0, seed=4)
    cfg = load_config(None, ["data.kind=dynamic", f"data.root={data}", "data.train_items=5",
                             "data.valid_items=3", "data.test_items=3", "data.segment_s=0.25"])
    for split in ("train", "valid", "test"):
        fresh, cached = build_dataset(cfg, split), build_dataset(cfg, split, tmp_path / "cache")
        fresh.set_epoch(3)
        cached.set_epoch(3)
        assert same_items(fresh, cached), split
        assert cached.item_name(0) == fresh.item_name(0)
    # whole utterances cut to the shorter: items of different lengths in one file
    valid = build_dataset(cfg, "valid", tmp_path / "cache")
    assert len({valid[i][0].shape[0] for i in range(3)}) > 1


def test_corpora_on_disk_are_not_cached(tmp_path):
    synth(tmp_path / "wav8k" / "min", "librimix", "test", 2, seconds=0.5)
    cfg = load_config(None, ["data.kind=librimix", f"data.root={tmp_path / 'wav8k' / 'min'}"])
    assert not isinstance(build_dataset(cfg, "test", tmp_path / "cache"), CachedMixtures)


def test_a_truncated_foreign_or_garbage_file_is_made_again(tmp_path):
    cfg = small_cfg()
    fresh = build_dataset(cfg, "train")
    fresh.set_epoch(1)
    first = build_dataset(cfg, "train", tmp_path)
    first.set_epoch(2)
    first.set_epoch(1)
    path = first.path(1)
    size = path.stat().st_size

    def reopened():
        ds = build_dataset(cfg, "train", tmp_path)
        ds.set_epoch(1)
        return ds

    with open(path, "r+b") as f:  # a copy cut short (a full disk, a killed copy)
        f.truncate(size // 2)
    ds = reopened()
    assert ds.files == counts(1, 0) and path.stat().st_size == size
    assert same_items(ds, fresh)
    shutil.copyfile(first.path(2), path)  # the right size, another epoch's header
    ds = reopened()
    assert ds.files == counts(1, 0) and same_items(ds, fresh)
    path.write_bytes(b"not a cache file")
    ds = reopened()
    assert ds.files == counts(1, 0) and same_items(ds, fresh)
    ds = reopened()
    assert ds.files == counts(0, 1)  # and now it is read as it is
    assert not [n for n in cache_files(tmp_path) if n.endswith(".lock") or ".tmp-" in n]


def test_a_run_that_finds_a_live_lock_waits_for_the_file_and_reads_it(tmp_path):
    cfg = small_cfg("train.epochs=1")  # nothing later to make while it waits
    waiter = build_dataset(cfg, "train", tmp_path)
    lock = waiter.path(1).with_name(waiter.path(1).name + ".lock")
    tmp_path.mkdir(exist_ok=True)
    lock.write_text(f"{socket.gethostname()} {os.getpid()}\n")  # held by a live process: us
    thread = threading.Thread(target=waiter.set_epoch, args=(1,))
    thread.start()
    assert thread.is_alive()  # no file and a held lock: it cannot have finished
    maker = build_dataset(cfg, "train", tmp_path)
    cache_mod._write(maker.path(1), maker._make(lock, 1), 2)  # the holder of the lock makes the file...
    lock.unlink()  # ...and lets go
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert waiter.files == counts(0, 1)
    fresh = build_dataset(cfg, "train")
    fresh.set_epoch(1)
    assert same_items(waiter, fresh)


def test_an_abandoned_lock_is_taken_over(tmp_path):
    cfg = small_cfg("train.epochs=1")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid of this host that is no longer running
    cases = {"dead": f"{socket.gethostname()} {gone.pid}\n", "old": "another-host 12345\n"}
    for case, holder in cases.items():
        ds = build_dataset(cfg, "train", tmp_path / case)
        lock = ds.path(1).with_name(ds.path(1).name + ".lock")
        lock.parent.mkdir()
        lock.write_text(holder)
        if case == "old":  # another host: only the lock's age tells
            old = time.time() - STALE_S - 60
            os.utime(lock, (old, old))
        ds.set_epoch(1)
        assert ds.files == counts(1, 0) and not lock.exists(), case


def test_an_unwritable_cache_folder_falls_back_with_one_warning(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = small_cfg()
    fresh = build_dataset(cfg, "train")
    cached = build_dataset(cfg, "train", blocker / "cache")  # cannot be a folder
    for epoch in (1, 2):
        fresh.set_epoch(epoch)
        cached.set_epoch(epoch)
        assert same_items(cached, fresh)
    valid = build_dataset(cfg, "valid", blocker / "cache")
    assert same_items(valid, build_dataset(cfg, "valid"))
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and "cannot be written" in lines[0] and str(blocker) in lines[0]


TWO_PROCESSES = r"""
import hashlib, json, sys, time
from pathlib import Path
from masksep.config import load_config
from masksep.data import build_dataset
cfg = load_config(None, json.loads(sys.argv[1]))
folder, me = Path(sys.argv[2]), sys.argv[3]
ds = build_dataset(cfg, "train", folder / "cache")
(folder / f"ready-{me}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
ds.set_epoch(1)
digest = hashlib.sha256(b"".join(t.numpy().tobytes() for i in range(len(ds)) for t in ds[i]))
print(json.dumps({"files": ds.files, "sha": digest.hexdigest()}))
"""


def test_two_runs_that_start_together_make_an_epoch_once_and_read_the_same(tmp_path):
    sets = SMALL + ["data.train_items=64", "train.epochs=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", TWO_PROCESSES, json.dumps(sets), str(tmp_path),
                               str(i)], stdout=subprocess.PIPE, text=True, env=env) for i in (0, 1)]
    while not all((tmp_path / f"ready-{i}").exists() for i in (0, 1)):
        assert all(p.poll() is None for p in procs), "a run died before the start"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(r["files"]["made"] for r in results) == [0, 1]  # one made it...
    assert sorted(r["files"]["read"] for r in results) == [0, 1]  # ...the other read it
    assert results[0]["sha"] == results[1]["sha"]
    assert len(cache_files(tmp_path / "cache")) == 1  # no lock or temp file left


def test_training_with_the_cache_is_the_same_run_made_or_read(tmp_path):
    sets = ["train.threads=1", "train.epochs=2", "train.early_stop=0", "head.kind=og",
            "head.oversep=3", "head.grouping=oracle"]
    cfg = load_config(None, SMALL + sets)
    runs = []
    for name, cache in (("plain", None), ("maker", tmp_path / "cache"), ("reader", tmp_path / "cache")):
        summary = fit(cfg, tmp_path / name, data_cache=cache)
        curve = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs.append((summary, [(r["train_loss"], r["val_si_snri"]) for r in curve]))
    (plain, plain_curve), (maker, maker_curve), (reader, reader_curve) = runs
    assert plain_curve == maker_curve == reader_curve  # the same losses, to the last bit
    assert plain["test_si_snri"] == maker["test_si_snri"] == reader["test_si_snri"]
    assert plain["test_sdri"] == reader["test_sdri"]
    assert plain["data_cache"] is None
    assert maker["data_cache"] == counts(4, 0)  # 2 epochs, validation, test
    assert reader["data_cache"] == counts(0, 4)
    assert reader["data_workers"] == 0  # a mapped file needs no worker process


@pytest.mark.parametrize("made_first", [True, False])
def test_a_later_epoch_is_made_while_another_run_makes_this_one(tmp_path, made_first):
    cfg = small_cfg("train.epochs=3")
    ds = build_dataset(cfg, "train", tmp_path)
    lock = ds.path(1).with_name(ds.path(1).name + ".lock")
    tmp_path.mkdir(exist_ok=True)
    lock.write_text(f"{socket.gethostname()} {os.getpid()}\n")
    if not made_first:  # epoch 2 is there already: it helps with epoch 3
        other = build_dataset(cfg, "train", tmp_path)
        other.set_epoch(2)
    assert ds._make_ahead()
    assert ds.files["made"] == 1
    helped = 2 if made_first else 3
    fresh = build_dataset(cfg, "train")
    fresh.set_epoch(helped)
    lock.unlink()
    ds.set_epoch(helped)
    assert same_items(ds, fresh) and ds.files == counts(1, 0)  # its own, not read


def test_over_its_limit_the_cache_deletes_the_training_files_used_longest_ago(tmp_path, monkeypatch):
    # The converged study's cache kept every epoch of every seed (20 GB a seed) and filled
    # the disk. With a limit, the training file used longest ago goes, and a run that
    # needs it again makes it again: the same bits.
    cfg = small_cfg("train.epochs=3")
    first = build_dataset(cfg, "train", tmp_path)
    first.set_epoch(1)
    size = first.path(1).stat().st_size
    first.set_epoch(2)
    valid = build_dataset(cfg, "valid", tmp_path)
    valid.set_epoch(0)
    assert same_items(valid, build_dataset(cfg, "valid"))
    past = time.time() - 1000
    for age, epoch in ((200, 1), (100, 2)):  # epoch 1 made first...
        os.utime(first.path(epoch), (past - age, past - age))
    os.utime(valid.path(), (past - 300, past - 300))  # (older still, but never deleted)
    monkeypatch.setenv(cache_mod.LIMIT_ENV, str((2 * size + size // 2) / (1 << 30)))  # room for 2 epochs
    second = build_dataset(cfg, "train", tmp_path)
    second.set_epoch(1)  # ...but read again since: epoch 2 is now the one used longest ago
    second.set_epoch(3)
    assert second.files == counts(1, 1, evicted=1)
    assert not first.path(2).exists() and first.path(1).exists() and valid.path().exists()

    again = build_dataset(cfg, "train", tmp_path)
    again.set_epoch(2)  # deleted: made again, identical
    fresh = build_dataset(cfg, "train")
    fresh.set_epoch(2)
    assert same_items(again, fresh) and again.files == counts(1, 0, evicted=1)
    assert len([n for n in cache_files(tmp_path) if n.startswith("train-")]) == 2


def test_with_no_room_on_the_disk_an_epoch_stays_in_memory_after_one_warning(tmp_path, monkeypatch,
                                                                             capsys):
    cfg = small_cfg("train.epochs=2")
    made = build_dataset(cfg, "train", tmp_path)
    made.set_epoch(1)
    # the disk now keeps less free than the cache must leave: nothing more is written,
    # and nothing is deleted (it would not make room)
    monkeypatch.setattr(cache_mod, "keep_free", lambda folder: cache_mod.shutil.disk_usage(folder).free + 1)
    ds = build_dataset(cfg, "train", tmp_path)
    fresh = build_dataset(cfg, "train")
    for epoch in (1, 2):
        ds.set_epoch(epoch)
        fresh.set_epoch(epoch)
        assert same_items(ds, fresh), epoch
    assert ds.files == counts(0, 1, in_memory=1)
    assert [n.split("-")[1] for n in cache_files(tmp_path)] == ["e1"]
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and "no room for" in lines[0] and "in memory" in lines[0], lines
    # a DataLoader worker gets the epoch held in memory, not an empty map to make again
    worker = pickle.loads(pickle.dumps(ds))
    assert same_items(worker, fresh) and worker.files == ds.files


def test_a_bad_cache_limit_is_one_line(tmp_path, monkeypatch):
    for value, problem in (("lots", "not a number of GB"), ("-1", "must be 0 or more GB")):
        monkeypatch.setenv(cache_mod.LIMIT_ENV, value)
        with pytest.raises(UserError, match=f"{cache_mod.LIMIT_ENV}='{value}': {problem}"):
            build_dataset(small_cfg(), "train", tmp_path)  # refused before anything is written
    assert cache_files(tmp_path) == []
