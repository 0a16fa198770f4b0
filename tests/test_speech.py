"""masksep data speech: a corpus spoken by espeak-ng (the speech extra), read by the
existing LibriMix and dynamic-mixing readers, the same files for the same seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from masksep.config import load_config
from masksep.data import build_dataset
from masksep.data.checks import check_folder
from masksep.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from corpus_files import read_csv, wav_digests  # noqa: E402

speech = pytest.importorskip("masksep.data.speech")
pytest.importorskip("espeakng_loader")  # CI installs the extra; elsewhere these tests skip

ROOT = Path(__file__).resolve().parents[1]
SMALL = speech.SpeechSpec(
    rates=(8000,), modes=("min", "max"), languages=("en-US", "de", "fr"),
    speakers={"train": 6, "dev": 2, "test": 2}, utterances={"train": 2, "dev": 2, "test": 2},
    mixtures={"train": 6, "dev": 3, "test": 3}, seed=3)


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("speech") / "corpus"
    info = speech.make_corpus(out, SMALL, workers=2, log=quiet)
    return out, info


def test_the_corpus_has_librimix_layout_metadata_and_its_speakers(corpus):
    out, info = corpus
    for mode in ("min", "max"):
        base = out / "wav8k" / mode
        for split, n in (("train-100", 6), ("dev", 3), ("test", 3)):
            rows = read_csv(base / "metadata" / f"mixture_{split}_mix_clean.csv")
            assert len(rows) == n
            assert list(rows[0]) == ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"]
            for row in rows:
                for col in ("mixture_path", "source_1_path", "source_2_path"):
                    assert Path(row[col]).is_file() and Path(row[col]).is_relative_to(out)
        # min cuts to the shorter, max pads to the longer
    lengths = {m: [int(r["length"]) for r in read_csv(out / "wav8k" / m / "metadata" /
                                                      "mixture_test_mix_clean.csv")] for m in ("min", "max")}
    assert all(a <= b for a, b in zip(lengths["min"], lengths["max"], strict=True))
    assert any(a < b for a, b in zip(lengths["min"], lengths["max"], strict=True))
    speakers = read_csv(out / "speakers.csv")
    assert len(speakers) == 10 and info["speakers"] == {"train": 6, "dev": 2, "test": 2}
    assert {s["gender"] for s in speakers if s["split"] == "train"} == {"female", "male"}
    assert len({s["language"] for s in speakers if s["split"] == "train"}) == 3
    assert len(list((out / "utterances" / "wav8k" / "train").rglob("*.wav"))) == 12
    assert json.loads((out / "corpus.json").read_text())["spec"] == SMALL.to_dict()


def test_train_dev_and_test_talkers_are_disjoint(corpus):
    out, _ = corpus
    speakers = read_csv(out / "speakers.csv")
    voices = {split: {(s["language"], s["variant"], s["pitch"]) for s in speakers if s["split"] == split}
              for split in ("train", "dev", "test")}
    assert not voices["train"] & voices["test"] and not voices["train"] & voices["dev"]
    assert not voices["dev"] & voices["test"]
    folders = {split: {p.name for p in (out / "utterances" / "wav8k" / split).iterdir()}
               for split in ("train", "dev", "test")}
    assert not folders["train"] & folders["test"] and not folders["train"] & folders["dev"]


def test_it_passes_the_data_check_and_trains_with_the_existing_readers(corpus, tmp_path):
    out, _ = corpus
    for mode in ("min", "max"):
        report = check_folder(out / "wav8k" / mode, layout="librimix", level="full", log=quiet)
        assert not report.problems, report.problems[:3]
    libri = load_config(None, ["data.kind=librimix", f"data.root={out}", "data.librimix_train=train-100",
                               "data.segment_s=0.5"])
    train = build_dataset(libri, "train")
    mix, src = train[0]
    assert len(train) == 6 and mix.shape == (4000,) and src.shape == (2, 4000)
    assert float((mix - src.sum(0)).abs().max()) < 2e-4  # 16-bit files: the sum to quantisation
    dynamic = load_config(None, ["data.kind=dynamic", f"data.root={out / 'utterances' / 'wav8k'}",
                                 "data.train_items=8", "data.valid_items=2", "data.test_items=2",
                                 "data.segment_s=0.5", "train.epochs=1", "train.threads=1",
                                 "encoder.n_filters=16", "backbone.tcn.layers=2", "backbone.tcn.hidden=32",
                                 "backbone.tcn.bottleneck=16", "backbone.tcn.skip=16"])
    test = build_dataset(dynamic, "test")
    assert len(test) == 2 and float(test[0][1].abs().max()) > 1e-3
    from masksep.train import fit

    summary = fit(dynamic, tmp_path / "run", data_cache=tmp_path / "cache")
    assert summary["epochs"] == 1 and summary["data_cache"]["made"] == 3


def test_the_same_seed_gives_the_same_files_whatever_the_workers(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    speech.make_corpus(again, SMALL, workers=1, log=quiet)
    assert wav_digests(again) == wav_digests(out)
    assert (again / "speakers.csv").read_bytes() == (out / "speakers.csv").read_bytes()
    rows = read_csv(again / "wav8k" / "min" / "metadata" / "mixture_dev_mix_clean.csv")
    assert all(r["mixture_path"].startswith(str(again)) for r in rows)  # where the files are
    other = tmp_path / "other-seed"
    speech.make_corpus(other, replace(SMALL, seed=4), workers=2, log=quiet)
    assert wav_digests(other) != wav_digests(out)


def test_a_second_run_with_the_same_spec_is_a_no_op_and_another_spec_is_refused(corpus):
    out, info = corpus
    before = wav_digests(out)
    lines = []
    assert speech.make_corpus(out, SMALL, log=lines.append)["mixtures"] == info["mixtures"]
    assert "already holds this corpus" in lines[0] and wav_digests(out) == before
    with pytest.raises(UserError, match="already holds something else"):
        speech.make_corpus(out, replace(SMALL, seed=9), log=quiet)


@pytest.mark.parametrize("change, field", [
    ({"languages": ("en", "xx-nope")}, "--languages"),
    ({"languages": ("ja",)}, "--languages"),  # a voice espeak-ng has, but no sentences for it
    ({"variants": ("f1", "nobody")}, "--variants"),
    ({"rates": (22050,)}, "--rates"),
    ({"modes": ("mid",)}, "--modes"),
    ({"mixtures": {"train": -1, "dev": 1, "test": 1}}, "--train-mixtures"),
    ({"speakers": {"train": 1, "dev": 2, "test": 2}}, "--train-speakers"),
    ({"mixtures": {"train": 61, "dev": 1, "test": 1}}, "--train-mixtures"),  # 15 x 2 x 2 = 60 pairs
])
def test_bad_arguments_name_the_field_and_write_nothing(tmp_path, change, field):
    with pytest.raises(UserError, match=field):
        speech.make_corpus(tmp_path / "out", replace(SMALL, **change), log=quiet)
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_the_command_line_and_the_missing_extra_are_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "masksep.cli", "data", "speech"]
    bad = subprocess.run([*cli, str(tmp_path / "a"), "--rates", "44100"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "--rates" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "espeakng_loader.py").write_text("raise ImportError('not installed')\n")
    missing = subprocess.run([*cli, str(tmp_path / "b")], capture_output=True, text=True, timeout=120,
                             env={**env, "PYTHONPATH": f"{hidden}{os.pathsep}{ROOT}"})
    assert missing.returncode == 2 and "pip install 'masksep[speech]'" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_only_the_speech_command_loads_espeak(tmp_path):
    probe = ("import sys, masksep.cli, masksep.train, masksep.sweep.runner, masksep.report, masksep.data;"
             "print(sorted(m for m in sys.modules if 'espeak' in m or m == 'masksep.data.speech'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-500:]


def test_items_of_the_corpus_are_torch_float32(corpus):
    out, _ = corpus
    cfg = load_config(None, ["data.kind=librimix", f"data.root={out}", "data.mode=max"])
    mix, src = build_dataset(cfg, "test")[0]
    assert mix.dtype == torch.float32 and src.dtype == torch.float32


def test_no_two_mixtures_of_a_split_share_their_pair_of_utterances(corpus):
    out, _ = corpus
    for split in ("train-100", "dev", "test"):
        rows = read_csv(out / "wav8k" / "min" / "metadata" / f"mixture_{split}_mix_clean.csv")
        ids = [r["mixture_ID"] for r in rows]
        assert len(set(ids)) == len(ids) == {"train-100": 6, "dev": 3, "test": 3}[split]
        assert len(set(p for r in rows for p in (r["mixture_path"], r["source_1_path"]))) == 2 * len(rows)
    # the defaults' 60 talkers x 25 utterances: seed 0 drew a pair twice in 1,500 (issue 34)
    talkers = [(f"t{t}", [f"t{t}-{u}" for u in range(25)]) for t in range(60)]
    pairs = speech._pairs(speech.SpeechSpec(), "train", talkers)
    assert len({frozenset((a[1], b[1])) for a, b in pairs}) == len(pairs) == 1500
    assert all(a[0] != b[0] for a, b in pairs)
    # as many mixtures as there are pairs: each pair once, in both orders of source 1 and 2
    few = [("a", ["a-0", "a-1"]), ("b", ["b-0"]), ("c", ["c-0", "c-1", "c-2"])]
    spec = replace(SMALL, mixtures={"train": 11, "dev": 1, "test": 1})
    pairs = speech._pairs(spec, "train", few)
    assert len({frozenset((a[1], b[1])) for a, b in pairs}) == 11
    assert {a[0] for a, _ in pairs} == {"a", "b", "c"}
    assert all(-2.5 <= g <= 2.5 for pair in pairs for _, _, g in pair)
    assert pairs == speech._pairs(spec, "train", few)  # the same seed, the same draw


def test_a_corpus_of_format_1_is_refused_with_a_line_that_says_so(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "corpus.json").write_text(json.dumps({"spec": {**SMALL.to_dict(), "format": "masksep-speech-corpus-1"}}))
    with pytest.raises(UserError, match="holds a corpus of an older masksep .*remove it"):
        speech.make_corpus(old, SMALL, log=quiet)
    assert [p.name for p in tmp_path.iterdir()] == ["old"] and [p.name for p in old.iterdir()] == ["corpus.json"]
