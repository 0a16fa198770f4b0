"""Files and flags a user or an attacker hands masksep (issue 34, item 5): each is
read, or refused in one line naming the file or the flag (exit 2), with nothing
written half-way. Real wav files, real folders (a read-only one is made with
`chattr +i`, the only thing that stops root), real processes where the bytes of
stdout matter."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from masksep.cli import main
from masksep.data import audio
from masksep.data.export import synth
from masksep.errors import ConfigError
from masksep.evaluation import EVAL_MAX_S
from masksep.sweep import spec as S

sys.path.insert(0, str(Path(__file__).parent))
import tiny  # noqa: E402
from test_train import TINY, write_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RATE = 8000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    tiny.save_checkpoint(path)
    return path


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("masksep: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def masksep(*args: str) -> subprocess.CompletedProcess:
    """The CLI in its own process, stdout and stderr as bytes (a terminal gets the same)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "masksep", *args], capture_output=True, env=env,
                          timeout=600)


def librimix(root: Path, n: int = 3, seconds: float = 0.5) -> tuple[Path, list[list[str]]]:
    """A LibriMix test split written by `masksep data synth`; its CSV and rows."""
    synth(root, "librimix", "test", n, seconds=seconds)
    meta = root / "metadata" / "mixture_test_mix_clean.csv"
    with open(meta, newline="") as f:
        return meta, list(csv.reader(f))


def write_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        csv.writer(f).writerows(rows)


# --------------------------------------------------------------------------- metadata lengths


@pytest.mark.parametrize("length", ["inf", "-inf", "nan", "-5", "1e400", "12.5", "many"])
def test_a_csv_length_that_is_not_a_sample_count_is_one_problem_naming_the_line(
        tmp_path, capsys, ckpt, length):
    meta, rows = librimix(tmp_path / "d")
    rows[2][rows[0].index("length")] = length
    write_csv(meta, rows)
    assert main(["data", "check", str(tmp_path / "d")]) == 3  # the data check found problems
    out = capsys.readouterr().out
    assert f"{meta}: line 3: length {length!r} is not a sample count (a whole number >= 0)" in out
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "d")]) == 3
    assert "line 3: length" in error_line(capsys)


def test_a_whole_float_length_is_a_sample_count(tmp_path, capsys):
    meta, rows = librimix(tmp_path / "d")
    rows[1][rows[0].index("length")] += ".0"  # pandas writes lengths so when a column had a NaN
    write_csv(meta, rows)
    assert main(["data", "check", str(tmp_path / "d")]) == 0


# --------------------------------------------------------------------------- one-sample wavs


def test_one_sample_wavs_are_a_problem_of_the_data_and_separate_without_a_crash(tmp_path, capsys, ckpt):
    meta, rows = librimix(tmp_path / "d")
    header, first = rows[0], rows[1]
    for col, cell in zip(header, first, strict=True):
        if col.endswith("_path"):
            x, rate = sf.read(cell)
            sf.write(cell, x[:1], rate, subtype="PCM_16")
    first[header.index("length")] = "1"
    write_csv(meta, rows)
    mix = first[header.index("mixture_path")]

    assert main(["data", "check", str(tmp_path / "d")]) == 3
    out = capsys.readouterr().out
    assert f"{mix}: has 1 sample: too short to separate and score" in out
    # eval: the item is refused (it would score -80 dB into the mean), or left out
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "d")]) == 3
    assert "has 1 sample" in error_line(capsys)
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "d"), "--set",
                 "data.skip_bad=true", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["items"] == 2 and result["skipped_items"] == 1
    assert all(np.isfinite(f["si_snri"]) for f in result["files"])

    # separate has no reference to score: one sample in, one sample out per source
    assert main(["separate", "--checkpoint", str(ckpt), mix, "--out-dir", str(tmp_path / "o")]) == 0
    for k in (1, 2):
        y, rate = sf.read(str(tmp_path / "o" / f"{Path(mix).stem}_s{k}.wav"))
        assert y.shape == (1,) and rate == RATE and np.isfinite(y).all()


# --------------------------------------------------------------------------- names not UTF-8


def test_file_names_that_are_not_utf8_are_read_written_and_printed_as_their_bytes(tmp_path, ckpt):
    folder = tmp_path / "d"
    meta, rows = librimix(folder)
    header, first = rows[0], rows[1]
    bad_id = os.fsdecode(b"caf\xe9-" + first[0].encode())  # Latin-1, as an old disk holds it
    for i, col in enumerate(header):
        if col.endswith("_path"):
            new = Path(first[i]).with_name(bad_id + ".wav")
            os.rename(first[i], os.fsencode(new))
            first[i] = str(new)
    first[0] = bad_id
    write_csv(meta, rows)  # the CSV holds the name's own bytes
    assert b"caf\xe9-" in meta.read_bytes()

    checked = masksep("data", "check", str(folder))
    assert checked.returncode == 0, checked.stderr.decode(errors="replace")
    table = masksep("eval", "--checkpoint", str(ckpt), "--data", str(folder))
    assert table.returncode == 0, table.stderr.decode(errors="replace")
    assert b"\ncaf\xe9-synthte00000 " in table.stdout  # the row, named as the file is

    # a problem in such a file is printed with its name's bytes
    bad_mix = os.fsencode(first[header.index("mixture_path")])
    x, rate = sf.read(bad_mix)
    sf.write(bad_mix, x[: len(x) // 2], rate, subtype="PCM_16")
    checked = masksep("data", "check", str(folder))
    assert checked.returncode == 3 and b"Traceback" not in checked.stderr
    assert bad_mix + b": has " in checked.stdout

    # separate reads it and writes outputs named by the same bytes
    out = tmp_path / "o"
    assert main(["separate", "--checkpoint", str(ckpt), first[header.index("source_1_path")],
                 "--out-dir", str(out)]) == 0
    assert sorted(os.listdir(os.fsencode(out))) == [b"caf\xe9-synthte00000_s1.wav",
                                                   b"caf\xe9-synthte00000_s2.wav"]


# --------------------------------------------------------------------------- separate's flags


@pytest.mark.parametrize("flags, words", [
    (["--chunk-s", "inf"], "--chunk-s: must be a finite number of seconds >= 0.1, got inf"),
    (["--chunk-s", "nan"], "--chunk-s: must be a finite number of seconds >= 0.1, got nan"),
    (["--chunk-s", "0.01"], "--chunk-s: must be a finite number of seconds >= 0.1, got 0.01"),
    (["--overlap-s", "inf"], "--overlap-s: must be > 0 and at most half of --chunk-s (4), got inf"),
    (["--overlap-s", "nan"], "--overlap-s: must be > 0"),
    (["--threads", "-1"], "--threads: must be between 0 (the CPUs given) and"),
    (["--threads", str(10**6)], "--threads: must be between 0 (the CPUs given) and"),
])
def test_bad_separate_flags_are_one_line_and_write_nothing(tmp_path, capsys, ckpt, flags, words):
    wav = tmp_path / "in.wav"
    sf.write(str(wav), np.zeros(RATE, np.float32), RATE)
    assert main(["separate", "--checkpoint", str(ckpt), str(wav), "--out-dir", str(tmp_path / "o"),
                 *flags]) == 2
    assert words in error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_threads_zero_is_the_cpus_given(tmp_path, capsys, ckpt):
    wav = tmp_path / "in.wav"
    sf.write(str(wav), np.zeros(RATE, np.float32), RATE)
    assert main(["separate", "--checkpoint", str(ckpt), str(wav), "--out-dir", str(tmp_path / "o"),
                 "--threads", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["threads"] == len(os.sched_getaffinity(0))


def test_separate_refuses_to_overwrite_outputs_unless_forced(tmp_path, capsys, ckpt):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    rng = np.random.default_rng(0)
    for path in (a, b):
        sf.write(str(path), rng.normal(0, 0.1, RATE).astype(np.float32), RATE)
    out = tmp_path / "o"
    assert main(["separate", "--checkpoint", str(ckpt), str(b), "--out-dir", str(out)]) == 0
    capsys.readouterr()
    (out / "b_s2.wav").write_bytes(b"mine")  # a file the user keeps there
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # a.wav's outputs are new, b.wav's are not: refused before any is written
    assert main(["separate", "--checkpoint", str(ckpt), str(a), str(b), "--out-dir", str(out)]) == 2
    assert f"{out / 'b_s1.wav'}: already exists; pass --force to overwrite it" in error_line(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["separate", "--checkpoint", str(ckpt), str(a), str(b), "--out-dir", str(out),
                 "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_s1.wav", "a_s2.wav", "b_s1.wav", "b_s2.wav"]
    assert audio.info(out / "b_s2.wav").frames == RATE


# --------------------------------------------------------------------------- past 4 GiB


def test_outputs_past_what_wav_holds_are_rf64(tmp_path):
    most = audio.WAV_MAX_DATA_BYTES
    assert most < 2**32 - 1
    assert audio.wav_format(most // 4, 1, "FLOAT") == "WAV"
    assert audio.wav_format(most // 4 + 1, 1, "FLOAT") == "RF64"
    assert audio.wav_format(most // 8, 2, "FLOAT") == "WAV"
    assert audio.wav_format(most // 8 + 1, 2, "FLOAT") == "RF64"
    assert audio.wav_format(most // 2 + 1, 1, "PCM_16") == "RF64"
    # an hour of stereo float at 48 kHz is 1.4 GB (WAV); 4 hours are 5.5 GB (RF64)
    assert audio.wav_format(3600 * 48000, 2, "FLOAT") == "WAV"
    assert audio.wav_format(4 * 3600 * 48000, 2, "FLOAT") == "RF64"

    # the streaming writer separate uses takes its format from the frames it is told of
    x = np.arange(8, dtype=np.float32)[:, None] / 8
    for frames, fmt in ((8, "WAV"), (most // 4 + 1, "RF64")):
        path = tmp_path / f"{fmt}.wav"
        with audio.atomic_wav_writer(path, RATE, 1, "FLOAT", frames=frames) as f:
            f.write(x)
        assert sf.info(str(path)).format == fmt
        assert np.array_equal(audio.read(path)[0][0], x[:, 0])


# --------------------------------------------------------------------------- eval on long files


def test_eval_refuses_a_file_past_its_length_limit_naming_it(tmp_path, capsys, ckpt):
    folder = tmp_path / "d"
    meta, rows = librimix(folder, n=2)
    header, first = rows[0], rows[1]
    long_s = EVAL_MAX_S + 1
    rng = np.random.default_rng(0)
    sources = [rng.normal(0, 0.1, round(long_s * RATE)).astype(np.float32) for _ in range(2)]
    for col, cell in zip(header, first, strict=True):
        if col.startswith("source_"):
            sf.write(cell, sources[int(col.split("_")[1]) - 1], RATE, subtype="FLOAT")
    sf.write(first[header.index("mixture_path")], sources[0] + sources[1], RATE, subtype="FLOAT")
    first[header.index("length")] = str(round(long_s * RATE))
    write_csv(meta, rows)
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(folder)]) == 2
    line = error_line(capsys)
    assert f"{first[header.index('mixture_path')]}: {long_s:.1f} s is longer than masksep eval " \
           f"takes ({EVAL_MAX_S:g} s" in line and "masksep separate" in line
    # synthetic data: its one length is the limit's field
    assert main(["eval", "--checkpoint", str(ckpt), "--set", f"data.eval_seconds={EVAL_MAX_S + 1}",
                 "--set", "data.test_items=1"]) == 2
    assert "data.eval_seconds:" in error_line(capsys)


# --------------------------------------------------------------------------- read-only folders


@pytest.fixture
def read_only(tmp_path):
    """Makes folders read-only for this process (chattr +i for root, else chmod) and
    writable again after the test, so that pytest can remove them."""
    done = []

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            if shutil.which("chattr") is None:
                pytest.skip("root without chattr: no way to make a folder read-only")
            subprocess.run(["chattr", "+i", str(folder)], check=True)
        else:
            folder.chmod(0o555)
        done.append(folder)
        return folder

    yield make
    for folder in done:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def test_a_read_only_output_folder_is_one_line_before_any_work(tmp_path, capsys, read_only):
    ro = read_only(tmp_path / "ro")
    config = write_config(tmp_path / "tiny.yaml", TINY + ["train.epochs=1"])
    cases = [
        (["train", "--config", str(config), "--out", str(ro)],
         f"{ro}: cannot write in this folder (Operation not permitted)"),
        (["train", "--config", str(config), "--out", str(ro / "run" / "a")],
         f"{ro / 'run' / 'a'}: cannot be made: cannot write in {ro} (Operation not permitted)"),
        (["sweep", str(ROOT / "sweeps" / "quick.yaml"), "--out", str(ro / "sweep"), "--no-wandb"],
         f"{ro / 'sweep'}: cannot be made: cannot write in {ro}"),
        (["data", "speech", str(ro / "corpus")], f"{ro}: cannot write in this folder"),
        (["data", "speech", str(ro)], f"{ro}: cannot write in this folder"),
    ]
    if os.geteuid() != 0:
        cases = [(args, words.replace("Operation not permitted", "Permission denied"))
                 for args, words in cases]
    for args, words in cases:
        assert main(args) == 2, args
        assert words in error_line(capsys), args
    assert list(ro.iterdir()) == []


def test_resuming_a_run_in_a_folder_made_read_only_is_one_line(tmp_path, capsys, read_only):
    config = write_config(tmp_path / "tiny.yaml", TINY + ["train.epochs=1"])
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    read_only(out)
    assert main(["train", "--resume", "--set", "train.epochs=2", "--out", str(out)]) == 2
    assert f"{out}: cannot write in this folder" in error_line(capsys)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------- names of folders


@pytest.mark.parametrize("name", ["..", ".", "...", "a/b", "../up", "a\\b", ""])
def test_a_sweep_name_that_is_not_one_folder_name_is_refused(tmp_path, name):
    data = {"name": name, "search_space": {"train.lr": {"loguniform": [1e-4, 1e-3]}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"name: use letters, digits, '-', '_' or '\.' \(not only dots\)"):
        S.load_spec(path)


def test_a_spec_file_whose_stem_is_dots_needs_a_name(tmp_path):
    data = {"search_space": {"train.lr": {"loguniform": [1e-4, 1e-3]}}}
    path = tmp_path / "...yaml"  # its stem is ".."
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="got '..'"):
        S.load_spec(path)
    data["name"] = "ok.v2"
    path.write_text(yaml.safe_dump(data))
    assert S.load_spec(path).name == "ok.v2"


@pytest.mark.parametrize("variant", ["..", ".", "a/b", "..\\x"])
def test_a_study_variant_that_is_not_one_folder_name_is_refused(tmp_path, variant):
    data = {"name": "s", "base": {"train": {"epochs": 2}},
            "study": {"variants": {"shallow": {"head.kind": "shallow"},
                                   variant: {"head": {"kind": "deep", "depth": 3, "width": 32}}}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError, match=r"study\.variants\..*: use letters, digits"):
        S.load_spec(path)
